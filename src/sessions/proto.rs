//! Wire types of terminal sessions: the spec a session host starts from, and
//! the requests and answers on its control socket (JSON, one object per
//! line). The same socket serves the server, `mcpsh terms` and `mcpsh attach`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a session host needs to start a shell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenSpec {
    /// Marks the hand-over line as a session (a job spec has no such field).
    pub session: String,
    pub name: String,
    /// The session's directory: control socket, transcript, status.
    pub dir: PathBuf,
    pub shell: String,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
    /// Close after this long with no request, input or output (0 = never).
    pub idle_secs: u64,
    pub transcript_cap: u64,
    pub segment_size: u64,
}

/// A request on a session's control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// Run one command line in the shell and wait up to `wait_ms` for it.
    Exec {
        cmd: String,
        wait_ms: u64,
        max_output: usize,
    },
    /// Bytes for the terminal (base64).
    Write {
        data: String,
    },
    /// New output since the last read (or the screen), waiting up to
    /// `wait_ms` for some when there is none.
    Read {
        screen: bool,
        wait_ms: u64,
        max_output: usize,
        /// Page the transcript from this offset instead (the read position stays).
        #[serde(default)]
        from: Option<u64>,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
    Close,
    Info,
    /// Stream the terminal: the screen as it is, then raw output. With `rw`,
    /// the rest of the connection is typed into the terminal.
    Attach {
        rw: bool,
    },
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "re")]
pub enum Response {
    Exec(ExecResult),
    Read(ReadResult),
    Info(Info),
    Ok,
    Error { message: String },
}

/// Output cut to a budget: all of it, or its head and tail.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Text {
    pub head: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
    /// Bytes left out between head and tail.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `exec` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    /// The command's number in this session.
    pub seq: u64,
    /// `exited`, `running` (still going after the wait), `waiting_for_input`
    /// (blocked reading the terminal), or `shell_exited`.
    pub state: String,
    pub exit_code: Option<i32>,
    /// The shell's working directory after the command.
    pub cwd: Option<String>,
    pub output: Text,
    /// The last lines of the screen, when the command waits for input.
    pub screen: Option<String>,
    pub duration_ms: u64,
}

/// What `read` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadResult {
    /// New plain text since the last read (not with `screen`).
    pub text: Option<Text>,
    /// The rendered screen, trailing blank lines dropped.
    pub screen: Option<String>,
    /// Cursor (row, column), 0-based, with `screen`.
    pub cursor: Option<(u16, u16)>,
    /// Transcript offset after what was returned (pass as `from` to page).
    pub next: u64,
    pub info: Info,
}

/// A session's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub shell_pid: i32,
    pub started_ms: i64,
    /// Milliseconds since the last input or output.
    pub idle_ms: u64,
    /// Transcript bytes not yet read.
    pub pending_bytes: u64,
    /// The command running now, if any.
    pub running: Option<Running>,
    /// The last finished command.
    pub last: Option<Finished>,
    pub cwd: Option<String>,
    pub cols: u16,
    pub rows: u16,
    /// The foreground program is blocked reading the terminal.
    pub waiting_for_input: bool,
    /// Set once the shell has ended, with why.
    pub exit_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub seq: u64,
    pub for_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finished {
    pub seq: u64,
    pub exit_code: i32,
    pub duration_ms: u64,
}

/// A session host's first line to the server that handed it the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub shell_pid: Option<i32>,
    pub error: Option<String>,
}

pub const CONTROL_SOCKET: &str = "ctl.sock";
pub const STATUS_FILE: &str = "status.json";
/// The transcript spool's directory inside the session directory.
pub const TRANSCRIPT: &str = "transcript";

/// `status.json` of an ended session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub reason: String,
    pub ended_ms: i64,
}
