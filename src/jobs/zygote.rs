//! The zygote and its spares. The zygote is a small single-threaded helper
//! process (`mcpsh __zygote SOCKET`) that the server starts once; for every
//! line the server writes to it, it forks one *spare* supervisor. A spare
//! detaches at once (own session, child subreaper, stdio on `/dev/null`),
//! builds its runtime, arms SIGCHLD, connects to the server's spare socket and
//! says `{"pid": N}`, then waits for a job spec on that connection.
//!
//! Starting a job is then one write to an idle spare: no exec, no fork, no
//! zygote round trip on the latency path of a `bash` call. The same
//! connection carries the job's events back, so the server needs no connect
//! either; a job that runs for more than a moment also gets a control socket
//! for later clients (the CLI, a restarted server). On EOF the zygote exits, and so does an idle
//! spare; supervisors that took a job live on in their own sessions.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::conn::Conn;
use super::proto::Spec;
use super::{JobError, lock, supervisor};

/// A spare's greeting on the server's spare socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub pid: i32,
    /// Its start time (clock ticks since boot), which with the pid
    /// identifies the process for a restarted server.
    pub start: u64,
}

/// Run the zygote loop: one spare per line on stdin. Must be called before
/// any thread is started (it forks).
pub fn main(spare_socket: &Path) -> i32 {
    ignore_sigchld();
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        if let Ok(0) = fork() {
            std::process::exit(spare_main(spare_socket));
        }
    }
}

fn spare_main(spare_socket: &Path) -> i32 {
    default_signals();
    let _ = rustix::process::setsid();
    // Orphaned descendants of the job are re-parented here, so a kill can find them.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Let go of the server's pipes (the zygote's stdin/stdout, and stderr,
    // which in stdio mode is the client's): their EOF must not wait for jobs.
    // A supervisor reports failures in the job's status.json instead.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let Ok(mut ready) = supervisor::Ready::new() else {
        return 1;
    };
    // Serve jobs one after another: a supervisor whose job left no process
    // behind becomes a spare again, so steady work needs no fork per job.
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let hello = Hello {
        pid,
        start: super::procs::stat(pid).map(|s| s.start).unwrap_or(0),
    };
    let mut conn = None;
    loop {
        match take_job(spare_socket, &hello, conn.take()) {
            None => return 0,
            // A session's host lives as long as its shell, then exits.
            Some((Task::Session(spec), server)) => return ready.run_session(spec, server),
            Some((Task::Job(spec), server)) => {
                let (code, back) = ready.run(spec, server);
                match back {
                    // Back in the server's pool. Leftovers of a job would be
                    // ours (subreaper): never mix them with another job's tree.
                    Some(c) if supervisor::childless() => conn = Some(c),
                    _ => return code,
                }
            }
        }
    }
}

/// What a spare is handed: a job, or a terminal session to host.
enum Task {
    Job(Spec),
    Session(crate::sessions::proto::OpenSpec),
}

/// Wait for a task: its spec and the connection that will carry its events.
/// `conn` is the connection of the previous job when the server confirmed
/// that job's end on it, which put this supervisor back in its pool then;
/// otherwise connect and greet the server as a new spare (`hello`, computed
/// once per process).
fn take_job(
    spare_socket: &Path,
    hello: &Hello,
    conn: Option<UnixStream>,
) -> Option<(Task, UnixStream)> {
    let server = match conn {
        Some(c) => c,
        None => {
            let mut c = UnixStream::connect(spare_socket).ok()?;
            let mut hello = serde_json::to_vec(hello).ok()?;
            hello.push(b'\n');
            c.write_all(&hello).ok()?;
            c
        }
    };
    let mut line = String::new();
    match BufReader::new(&server).read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return None, // the server went away without a job for us
    }
    let task = match serde_json::from_str::<Spec>(&line) {
        Ok(spec) => Task::Job(spec),
        Err(_) => Task::Session(serde_json::from_str(&line).ok()?),
    };
    let _ = server.set_write_timeout(Some(Duration::from_millis(200)));
    Some((task, server))
}

