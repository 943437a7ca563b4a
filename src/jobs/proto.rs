//! Wire types shared by the server, the zygote and the supervisor: the job
//! spec, the control-socket requests and events, and the exit-status file.
//! All are JSON, one object per line. Pure data; no I/O here.

use serde::{Deserialize, Serialize};

/// How the job's stdin is wired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "mode", content = "text")]
pub enum StdinMode {
    /// `/dev/null`: a prompt reads EOF and fails fast instead of hanging.
    Null,
    /// This text, then EOF.
    Text(String),
    /// Kept open for `job write`.
    Interactive,
}

/// Everything a supervisor needs to run one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    /// The job's directory (spool, control socket, status).
    pub dir: std::path::PathBuf,
    pub cmd: String,
    pub shell: String,
    pub cwd: std::path::PathBuf,
    /// Variables set on top of the supervisor's environment.
    pub env: Vec<(String, String)>,
    pub stdin: StdinMode,
    /// Run under a pseudo-terminal of this size (cols, rows).
    pub tty: Option<(u16, u16)>,
    pub timeout_ms: Option<u64>,
    pub timeout_grace_ms: u64,
    pub segment_size: u64,
    pub output_cap: u64,
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// Stream `Event`s until the job ends.
    Watch,
    /// Bytes for the job's stdin (base64); `eof` closes stdin afterwards.
    Write { data: String, eof: bool },
    /// Send a signal to the job's process group.
    Signal { signal: i32 },
    /// Kill the whole process tree: TERM, then KILL after `grace_ms`.
    Kill { grace_ms: u64 },
    /// Resize the pseudo-terminal.
    Resize { cols: u16, rows: u16 },
    /// Sent by the server on the connection a job was handed over on, after
    /// it recorded the job's `Exit` in its database: `status.json` is then
    /// not needed. Without it the supervisor writes `status.json`.
    ExitRecorded,
}

/// A line the supervisor sends back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "ev")]
pub enum Event {
    /// Output so far (bytes written to the spool).
    Out {
        bytes: u64,
    },
    /// The job ended. The same facts go to `status.json` unless the server
    /// that started the job confirms it recorded them (`ExitRecorded`).
    Exit(ExitStatus),
    /// Answer to a non-watch request.
    Ok {
        detail: Option<KillReport>,
    },
    Error {
        message: String,
    },
}

/// What a kill verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KillReport {
    /// Processes that received SIGTERM.
    pub terminated: usize,
    /// Processes that needed SIGKILL after the grace period.
    pub killed: usize,
    /// Processes of the tree still alive afterwards (0 when verified).
    pub remaining: usize,
}

/// Final state of a job: sent as `Event::Exit`, and written atomically to
/// `status.json` when the starting server did not confirm it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitStatus {
    /// `exited`, `killed`, `timed_out` or `failed`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub ended_ms: i64,
    pub total_bytes: u64,
    pub kill: Option<KillReport>,
    /// Set only in the `Exit` a supervisor sends on the connection it was
    /// handed its job on, when the job left no process: once the server
    /// confirms the exit (`ExitRecorded`), the supervisor waits on that
    /// connection for its next task, back in the server's pool without
    /// greeting it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
}

pub const STATUS_FILE: &str = "status.json";
pub const CONTROL_SOCKET: &str = "ctl.sock";
