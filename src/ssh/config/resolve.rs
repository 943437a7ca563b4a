//! Resolution shared by both backends: the ProxyJump chain (recursion,
//! loop and depth limits), then checking and expanding what `ssh -G` or the
//! built-in parser reported into a [`HostConfig`].

use std::path::PathBuf;
use std::time::Duration;

use super::expand::{LocalUser, Tokens, expand_path};
use super::names::{check_address, check_user_name, parse_jumps, unbracket};
use super::{
    ConfigError, HostConfig, HostOverride, JumpHost, MAX_JUMP_DEPTH, MAX_JUMP_HOPS, ResolveCtx,
    builtin, lexer, ssh_g,
};

/// The settings of one host as either backend reports them, before checks.
/// `identity_files` are still raw (`~`, tokens); known-hosts files are
/// expanded (ssh -G prints them so).
#[derive(Debug, Clone, Default)]
pub(super) struct Raw {
    pub(super) host_name: String,
    pub(super) user: String,
    pub(super) port: u16,
    pub(super) identity_files: Vec<String>,
    pub(super) identities_only: bool,
    pub(super) proxy_jump: Option<String>,
    pub(super) proxy_command: bool,
    pub(super) user_known_hosts_files: Vec<String>,
    pub(super) global_known_hosts_files: Vec<String>,
    pub(super) server_alive_interval: u64,
    pub(super) server_alive_count_max: u32,
    pub(super) connect_timeout: Option<u64>,
    pub(super) strict_host_key_checking: String,
    pub(super) hostkey_alias: Option<String>,
    pub(super) unused: Unused,
}

/// Settings mcpsh never acts on, noted when present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Unused {
    pub(super) local_command: bool,
    pub(super) permit_local_command: bool,
    pub(super) remote_command: bool,
    pub(super) known_hosts_command: bool,
    pub(super) forward_agent: bool,
    pub(super) forwards: bool,
}

/// `hosts.toml` settings and a hop's `user@…:port`, applied as ssh applies
/// command-line options: before the config, so they win.
#[derive(Debug, Clone, Default)]
pub(super) struct Overrides {
    pub(super) host_name: Option<String>,
    pub(super) user: Option<String>,
    pub(super) port: Option<u16>,
}

/// The default identity files, as OpenSSH writes them.
pub(super) const DEFAULT_IDENTITIES: [&str; 3] =
    ["~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519"];

pub(super) struct Resolver<'a> {
    ctx: &'a ResolveCtx,
    /// The built-in parser's directives, read once per resolution.
    items: Option<Vec<lexer::Item>>,
    /// Aliases being resolved, outermost first (loop detection).
    stack: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(ctx: &'a ResolveCtx) -> Resolver<'a> {
        Resolver {
            ctx,
            items: None,
            stack: Vec::new(),
        }
    }

    pub(super) fn host(
        &mut self,
        alias: &str,
        over: &HostOverride,
        follow_jumps: bool,
    ) -> Result<HostConfig, ConfigError> {
        if self.stack.iter().any(|a| a == alias) {
            let mut chain = self.stack.clone();
            chain.push(alias.to_owned());
            return Err(ConfigError::JumpLoop { chain });
        }
        if self.stack.len() >= MAX_JUMP_DEPTH {
            let mut chain = self.stack.clone();
            chain.push(alias.to_owned());
            return Err(ConfigError::JumpTooLong { chain });
        }
        let raw = self.backend(alias, over)?;
        let mut cfg = finish(alias, &raw, over, &self.ctx.local)?;
        if !follow_jumps {
            return Ok(cfg);
        }
        let Some(jump) = &raw.proxy_jump else {
            if raw.proxy_command {
                return Err(ConfigError::ProxyCommand {
                    alias: alias.to_owned(),
                });
            }
            return Ok(cfg);
        };
        let hops = parse_jumps(jump).map_err(|reason| ConfigError::BadValue {
            alias: alias.to_owned(),
            field: "ProxyJump",
            value: jump.clone(),
            reason,
        })?;
        self.stack.push(alias.to_owned());
        for (i, hop) in hops.iter().enumerate() {
            let mut hop_over = self
                .ctx
                .overrides
                .get(&hop.host)
                .cloned()
                .unwrap_or_default();
            hop_over.user = hop.user.clone().or(hop_over.user);
            hop_over.port = hop.port.or(hop_over.port);
            let mut hop_cfg = self.host(&hop.host, &hop_over, i == 0)?;
            cfg.proxy_jump.append(&mut hop_cfg.proxy_jump);
            cfg.proxy_jump.push(JumpHost {
                spec: hop.text.clone(),
                config: hop_cfg,
            });
        }
        self.stack.pop();
        if cfg.proxy_jump.len() > MAX_JUMP_HOPS {
            let mut chain: Vec<String> = cfg.proxy_jump.iter().map(|h| h.spec.clone()).collect();
            chain.push(alias.to_owned());
            return Err(ConfigError::JumpTooLong { chain });
        }
        Ok(cfg)
    }

    /// `ssh -G`, or the built-in parser.
    fn backend(&mut self, alias: &str, over: &HostOverride) -> Result<Raw, ConfigError> {
        let o = Overrides {
            host_name: over.address.clone(),
            user: over.user.clone(),
            port: over.port,
        };
        let ctx = self.ctx;
        match &ctx.ssh_program {
            Some(ssh) if !ctx.force_builtin => {
                ssh_g::run(ssh, &ctx.ssh_config, unbracket(alias), &o, &ctx.local)
            }
            _ => {
                let items = match &mut self.items {
                    Some(items) => items,
                    slot => slot.insert(lexer::read(&ctx.ssh_config, &ctx.local.home)?),
                };
                builtin::evaluate(items, unbracket(alias), &o, &ctx.local)
            }
        }
    }
}