/// fork(2). Only sound because the zygote is single-threaded: `main` enters
/// zygote mode before any runtime or thread exists.
#[allow(unsafe_code)]
fn fork() -> std::io::Result<i32> {
    // SAFETY: the calling process has exactly one thread (see above), so the
    // child gets a consistent copy of every lock and allocator state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Let the kernel reap spares when they exit (the zygote never waits).
#[allow(unsafe_code)]
fn ignore_sigchld() {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
}

/// Supervisors must see their children exit, and jobs and session shells
/// must not inherit an ignored signal: a server started in the background
/// by a non-interactive shell (`nohup mcpsh serve &`, CI) has SIGINT and
/// SIGQUIT ignored, and a command started under it would then never stop
/// on Ctrl-C. Ignored dispositions survive exec, so every one a job could
/// meet is set back to the default here, once per supervisor.
#[allow(unsafe_code)]
fn default_signals() {
    for sig in [
        libc::SIGCHLD,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGTERM,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
    ] {
        // SAFETY: restoring the default disposition installs no handler code.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// How many idle spares the server keeps. Replacements are forked when a job
/// ends, not when it starts, so the fork never competes with a starting job
/// for the CPU; two spares cover back-to-back starts.
const SPARES: usize = 2;

/// An idle spare, connected and waiting for a spec.
pub struct Spare {
    pub pid: i32,
    pub start: u64,
    pub conn: Conn,
}

/// The server's side: the zygote process, the spare socket and the pool of
/// idle spares.
pub struct Zygote {
    exe: PathBuf,
    socket: PathBuf,
    proc: tokio::sync::Mutex<Option<(tokio::process::Child, tokio::process::ChildStdin)>>,
    idle: Mutex<Vec<Spare>>,
    /// Spares asked of the zygote that have not connected yet.
    pending: std::sync::atomic::AtomicUsize,
    arrived: Notify,
}

impl Zygote {
    /// `socket` is where spares connect; it lives in a 0700 directory.
    pub fn new(exe: PathBuf, socket: PathBuf) -> Zygote {
        Zygote {
            exe,
            socket,
            proc: tokio::sync::Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            pending: std::sync::atomic::AtomicUsize::new(0),
            arrived: Notify::new(),
        }
    }

    /// Bind the spare socket, start the zygote and ask for the first spares.
    /// Spares are accepted by a task on `tracker` until `cancel`.
    pub async fn start(
        self: &std::sync::Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), JobError> {
        let _ = std::fs::remove_file(&self.socket);
        let listener = tokio::net::UnixListener::bind(&self.socket).map_err(|e| {
            JobError::Spawn(format!(
                "cannot bind the spare socket {}: {e}",
                self.socket.display()
            ))
        })?;
        let this = self.clone();
        tracker.spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = cancel.cancelled() => break,
                };
                if let Ok((stream, _)) = conn {
                    this.welcome(stream).await;
                }
            }
            let _ = std::fs::remove_file(&this.socket);
        });
        self.replenish().await
    }

    /// Read a new spare's greeting and put it in the pool.
    async fn welcome(&self, stream: tokio::net::UnixStream) {
        let Ok(mut conn) = Conn::from_tokio(stream) else {
            return;
        };
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_line()).await;
        let Ok(Ok(Some(line))) = read else {
            return;
        };
        let Ok(hello) = serde_json::from_slice::<Hello>(&line) else {
            return;
        };
        // The greeting is the only thing a spare sends before its task.
        if !conn.drained() {
            return;
        }
        let _ = self
            .pending
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        self.put_back(Spare {
            pid: hello.pid,
            start: hello.start,
            conn,
        });
    }

    /// Top the pool up to [`SPARES`], counting those on their way. Called when
    /// a job ends, so the forks happen while nothing is starting.
    pub async fn replenish(&self) -> Result<(), JobError> {
        let have = lock(&self.idle).len() + self.pending.load(SeqCst);
        match SPARES.saturating_sub(have) {
            0 => Ok(()),
            n => self.request(n).await,
        }
    }

    /// Ask the zygote for `n` more spares (restarting it if it died).
    async fn request(&self, n: usize) -> Result<(), JobError> {
        self.pending.fetch_add(n, SeqCst);
        let mut guard = self.proc.lock().await;
        for _ in 0..2 {
            if guard.is_none() {
                *guard = Some(self.spawn_zygote()?);
            }
            if let Some((_, stdin)) = guard.as_mut()
                && stdin.write_all(&b"spare\n".repeat(n)).await.is_ok()
                && stdin.flush().await.is_ok()
            {
                return Ok(());
            }
            if let Some((mut child, _)) = guard.take() {
                let _ = child.start_kill();
            }
        }
        Err(JobError::Spawn("the job zygote keeps failing".into()))
    }

    fn spawn_zygote(
        &self,
    ) -> Result<(tokio::process::Child, tokio::process::ChildStdin), JobError> {
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("__zygote")
            .arg(&self.socket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                JobError::Spawn(format!(
                    "cannot start the job zygote {}: {e}",
                    self.exe.display()
                ))
            })?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| JobError::Spawn("zygote has no stdin".into()))?;
        Ok((child, stdin))
    }

    /// Take an idle spare, waiting for one (and asking the zygote for it)
    /// when a burst emptied the pool.
    pub async fn take(&self) -> Result<Spare, JobError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut asked = false;
        loop {
            let arrived = self.arrived.notified();
            if let Some(spare) = lock(&self.idle).pop() {
                return Ok(spare);
            }
            // A burst emptied the pool: fork now rather than wait for a job to end.
            if !asked {
                if self.pending.load(SeqCst) == 0 {
                    self.request(1).await?;
                }
                asked = true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(JobError::Spawn(
                    "no supervisor became ready within 10 s (is the machine out of processes or memory?)".into(),
                ));
            }
        }
    }

    /// Return a spare that was taken but given no task, or a supervisor
    /// whose job ended and that waits for the next on the same connection.
    pub fn put_back(&self, spare: Spare) {
        lock(&self.idle).push(spare);
        self.arrived.notify_waiters();
    }

    /// Give `task` (a job [`Spec`], a session's `OpenSpec`) to `spare`, or,
    /// if it died while idle, to the next one. Returns the supervisor that
    /// took it, with the connection that now carries its events.
    pub async fn give(&self, mut spare: Spare, task: &impl Serialize) -> Result<Spare, JobError> {
        let mut line = serde_json::to_vec(task).map_err(|e| JobError::Spawn(e.to_string()))?;
        line.push(b'\n');
        loop {
            if spare.conn.write_all(&line).await.is_ok() {
                return Ok(spare);
            }
            spare = self.take().await?;
        }
    }

    /// Hand a task to whichever spare is idle.
    pub async fn hand_over(&self, task: &impl Serialize) -> Result<Spare, JobError> {
        let spare = self.take().await?;
        self.give(spare, task).await
    }
}
