//! The job engine: every `bash` call is a job with a short id, a SQLite row and
//! an on-disk spool. Local jobs run under a supervisor process (forked by the
//! zygote) that outlives the server; the server watches them through their
//! control sockets and re-adopts them after a restart.
//!
//! This module never speaks MCP or HTTP; it offers typed operations
//! ([`Jobs::start`], [`Jobs::wait`], [`Jobs::kill`], ...) that `mcp/` and `cli/` call.

mod conn;
mod direct;
mod engine;
pub mod id;
mod jobdir;
pub mod keys;
pub mod output;
pub mod procs;
pub mod proto;
mod remote;
pub mod render;
mod spawn;
pub mod spool;
pub mod supervisor;
pub mod zygote;

pub use engine::{Jobs, Progress, StartRequest};
pub use jobdir::{control_request, read_status, reconcile_row};
pub(crate) use remote::kill_tree as kill_remote_tree;
pub(crate) use spawn::open_pty;

/// Errors the job engine reports. Messages are written for a model to act on.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job with id {0:?}; list jobs with job action=list")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "too many jobs running ({running} of {max}); wait for one to finish, or kill one with job action=kill"
    )]
    TooMany { running: usize, max: usize },
    #[error("could not start the job: {0}")]
    Spawn(String),
    #[error("job {0} is not running")]
    NotRunning(String),
    #[error("job control: {0}")]
    Control(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("job files: {0}")]
    Io(#[from] std::io::Error),
}

pub use crate::store::now_ms;

/// Lock a mutex, carrying on if a panicking thread poisoned it: every value
/// guarded in this module stays consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
