//! The zygote: a small single-threaded helper process (`mcpsh __zygote`) that
//! the server starts once and that forks one supervisor per job. It keeps one
//! *spare* supervisor forked ahead of time, already detached and waiting for
//! its spec, so starting a job costs neither an exec nor a fork on the
//! latency path of a `bash` call: the zygote binds the job's control socket,
//! passes it with the spec to the spare (SCM_RIGHTS), answers the server at
//! once, and forks the next spare while the job runs. Because the socket is
//! bound before the answer, the server can connect as soon as it has the pid.
//!
//! Protocol on the zygote's stdin/stdout: one [`Spec`] JSON line in, one
//! `{"pid": N}` or `{"error": "..."}` line out. On EOF (the server went away)
//! the zygote exits, and so does an idle spare; supervisors that took a job
//! live on in their own sessions.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::proto::{CONTROL_SOCKET, Spec};
use super::{JobError, supervisor};

/// The zygote's answer to one spec.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forked {
    pub pid: Option<i32>,
    pub error: Option<String>,
}

/// A supervisor forked ahead of time, waiting for its spec.
struct Spare {
    pid: i32,
    chan: UnixStream,
}

/// Run the zygote loop. Must be called before any thread is started (it forks).
pub fn main() -> i32 {
    ignore_sigchld();
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let mut spare: Option<Spare> = None;
    loop {
        if spare.is_none() {
            spare = fork_spare().ok();
        }
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        let answer = match start(&line, &mut spare) {
            Ok(pid) => Forked {
                pid: Some(pid),
                error: None,
            },
            Err(e) => Forked {
                pid: None,
                error: Some(e),
            },
        };
        let mut reply = serde_json::to_vec(&answer).unwrap_or_default();
        reply.push(b'\n');
        if out.write_all(&reply).and_then(|()| out.flush()).is_err() {
            return 0;
        }
    }
}

/// Bind the job's control socket and hand it with the spec to a spare
/// (forking a fresh one if the spare is gone). Returns the supervisor's pid.
fn start(spec_line: &str, spare: &mut Option<Spare>) -> Result<i32, String> {
    let spec: Spec = serde_json::from_str(spec_line).map_err(|e| format!("bad spec: {e}"))?;
    let sock = spec.dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| format!("cannot bind control socket {}: {e}", sock.display()))?;
    for _ in 0..2 {
        let s = match spare.take() {
            Some(s) => s,
            None => fork_spare().map_err(|e| format!("cannot fork a supervisor: {e}"))?,
        };
        if hand_over(&s, spec_line, &listener).is_ok() {
            return Ok(s.pid);
        }
    }
    Err("no supervisor would take the job".to_owned())
}

/// Send the listener (as SCM_RIGHTS on the first byte) and the spec line.
fn hand_over(spare: &Spare, spec_line: &str, listener: &UnixListener) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let fds = [listener.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(
        &spare.chan,
        &[IoSlice::new(b"S")],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    (&spare.chan).write_all(spec_line.as_bytes())
}

/// Fork a spare supervisor: detached now, waiting on a socket for its job.
fn fork_spare() -> std::io::Result<Spare> {
    let (ours, theirs) = UnixStream::pair()?;
    match fork()? {
        0 => {
            drop(ours);
            std::process::exit(spare_main(theirs))
        }
        pid => Ok(Spare { pid, chan: ours }),
    }
}

fn spare_main(chan: UnixStream) -> i32 {
    restore_sigchld();
    let _ = rustix::process::setsid();
    // Orphaned descendants of the job are re-parented here, so a kill can find them.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Let go of the zygote's pipes to the server (its EOF must reach the zygote).
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let ready = supervisor::Ready::new();
    let Some(listener) = receive_listener(&chan) else {
        return 0; // the zygote went away without a job for us
    };
    let mut line = String::new();
    if BufReader::new(&chan).read_line(&mut line).is_err() {
        return 1;
    }
    let Ok(spec) = serde_json::from_str::<Spec>(&line) else {
        return 1;
    };
    match ready {
        Ok(ready) => ready.run(spec, listener),
        Err(e) => {
            let why = format!("supervisor runtime: {e}");
            supervisor::write_status(&spec, &supervisor::failed(why, 0));
            1
        }
    }
}

fn receive_listener(chan: &UnixStream) -> Option<UnixListener> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        chan,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ok()?;
    if got.bytes == 0 {
        return None;
    }
    control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next().map(UnixListener::from),
        _ => None,
    })
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

/// Let the kernel reap forked supervisors when they exit (the zygote never waits).
#[allow(unsafe_code)]
fn ignore_sigchld() {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
}

/// Supervisors must see their children exit, and jobs must not inherit SIG_IGN.
#[allow(unsafe_code)]
fn restore_sigchld() {
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
}

/// The server's handle on its zygote: serialises requests, restarts it if it died.
pub struct Zygote {
    exe: PathBuf,
    proc: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl Zygote {
    pub fn new(exe: PathBuf) -> Zygote {
        Zygote {
            exe,
            proc: tokio::sync::Mutex::new(None),
        }
    }

    fn start(&self) -> Result<Running, JobError> {
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("__zygote")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
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
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| JobError::Spawn("zygote has no stdout".into()))?;
        Ok(Running {
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout),
        })
    }

    /// Start the zygote now so the first job does not pay for it.
    pub async fn warm(&self) -> Result<(), JobError> {
        let mut guard = self.proc.lock().await;
        if guard.is_none() {
            *guard = Some(self.start()?);
        }
        Ok(())
    }

    /// Fork a supervisor for `spec`; returns its pid.
    pub async fn fork(&self, spec: &Spec) -> Result<i32, JobError> {
        let mut line = serde_json::to_vec(spec).map_err(|e| JobError::Spawn(e.to_string()))?;
        line.push(b'\n');
        let mut guard = self.proc.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.start()?);
            }
            let Some(z) = guard.as_mut() else { continue };
            match Self::ask(z, &line).await {
                Ok(f) => {
                    return match (f.pid, f.error) {
                        (Some(pid), _) => Ok(pid),
                        (None, e) => Err(JobError::Spawn(
                            e.unwrap_or_else(|| "zygote refused".into()),
                        )),
                    };
                }
                Err(e) => {
                    // The zygote died; restart it once.
                    if let Some(mut z) = guard.take() {
                        let _ = z.child.start_kill();
                    }
                    if attempt == 1 {
                        return Err(JobError::Spawn(format!("job zygote failed: {e}")));
                    }
                }
            }
        }
        Err(JobError::Spawn("job zygote unavailable".into()))
    }

    async fn ask(z: &mut Running, line: &[u8]) -> std::io::Result<Forked> {
        z.stdin.write_all(line).await?;
        z.stdin.flush().await?;
        let mut reply = String::new();
        if z.stdout.read_line(&mut reply).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "zygote exited",
            ));
        }
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }
}
