//! The built-in resolver, for when there is no `ssh` binary: OpenSSH's
//! `readconf.c` rules over the directives the lexer read. The first value
//! obtained wins (so specific `Host` blocks go first and `Host *` last);
//! overrides act as command-line options, ahead of the file.
//!
//! Supported `Match` criteria: `all`, `host`, `originalhost`, `user`,
//! `localuser` (with `!`). A block using any other (`exec`, `canonical`,
//! `final`, `localnetwork`, `tagged`, …) does not apply, with a warning.
//! Only the keywords that make a [`HostConfig`](super::HostConfig) are read;
//! others are not validated (ssh itself would reject a misspelt one).

use super::ConfigError;
use super::expand::{LocalUser, convtime, expand_host_name, expand_path};
use super::lexer::{Directive, Item};
use super::names::{match_pattern, match_pattern_list, parse_port};
use super::resolve::{
    DEFAULT_IDENTITIES, Overrides, Raw, Unused, file_list, flag_value, strict_value, tokens,
};

/// OpenSSH's `SSH_MAX_IDENTITY_FILES`.
const MAX_IDENTITY_FILES: usize = 100;

/// Option values obtained so far (`None`: not yet set).
#[derive(Debug, Default)]
struct Options {
    host_name: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<String>,
    identities_only: Option<bool>,
    /// ProxyJump as written, or `none`.
    jump: Option<String>,
    /// ProxyCommand as written, or `none`.
    proxy_command: Option<String>,
    user_known_hosts: Option<Vec<String>>,
    global_known_hosts: Option<Vec<String>>,
    server_alive_interval: Option<u64>,
    server_alive_count_max: Option<u32>,
    connect_timeout: Option<u64>,
    strict: Option<&'static str>,
    hostkey_alias: Option<String>,
    local_command: Option<String>,
    permit_local_command: Option<bool>,
    remote_command: Option<String>,
    known_hosts_command: Option<String>,
    forward_agent: Option<bool>,
    forwards: bool,
}

/// Where the evaluation stands: whether the current block applies, and
/// whether an enclosing inactive block made this included file parse-only.
struct State {
    active: bool,
    never: bool,
}

/// Resolves `alias` over `items`.
pub(super) fn evaluate(
    items: &[Item],
    alias: &str,
    over: &Overrides,
    local: &LocalUser,
) -> Result<Raw, ConfigError> {
    let mut o = Options {
        host_name: over.host_name.clone(),
        user: over.user.clone(),
        port: over.port,
        ..Options::default()
    };
    let mut st = State {
        active: true,
        never: false,
    };
    let mut saved = Vec::new();
    for item in items {
        match item {
            Item::Enter => {
                saved.push((st.active, st.never));
                st.never |= !st.active;
            }
            Item::Leave => {
                if let Some((active, never)) = saved.pop() {
                    st = State { active, never };
                }
            }
            Item::Directive(d) => apply(d, &mut o, &mut st, alias, local)?,
        }
    }
    finish(o, alias, local)
}

/// Sets `slot` from an active directive unless already set.
fn set<T>(slot: &mut Option<T>, on: bool, value: T) {
    if on && slot.is_none() {
        *slot = Some(value);
    }
}

