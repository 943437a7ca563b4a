//! Names on their way to ssh: host names, user names, ProxyJump hops, and
//! OpenSSH's wildcard patterns. Every name an agent or a file gives passes
//! [`check_host_name`] before it can reach `ssh -G` or a socket; nothing here
//! spawns or reads anything.

use std::net::{IpAddr, Ipv6Addr};

/// Longest host name accepted (the DNS limit).
const MAX_HOST_NAME: usize = 253;
/// Longest user name accepted.
const MAX_USER_NAME: usize = 128;

/// Whether `name` may be used as a host name or alias: ASCII letters, digits,
/// `.`, `-` and `_`, or an IPv6 literal in brackets (`[2001:db8::1]`). The
/// message says why a name is refused and is written for a model to act on.
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a host name cannot be empty".into());
    }
    if name.len() > MAX_HOST_NAME {
        return Err(format!(
            "host names are at most {MAX_HOST_NAME} characters (this one has {})",
            name.len()
        ));
    }
    if name.starts_with('-') {
        return Err("host names cannot start with '-': that would be read as an ssh option".into());
    }
    if let Some(inner) = name.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!(
                "{name:?} is not a host name: brackets are only for an IPv6 address, \
                 like [2001:db8::1]"
            )),
        };
    }
    for c in name.chars() {
        let why = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => continue,
            c if c.is_whitespace() => "host names cannot contain whitespace".to_owned(),
            c if c.is_control() => "host names cannot contain control characters".to_owned(),
            '@' => "'@' is not allowed in a host name: give the user separately \
                    (user@host is not a host name)"
                .to_owned(),
            ':' => "':' is only allowed inside [...] for an IPv6 address; \
                    give a port separately"
                .to_owned(),
            c if !c.is_ascii() => format!(
                "host names must be ASCII ({c:?} is not): use the punycode form of an \
                 international name"
            ),
            c => format!(
                "host names cannot contain {c:?} (special to shells or ssh): use only \
                 letters, digits, '.', '-' and '_'"
            ),
        };
        return Err(why);
    }
    if name.starts_with('.') || name.contains("..") {
        return Err("host names cannot start with '.' or contain '..'".into());
    }
    Ok(())
}

/// Whether `user` may be sent as a remote user name: ASCII letters, digits,
/// `.`, `-`, `_` and `@` (for `user@domain` accounts), not starting with `-`.
pub(crate) fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if user.len() > MAX_USER_NAME {
        return Err(format!("user names are at most {MAX_USER_NAME} characters"));
    }
    if user.starts_with('-') {
        return Err("user names cannot start with '-': that would be read as an ssh option".into());
    }
    match user
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')))
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "user names cannot contain {c:?}: use only letters, digits, '.', '-', '_' and '@'"
        )),
    }
}

/// A resolved address: a host name or an IP literal, IPv6 with or without
/// brackets. Returns the form to connect to (IPv6 without brackets).
pub(crate) fn check_address(addr: &str) -> Result<&str, String> {
    if addr.parse::<IpAddr>().is_ok() {
        return Ok(addr);
    }
    check_host_name(addr)?;
    Ok(unbracket(addr))
}

/// `[::1]` → `::1`; anything else unchanged. ssh takes IPv6 aliases bare.
pub(crate) fn unbracket(name: &str) -> &str {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

/// One hop of a ProxyJump list: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JumpSpec {
    /// The hop as written.
    pub(crate) text: String,
    pub(crate) user: Option<String>,
    /// Checked with [`check_host_name`]; IPv6 literals keep their brackets.
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

/// Parses a ProxyJump value (comment and trailing blanks removed as OpenSSH
/// does). `none` gives no hops. Every hop's host and user are checked.
pub(crate) fn parse_jumps(value: &str) -> Result<Vec<JumpSpec>, String> {
    let value = value.split('#').next().unwrap_or("").trim_end();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value.split(',').map(parse_hop).collect()
}

fn parse_hop(text: &str) -> Result<JumpSpec, String> {
    let bad = |why: String| format!("ProxyJump hop {text:?}: {why}");
    let authority = match text.strip_prefix("ssh://") {
        Some(rest) => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err(bad("an ssh:// URI cannot have a path".into()));
            }
            rest
        }
        None => text,
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((u, hp)) => {
            check_user_name(u).map_err(bad)?;
            (Some(u.to_owned()), hp)
        }
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(end) => (&host_port[..=end], host_port[end + 1..].strip_prefix(':')),
            None => (host_port, None),
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host_rest_ok = host_port.len() == host.len() || port.is_some();
    if !host_rest_ok {
        return Err(bad("expected [user@]host[:port]".into()));
    }
    check_host_name(host).map_err(bad)?;
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).map_err(bad)?),
    };
    Ok(JumpSpec {
        text: text.to_owned(),
        user,
        host: host.to_owned(),
        port,
    })
}

/// A TCP port, 1–65535.
pub(crate) fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port number (1-65535)")),
    }
}

/// OpenSSH's `match_pattern`: `*` matches any run, `?` one byte; nothing else
/// is special. Case-sensitive, as `Host` lines are.
pub(crate) fn match_pattern(s: &str, pattern: &str) -> bool {
    crate::wildcard::matches(s.as_bytes(), pattern.as_bytes())
}

/// OpenSSH's `match_pattern_list`: a comma-separated list where `!pattern`
/// excludes. True when some plain pattern matches and no negated one does.
/// `fold` compares case-insensitively (host names in `Match`).
pub(crate) fn match_pattern_list(s: &str, list: &str, fold: bool) -> bool {
    let s = if fold {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    };
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        let pattern = if fold {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_owned()
        };
        if match_pattern(&s, &pattern) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// True when `name` holds a wildcard or negation, so it names no one host.
pub(crate) fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '!'])
}
