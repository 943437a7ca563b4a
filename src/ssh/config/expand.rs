//! Expansion as OpenSSH does it in file names: `~`, `%` tokens, `${VAR}`; and
//! its time values (`1m30s`). Also who the local user is. Reads `/etc/passwd`
//! and the environment; runs nothing.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The local account mcpsh resolves for: `%u`, `%d`, `%i`, `~`, the default
/// user, and where relative `Include`s and default key files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    /// `$HOME` when set, else the passwd entry's home. OpenSSH's own `~` in
    /// known-hosts paths is the passwd home; they differ only when `$HOME`
    /// was overridden.
    pub home: PathBuf,
    pub uid: u32,
}

impl LocalUser {
    /// The user running mcpsh, from the passwd entry and the environment.
    pub fn current() -> Result<LocalUser, ConfigError> {
        let uid = rustix::process::getuid().as_raw();
        let entry = passwd_entry(|f| f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = entry
            .as_ref()
            .map(|f| f[0].clone())
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .ok_or(ConfigError::NoLocalUser)?;
        let home = env("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .or_else(|| entry.as_ref().and_then(|f| f.get(5)).map(PathBuf::from))
            .ok_or(ConfigError::NoLocalUser)?;
        Ok(LocalUser { name, home, uid })
    }
}

/// The fields of the first `/etc/passwd` line that `pick` accepts.
fn passwd_entry(pick: impl Fn(&[String]) -> bool) -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && pick(f))
}

/// `~` and `~/x` become the home directory, `~user/x` that user's home.
pub(crate) fn tilde(path: &str, home: &Path) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(path.to_owned());
    };
    let (user, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let base = if user.is_empty() {
        home.to_string_lossy().into_owned()
    } else {
        passwd_entry(|f| f[0] == user)
            .map(|f| f[5].clone())
            .ok_or_else(|| format!("{path:?}: no local user {user:?}"))?
    };
    Ok(format!("{}{tail}", base.trim_end_matches('/')))
}

/// The values `%` tokens stand for in a file name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    /// `%h`: the remote host name (after HostName).
    pub(crate) host: String,
    /// `%n`: the alias as given.
    pub(crate) original: String,
    pub(crate) port: u16,
    /// `%r`
    pub(crate) remote_user: String,
    /// `%k`: HostKeyAlias, or the host name.
    pub(crate) key_alias: String,
    /// `%j`: the last ProxyJump hop's host, or empty.
    pub(crate) jump: String,
    /// `%u`, `%d`, `%i`
    pub(crate) local_user: String,
    pub(crate) home: String,
    pub(crate) uid: u32,
}

/// Expands `%` tokens and `${VAR}` in one pass, as OpenSSH's
/// `percent_dollar_expand` does for IdentityFile and UserKnownHostsFile.
/// An unknown token or an unset variable is an error, as in OpenSSH.
pub(crate) fn expand_file(s: &str, t: &Tokens) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(['%', '$']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("{s:?}: unterminated ${{"))?;
            let name = &body[..end];
            let value = std::env::var(name)
                .map_err(|_| format!("{s:?}: environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else if let Some(after) = tail.strip_prefix('%') {
            let k = after
                .chars()
                .next()
                .ok_or_else(|| format!("{s:?}: '%' at the end"))?;
            match k {
                '%' => out.push('%'),
                'h' => out.push_str(&t.host),
                'n' => out.push_str(&t.original),
                'p' => out.push_str(&t.port.to_string()),
                'r' => out.push_str(&t.remote_user),
                'k' => out.push_str(&t.key_alias),
                'j' => out.push_str(&t.jump),
                'u' => out.push_str(&t.local_user),
                'd' => out.push_str(&t.home),
                'i' => out.push_str(&t.uid.to_string()),
                'l' => out.push_str(&local_host_name()),
                'L' => out.push_str(local_host_name().split('.').next().unwrap_or("")),
                _ => return Err(format!("{s:?}: unknown or unsupported token %{k}")),
            }
            rest = &after[k.len_utf8()..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `~` then tokens, in OpenSSH's order.
pub(crate) fn expand_path(s: &str, t: &Tokens, home: &Path) -> Result<String, String> {
    expand_file(&tilde(s, home)?, t)
}

/// `HostName` may use only `%h` (the alias) and `%%`.
pub(crate) fn expand_host_name(s: &str, alias: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '%') {
            (_, false) => out.push(c),
            (_, true) => match chars.next() {
                Some('%') => out.push('%'),
                Some('h') => out.push_str(alias),
                k => {
                    return Err(format!(
                        "HostName {s:?}: unknown token %{}",
                        k.unwrap_or(' ')
                    ));
                }
            },
        }
    }
    Ok(out)
}

fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// OpenSSH's `convtime`: `90`, `90s`, `1m30s`, `2h`, `1d`, `1w` → seconds.
pub(crate) fn convtime(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = match rest.chars().next().map(|c| c.to_ascii_lowercase()) {
            None => 1,
            Some(u) => {
                rest = &rest[1..];
                match u {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    'w' => 604_800,
                    _ => return None,
                }
            }
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (total <= i32::MAX as u64).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_openssh_convtime() {
        for (input, want) in [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("1m30s", Some(90)),
            ("1M30S", Some(90)),
            ("2h", Some(7200)),
            ("1w1d", Some(691_200)),
            ("", None),
            ("m", None),
            ("10x", None),
            ("-1", None),
            ("99999999999", None),
        ] {
            assert_eq!(convtime(input), want, "{input:?}");
        }
    }

    #[test]
    fn tokens_tilde_and_variables_expand() {
        let t = Tokens {
            host: "web.example".into(),
            original: "web".into(),
            port: 2222,
            remote_user: "deploy".into(),
            key_alias: "web.example".into(),
            jump: String::new(),
            local_user: "me".into(),
            home: "/home/me".into(),
            uid: 1000,
        };
        let home = Path::new("/home/me");
        let check = |s: &str, want: Result<&str, ()>| {
            assert_eq!(
                expand_path(s, &t, home).map_err(|_| ()),
                want.map(str::to_owned),
                "{s:?}"
            );
        };
        check("~/.ssh/id_%h", Ok("/home/me/.ssh/id_web.example"));
        check("~", Ok("/home/me"));
        check(
            "%d/k_%r@%n:%p_%u_%i_%%",
            Ok("/home/me/k_deploy@web:2222_me_1000_%"),
        );
        check("/k/${MCPSH_TEST_UNSET_VAR}", Err(()));
        check("/k/%C", Err(()));
        check("/k/%", Err(()));
        check("~nosuchuser-mcpsh/x", Err(()));
        assert_eq!(
            expand_host_name("%h.internal", "Web").unwrap(),
            "Web.internal"
        );
        assert!(expand_host_name("%r.internal", "web").is_err());
    }
}
