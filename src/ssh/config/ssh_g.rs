//! `ssh -G`: OpenSSH's own answer for a host. Runs `ssh -G -F CONFIG [-l
//! USER] [-p PORT] [-o HostName=ADDR] -- ALIAS` as argv (no shell), every
//! value checked before (names by `check_host_name`, the address by
//! `check_address`), in its own process group, killed after 5 s. Nothing but
//! `ssh -G` is ever spawned here.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::ConfigError;
use super::expand::LocalUser;
use super::resolve::{DEFAULT_IDENTITIES, Overrides, Raw, file_list, flag_value, strict_value};

/// How long `ssh -G` may take (it may canonicalize names or run `Match exec`).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most stderr text quoted in an error.
const MAX_ERROR_CHARS: usize = 600;

/// Runs `ssh -G` for `alias` and parses what it prints.
pub(super) fn run(
    ssh: &Path,
    config: &Path,
    alias: &str,
    over: &Overrides,
    local: &LocalUser,
) -> Result<Raw, ConfigError> {
    let fail = |message: String| ConfigError::Ssh {
        alias: alias.to_owned(),
        message,
    };
    let config = if config.exists() {
        config
    } else {
        Path::new("/dev/null")
    };
    let mut cmd = Command::new(ssh);
    cmd.arg("-G").arg("-F").arg(config);
    if let Some(user) = &over.user {
        cmd.arg("-l").arg(user);
    }
    if let Some(port) = over.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(addr) = &over.host_name {
        cmd.arg("-o").arg(format!("HostName={addr}"));
    }
    cmd.arg("--").arg(alias);
    cmd.env("HOME", &local.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", ssh.display())))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.map_err(|e| fail(e.to_string()))?,
        Err(_) => {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            // The waiter reaps it; a descendant that left the group could
            // keep the pipes open, so do not wait long for that.
            let _ = rx.recv_timeout(Duration::from_secs(1));
            return Err(fail(format!("no answer within {} s", TIMEOUT.as_secs())));
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let message: String = lines.join("; ").chars().take(MAX_ERROR_CHARS).collect();
        return Err(fail(format!("{} ({})", message, output.status)));
    }
    parse(&String::from_utf8_lossy(&output.stdout)).map_err(fail)
}

/// Parses `ssh -G` output: one `keyword value` a line, keywords lower-case.
pub(super) fn parse(text: &str) -> Result<Raw, String> {
    let mut raw = Raw {
        server_alive_count_max: 3,
        strict_host_key_checking: "ask".into(),
        ..Raw::default()
    };
    let (mut host, mut user, mut port) = (None, None, None);
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let u = &mut raw.unused;
        match key {
            "hostname" => host = Some(value.to_owned()),
            "user" => user = Some(value.to_owned()),
            "port" => port = value.parse::<u16>().ok(),
            "identityfile" => raw.identity_files.push(value.to_owned()),
            "identitiesonly" => raw.identities_only = flag_value(value).unwrap_or(false),
            "proxyjump" if !value.eq_ignore_ascii_case("none") => {
                raw.proxy_jump = Some(value.to_owned());
            }
            "proxycommand" => raw.proxy_command = value != "none",
            "userknownhostsfile" => raw.user_known_hosts_files = files(value),
            "globalknownhostsfile" => raw.global_known_hosts_files = files(value),
            "serveraliveinterval" => raw.server_alive_interval = value.parse().unwrap_or(0),
            "serveralivecountmax" => raw.server_alive_count_max = value.parse().unwrap_or(3),
            "connecttimeout" => raw.connect_timeout = value.parse().ok(),
            "stricthostkeychecking" => {
                raw.strict_host_key_checking = strict_value(value).unwrap_or("ask").to_owned();
            }
            "hostkeyalias" => raw.hostkey_alias = Some(value.to_owned()),
            "localcommand" => u.local_command = value != "none",
            "permitlocalcommand" => u.permit_local_command = flag_value(value) == Some(true),
            "remotecommand" => u.remote_command = value != "none",
            "knownhostscommand" => u.known_hosts_command = value != "none",
            "forwardagent" => u.forward_agent = flag_value(value) != Some(false),
            "localforward" | "remoteforward" | "dynamicforward" => u.forwards = true,
            _ => {}
        }
    }
    let (Some(host), Some(user), Some(port)) = (host, user, port) else {
        return Err("unexpected output: no hostname, user or port line".into());
    };
    (raw.host_name, raw.user, raw.port) = (host, user, port);
    if is_openssh_default(&raw.identity_files) {
        raw.identity_files = DEFAULT_IDENTITIES.iter().map(|s| s.to_string()).collect();
    }
    Ok(raw)
}

/// ssh -G prints file lists space-separated (a path with a space cannot be
/// told apart).
fn files(value: &str) -> Vec<String> {
    file_list(
        &value
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    )
}

/// Whether `files` is OpenSSH's own default list (it varies by version: it
/// adds security-key, XMSS and DSA files mcpsh cannot use), which the
/// built-in parser's three defaults stand for.
fn is_openssh_default(files: &[String]) -> bool {
    const KNOWN: [&str; 7] = [
        "id_rsa",
        "id_ecdsa",
        "id_ecdsa_sk",
        "id_ed25519",
        "id_ed25519_sk",
        "id_xmss",
        "id_dsa",
    ];
    let names: Vec<&str> = files
        .iter()
        .filter_map(|f| f.strip_prefix("~/.ssh/"))
        .collect();
    names.len() == files.len()
        && names.iter().all(|n| KNOWN.contains(n))
        && DEFAULT_IDENTITIES
            .iter()
            .all(|d| files.iter().any(|f| f == d))
}