/// Checks and expands what a backend reported.
fn finish(
    alias: &str,
    raw: &Raw,
    over: &HostOverride,
    local: &LocalUser,
) -> Result<HostConfig, ConfigError> {
    let bad = |field: &'static str, value: &str, reason: String| ConfigError::BadValue {
        alias: alias.to_owned(),
        field,
        value: value.to_owned(),
        reason,
    };
    let host_name = check_address(&raw.host_name)
        .map_err(|r| bad("HostName", &raw.host_name, r))?
        .to_owned();
    check_user_name(&raw.user).map_err(|r| bad("User", &raw.user, r))?;
    if let Some(a) = &raw.hostkey_alias
        && a.contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "HostKeyAlias",
            a,
            "blanks and control characters are not allowed".into(),
        ));
    }
    let tokens = tokens(unbracket(alias), raw, local);
    let keys = match &over.key {
        Some(key) => std::slice::from_ref(key),
        None => &raw.identity_files[..],
    };
    let identity_files = keys
        .iter()
        .map(|k| {
            expand_path(k, &tokens, &local.home)
                .map(PathBuf::from)
                .map_err(|r| bad("IdentityFile", k, r))
        })
        .collect::<Result<_, _>>()?;
    Ok(HostConfig {
        alias: alias.to_owned(),
        host_name,
        user: raw.user.clone(),
        port: raw.port,
        identity_files,
        identities_only: raw.identities_only,
        proxy_jump: Vec::new(),
        user_known_hosts_files: raw
            .user_known_hosts_files
            .iter()
            .map(PathBuf::from)
            .collect(),
        global_known_hosts_files: raw
            .global_known_hosts_files
            .iter()
            .map(PathBuf::from)
            .collect(),
        server_alive_interval: (raw.server_alive_interval > 0)
            .then(|| Duration::from_secs(raw.server_alive_interval)),
        server_alive_count_max: raw.server_alive_count_max,
        connect_timeout: raw
            .connect_timeout
            .filter(|&t| t > 0)
            .map(Duration::from_secs),
        strict_host_key_checking: raw.strict_host_key_checking.clone(),
        hostkey_alias: raw.hostkey_alias.clone(),
        ignored: ignored_notes(raw),
    })
}

/// `%` token values for a host's file names.
pub(super) fn tokens(alias: &str, raw: &Raw, local: &LocalUser) -> Tokens {
    let jump = raw
        .proxy_jump
        .as_deref()
        .and_then(|j| parse_jumps(j).ok())
        .and_then(|hops| hops.last().map(|h| unbracket(&h.host).to_owned()))
        .unwrap_or_default();
    Tokens {
        host: raw.host_name.clone(),
        original: alias.to_owned(),
        port: raw.port,
        remote_user: raw.user.clone(),
        key_alias: raw
            .hostkey_alias
            .clone()
            .unwrap_or_else(|| raw.host_name.clone()),
        jump,
        local_user: local.name.clone(),
        home: local.home.to_string_lossy().into_owned(),
        uid: local.uid,
    }
}

/// One sentence per setting mcpsh does not act on.
fn ignored_notes(raw: &Raw) -> Vec<String> {
    let u = &raw.unused;
    let mut notes: Vec<String> = [
        (
            u.local_command,
            "LocalCommand is ignored: mcpsh never runs local commands",
        ),
        (
            u.permit_local_command,
            "PermitLocalCommand is ignored: mcpsh never runs local commands",
        ),
        (
            u.remote_command,
            "RemoteCommand is ignored: mcpsh runs the commands it is asked to",
        ),
        (
            u.known_hosts_command,
            "KnownHostsCommand is ignored: mcpsh reads known_hosts files only",
        ),
        (
            u.forward_agent,
            "ForwardAgent is ignored: mcpsh never forwards the agent",
        ),
        (
            u.forwards,
            "LocalForward/RemoteForward/DynamicForward are ignored: use the forward tool",
        ),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, note)| note.to_owned())
    .collect();
    if matches!(raw.strict_host_key_checking.as_str(), "no" | "accept-new") {
        notes.push(format!(
            "StrictHostKeyChecking {} is ignored: mcpsh always refuses unknown and changed \
             host keys (`mcpsh hosts trust NAME` adds one)",
            raw.strict_host_key_checking
        ));
    }
    notes
}

/// OpenSSH's spellings of StrictHostKeyChecking, normalized.
pub(super) fn strict_value(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => "yes",
        "no" | "false" | "off" => "no",
        "ask" => "ask",
        "accept-new" => "accept-new",
        _ => return None,
    })
}

/// `yes`/`true`/`no`/`false`, case-insensitive.
pub(super) fn flag_value(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// A file list where a lone `none` means no file.
pub(super) fn file_list(args: &[String]) -> Vec<String> {
    match args {
        [one] if one.eq_ignore_ascii_case("none") => Vec::new(),
        _ => args.to_vec(),
    }
}