/// Applies one directive. Values are checked even in blocks that do not
/// apply, as ssh checks them.
fn apply(
    d: &Directive,
    o: &mut Options,
    st: &mut State,
    alias: &str,
    local: &LocalUser,
) -> Result<(), ConfigError> {
    let on = st.active;
    match d.keyword.as_str() {
        "host" => {
            st.active = false;
            if d.args.iter().any(String::is_empty) {
                return Err(d.error("Host with an empty pattern"));
            }
            if st.never {
                return Ok(());
            }
            for arg in &d.args {
                let (negated, pattern) = match arg.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, arg.as_str()),
                };
                if match_pattern(alias, pattern) {
                    if negated {
                        st.active = false;
                        break;
                    }
                    st.active = true;
                }
            }
        }
        "match" => {
            let matched = match_line(d, o, alias, local)?;
            st.active = !st.never && matched;
        }
        "hostname" => set(&mut o.host_name, on, one(d)?.to_owned()),
        "user" => set(&mut o.user, on, one(d)?.to_owned()),
        "hostkeyalias" => set(&mut o.hostkey_alias, on, one(d)?.to_owned()),
        "port" => set(
            &mut o.port,
            on,
            parse_port(one(d)?).map_err(|e| d.error(e))?,
        ),
        "identityfile" => {
            let file = one(d)?;
            if on {
                if o.identity_files.len() >= MAX_IDENTITY_FILES {
                    return Err(d.error("too many identity files (max 100)"));
                }
                o.identity_files.push(file.to_owned());
            }
        }
        "identitiesonly" => set(&mut o.identities_only, on, flag(d)?),
        "permitlocalcommand" => set(&mut o.permit_local_command, on, flag(d)?),
        // Anything but yes/no is an agent socket path: forwarding on.
        "forwardagent" => set(
            &mut o.forward_agent,
            on,
            flag_value(one(d)?).unwrap_or(true),
        ),
        // Hops are parsed and checked when the host is resolved.
        "proxyjump" => {
            let value = d.raw.split('#').next().unwrap_or("").trim_end();
            if on && o.jump.is_none() && o.proxy_command.is_none() {
                o.jump = Some(value.to_owned());
                if !value.eq_ignore_ascii_case("none") {
                    o.proxy_command = Some("none".into());
                }
            }
        }
        "proxycommand" if on && o.jump.is_none() && o.proxy_command.is_none() => {
            o.proxy_command = Some(d.raw.clone());
        }
        "localcommand" => set(&mut o.local_command, on, d.raw.clone()),
        "remotecommand" => set(&mut o.remote_command, on, d.raw.clone()),
        "knownhostscommand" => set(&mut o.known_hosts_command, on, d.raw.clone()),
        "localforward" | "remoteforward" | "dynamicforward" => o.forwards |= on,
        "userknownhostsfile" => set(&mut o.user_known_hosts, on, files(d)?),
        "globalknownhostsfile" => set(&mut o.global_known_hosts, on, files(d)?),
        // `none` leaves a time unset, as in OpenSSH (a later value still counts).
        "serveraliveinterval" => {
            if let Some(t) = time(d)? {
                set(&mut o.server_alive_interval, on, t);
            }
        }
        "connecttimeout" => {
            if let Some(t) = time(d)? {
                set(&mut o.connect_timeout, on, t);
            }
        }
        "serveralivecountmax" => {
            let v = one(d)?;
            let n = v
                .parse::<u32>()
                .map_err(|_| d.error(format!("{v:?} is not a count")))?;
            set(&mut o.server_alive_count_max, on, n);
        }
        "stricthostkeychecking" => {
            let v = one(d)?;
            let s = strict_value(v)
                .ok_or_else(|| d.error(format!("unsupported StrictHostKeyChecking {v:?}")))?;
            set(&mut o.strict, on, s);
        }
        _ => {}
    }
    Ok(())
}

/// The single argument of a one-value keyword.
fn one(d: &Directive) -> Result<&str, ConfigError> {
    match d.args.as_slice() {
        [a] if !a.is_empty() => Ok(a),
        [] | [_] => Err(d.error(format!("{}: missing argument", d.keyword))),
        _ => Err(d.error(format!(
            "keyword {} extra arguments at end of line",
            d.keyword
        ))),
    }
}

fn flag(d: &Directive) -> Result<bool, ConfigError> {
    let v = one(d)?;
    flag_value(v).ok_or_else(|| d.error(format!("unsupported option {v:?} (yes or no)")))
}

/// A time in seconds; `None` for `none`.
fn time(d: &Directive) -> Result<Option<u64>, ConfigError> {
    let v = one(d)?;
    if v == "none" {
        return Ok(None);
    }
    convtime(v)
        .map(Some)
        .ok_or_else(|| d.error(format!("invalid time value {v:?}")))
}

/// A known-hosts file list; `none` must be alone.
fn files(d: &Directive) -> Result<Vec<String>, ConfigError> {
    if d.args.iter().any(String::is_empty) {
        return Err(d.error(format!("keyword {} empty argument", d.keyword)));
    }
    if d.args.len() > 1 && d.args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
        return Err(d.error(format!(
            "keyword {} \"none\" argument must appear alone",
            d.keyword
        )));
    }
    Ok(file_list(&d.args))
}

