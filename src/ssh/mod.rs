//! SSH: host configuration as OpenSSH resolves it (`config/`) and host-key
//! checking with OpenSSH's known_hosts semantics (`known_hosts/`). The only
//! module that will know russh (the connection pool comes with the SSH issue).

mod agent;
pub mod cmdline;
pub mod config;
mod conn;
pub mod known_hosts;
mod pool;
pub mod sftp;

pub use agent::{AgentProc, RemoteProc, Run};
pub use conn::{ConnectTimings, known_name};
pub use pool::{
    Captured, Channel, Chunk, ConnState, Pool, Scanned, SlotStream, Stdin, TestReport, Vanished,
};

/// Why an SSH operation failed. Messages are written for a model: what
/// failed, why, and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("unknown host {name:?}; known hosts: {}", if known.is_empty() { "none (add Host entries to ~/.ssh/config or hosts.toml)".to_owned() } else { known.join(", ") })]
    Unknown { name: String, known: Vec<String> },
    #[error("ssh configuration: {0}")]
    Config(String),
    #[error("{message}")]
    HostKey { alias: String, message: String },
    #[error("cannot connect to {alias} ({address}): {message}")]
    Connect {
        alias: String,
        address: String,
        message: String,
    },
    #[error("ssh handshake with {alias} failed: {message}")]
    Handshake { alias: String, message: String },
    #[error(
        "cannot log in to {alias} as {user}: {}. Check that the key is in the host's authorized_keys, or set User/IdentityFile for it in the ssh config",
        tried.join("; ")
    )]
    Auth {
        alias: String,
        user: String,
        tried: Vec<String>,
    },
    #[error("{alias}: cannot open a channel: {message}")]
    Channel { alias: String, message: String },
    #[error("{alias}: connection lost: {reason}")]
    Lost { alias: String, reason: String },
}

/// Lock a mutex, carrying on if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Signal numbers and the names SSH exit-signal messages use for them.
const SIGNALS: &[(i32, &str)] = &[
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (4, "ILL"),
    (6, "ABRT"),
    (8, "FPE"),
    (9, "KILL"),
    (10, "USR1"),
    (11, "SEGV"),
    (12, "USR2"),
    (13, "PIPE"),
    (14, "ALRM"),
    (15, "TERM"),
];

/// The number of an SSH signal name (`TERM` or `SIGTERM`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim_start_matches("SIG");
    SIGNALS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// The SSH name of signal `n` (`SIG<n>` for one SSH has no name for).
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(k, _)| *k == n)
        .map_or_else(|| format!("SIG{n}"), |(_, name)| (*name).to_owned())
}
