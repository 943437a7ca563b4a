//! Hosts and host configuration, resolved as OpenSSH resolves them.
//!
//! - [`Inventory`]: the hosts mcpsh knows — every concrete `Host` alias of the
//!   user's ssh config (includes followed) plus the entries of `hosts.toml`
//!   (`[[host]] name, address, user, port, key, tags`). A name in both is one
//!   host: the fields `hosts.toml` sets win (address = HostName, user, port,
//!   key = the only identity file), the ssh config supplies the rest.
//!   [`Inventory::select`] picks hosts for fan-out by name, glob or `tag:`.
//! - [`resolve`]: one alias to a [`HostConfig`] — through `ssh -G` when an
//!   `ssh` binary exists (the exact answer, `Match` and all), otherwise through
//!   a built-in parser with OpenSSH's semantics (first value wins, `Host`
//!   patterns, `Include`, tokens, defaults; `Match` only for `all`, `host`,
//!   `originalhost`, `user` and `localuser` — a block with any other criterion
//!   does not apply and is logged). ProxyJump chains are resolved hop by hop.
//!
//! What this module must never do: let a name carry ssh options (every name
//! passes [`check_host_name`] and `ssh -G` gets `--` before it), run anything
//! but `ssh -G` (ProxyCommand, LocalCommand, KnownHostsCommand, RemoteCommand
//! are reported in [`HostConfig::ignored`], never run; a host that needs a
//! ProxyCommand is refused), or weaken host-key checking
//! (`StrictHostKeyChecking no`/`accept-new` are recorded and ignored).
//!
//! `ssh -G` runs with `-F <config>`, so `/etc/ssh/ssh_config` is not read,
//! exactly as with `ssh -F`. It does run the config's own `Match exec`
//! commands, as any `ssh` would. Resolution blocks (up to 5 s per hop): call
//! it from a blocking thread.

mod builtin;
mod expand;
mod inventory;
mod lexer;
mod names;
mod resolve;
mod ssh_g;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ssh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use expand::LocalUser;
pub use inventory::{HostOverride, Inventory, InventoryHost, SelectError};
pub use names::check_host_name;

/// Deepest ProxyJump recursion (a hop whose own config has a ProxyJump).
const MAX_JUMP_DEPTH: usize = 8;
/// Most hops in one flattened chain.
const MAX_JUMP_HOPS: usize = 8;

/// Why a host's configuration could not be read or resolved. Messages say
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    HostsToml { path: PathBuf, message: String },
    #[error("host name {name:?} refused: {reason}")]
    BadName { name: String, reason: String },
    #[error("host {alias:?}: {field} {value:?} cannot be used: {reason}")]
    BadValue {
        alias: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "host {alias:?} needs a ProxyCommand, which mcpsh never runs: use ProxyJump \
         (for example `ProxyJump bastion`) in its ssh config instead"
    )]
    ProxyCommand { alias: String },
    #[error(
        "ProxyJump loop: {} — give the jump host `ProxyJump none` in its own Host block",
        chain.join(" → ")
    )]
    JumpLoop { chain: Vec<String> },
    #[error("ProxyJump chain too long ({}): at most {MAX_JUMP_HOPS} hops", chain.join(" → "))]
    JumpTooLong { chain: Vec<String> },
    #[error("ssh -G {alias} failed: {message}")]
    Ssh { alias: String, message: String },
    #[error("cannot tell who the local user is: no passwd entry and no $USER/$HOME")]
    NoLocalUser,
}

/// A host as ssh would connect to it. Every string here was checked: none can
/// carry an ssh option or shell text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The name asked for.
    pub alias: String,
    /// Where to connect (HostName; IPv6 without brackets).
    pub host_name: String,
    pub user: String,
    pub port: u16,
    /// Key files to try, `~`, tokens and `${VAR}` expanded. When the config
    /// names none: `~/.ssh/id_rsa`, `id_ecdsa`, `id_ed25519` (OpenSSH's other
    /// defaults — security keys, XMSS, DSA — are key types mcpsh cannot use).
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// Hops in connection order, flattened: the first hop's own ProxyJump is
    /// already expanded in front of it (a later hop's is not used, as in
    /// OpenSSH), so every hop's `config.proxy_jump` is empty.
    pub proxy_jump: Vec<JumpHost>,
    pub user_known_hosts_files: Vec<PathBuf>,
    pub global_known_hosts_files: Vec<PathBuf>,
    /// `None` when 0 (keepalives off).
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: u32,
    pub connect_timeout: Option<Duration>,
    /// As configured: `yes`, `no`, `ask` or `accept-new`. Recorded only:
    /// mcpsh always refuses unknown and changed keys.
    pub strict_host_key_checking: String,
    pub hostkey_alias: Option<String>,
    /// Settings in the config that mcpsh does not act on, one sentence each.
    pub ignored: Vec<String>,
}

/// One ProxyJump hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// The hop as written in ProxyJump (`alice@bastion:2200`).
    pub spec: String,
    /// The hop resolved through the config like any host; the spec's user
    /// and port win.
    pub config: HostConfig,
}

/// What [`resolve`] needs.
#[derive(Debug, Clone)]
pub struct ResolveCtx {
    /// Passed as `ssh -F`; a missing file is an empty config.
    pub ssh_config: PathBuf,
    pub local: LocalUser,
    /// The `ssh` binary used for `ssh -G`; `None` means the built-in parser.
    pub ssh_program: Option<PathBuf>,
    /// Use the built-in parser even when `ssh` exists (tests compare both).
    pub force_builtin: bool,
    /// `hosts.toml` settings by host name.
    pub overrides: HashMap<String, HostOverride>,
}

impl ResolveCtx {
    /// For the hosts of `inventory`, with `ssh` found on `PATH`.
    pub fn new(inventory: &Inventory) -> ResolveCtx {
        ResolveCtx {
            ssh_config: inventory.ssh_config().to_path_buf(),
            local: inventory.local_user().clone(),
            ssh_program: find_ssh(),
            force_builtin: false,
            overrides: inventory
                .hosts()
                .iter()
                .map(|h| (h.name.clone(), h.overrides.clone()))
                .collect(),
        }
    }
}

/// The first executable `ssh` on `PATH`.
pub fn find_ssh() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("ssh"))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Resolves `alias` (any valid host name; whether an agent may use it is the
/// inventory's business) to the settings ssh would use, ProxyJump hops
/// included. Blocking.
pub fn resolve(alias: &str, ctx: &ResolveCtx) -> Result<HostConfig, ConfigError> {
    check_host_name(alias).map_err(|reason| ConfigError::BadName {
        name: alias.to_owned(),
        reason,
    })?;
    let over = ctx.overrides.get(alias).cloned().unwrap_or_default();
    resolve::Resolver::new(ctx).host(alias, &over, true)
}