/// Evaluates a `Match` line. Unsupported criteria make it false.
fn match_line(
    d: &Directive,
    o: &Options,
    alias: &str,
    local: &LocalUser,
) -> Result<bool, ConfigError> {
    let mut result = true;
    let mut attributes = 0;
    let mut unsupported: Option<&str> = None;
    let mut args = d.args.iter();
    while let Some(given) = args.next() {
        let (negate, attr) = match given.strip_prefix('!') {
            Some(a) => (true, a),
            None => (false, given.as_str()),
        };
        let attr_lc = attr.to_ascii_lowercase();
        if attr_lc == "all" {
            // `Match canonical all` and `Match final all` are allowed.
            if attributes > 1 || args.next().is_some() {
                return Err(d.error("'all' cannot be combined with other Match attributes"));
            }
            return Ok(unsupported.is_none() && result && !negate);
        }
        attributes += 1;
        if attr_lc == "canonical" || attr_lc == "final" {
            unsupported = Some(attr);
            continue;
        }
        let Some(arg) = args.next() else {
            return Err(d.error(format!("missing Match criteria for {attr}")));
        };
        let hit = match attr_lc.as_str() {
            "host" => {
                let host = match &o.host_name {
                    Some(h) => expand_host_name(h, alias).map_err(|e| d.error(e))?,
                    None => alias.to_owned(),
                };
                match_pattern_list(&host, arg, true)
            }
            "originalhost" => match_pattern_list(alias, arg, true),
            "user" => match_pattern_list(o.user.as_deref().unwrap_or(&local.name), arg, false),
            "localuser" => match_pattern_list(&local.name, arg, false),
            _ => {
                unsupported = Some(attr);
                continue;
            }
        };
        if hit == negate {
            result = false;
        }
    }
    if attributes == 0 {
        return Err(d.error("one or more attributes required for Match"));
    }
    if let Some(attr) = unsupported {
        tracing::warn!(
            file = %d.file.display(),
            line = d.line,
            "Match {attr} is not supported by mcpsh's built-in ssh config parser; \
             the block is skipped (install the ssh client for exact results)"
        );
        return Ok(false);
    }
    Ok(result)
}

/// Fills in defaults and expands what ssh -G would print expanded.
fn finish(o: Options, alias: &str, local: &LocalUser) -> Result<Raw, ConfigError> {
    let bad = |field: &'static str, value: &str, reason: String| ConfigError::BadValue {
        alias: alias.to_owned(),
        field,
        value: value.to_owned(),
        reason,
    };
    let host_name = match &o.host_name {
        Some(h) => expand_host_name(h, alias).map_err(|r| bad("HostName", h, r))?,
        None => alias.to_owned(),
    }
    .to_ascii_lowercase();
    let identity_files = if o.identity_files.is_empty() {
        DEFAULT_IDENTITIES.iter().map(|s| s.to_string()).collect()
    } else {
        o.identity_files
    };
    let jump = o.jump.filter(|j| !j.eq_ignore_ascii_case("none"));
    let mut raw = Raw {
        host_name,
        user: o.user.unwrap_or_else(|| local.name.clone()),
        port: o.port.unwrap_or(22),
        identity_files,
        identities_only: o.identities_only.unwrap_or(false),
        proxy_jump: jump,
        proxy_command: o.proxy_command.is_some_and(|c| c != "none"),
        user_known_hosts_files: Vec::new(),
        global_known_hosts_files: o.global_known_hosts.unwrap_or_else(|| {
            vec![
                "/etc/ssh/ssh_known_hosts".into(),
                "/etc/ssh/ssh_known_hosts2".into(),
            ]
        }),
        server_alive_interval: o.server_alive_interval.unwrap_or(0),
        server_alive_count_max: o.server_alive_count_max.unwrap_or(3),
        connect_timeout: o.connect_timeout,
        strict_host_key_checking: o.strict.unwrap_or("ask").to_owned(),
        hostkey_alias: o.hostkey_alias,
        unused: Unused {
            local_command: o.local_command.is_some_and(|c| c != "none"),
            permit_local_command: o.permit_local_command == Some(true),
            remote_command: o.remote_command.is_some_and(|c| c != "none"),
            known_hosts_command: o.known_hosts_command.is_some_and(|c| c != "none"),
            forward_agent: o.forward_agent == Some(true),
            forwards: o.forwards,
        },
    };
    let known = o
        .user_known_hosts
        .unwrap_or_else(|| vec!["~/.ssh/known_hosts".into(), "~/.ssh/known_hosts2".into()]);
    let t = tokens(alias, &raw, local);
    raw.user_known_hosts_files = known
        .iter()
        .map(|f| expand_path(f, &t, &local.home).map_err(|r| bad("UserKnownHostsFile", f, r)))
        .collect::<Result<_, _>>()?;
    Ok(raw)
}
