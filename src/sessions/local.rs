//! The host of a local session: runs in a supervisor process (a spare from
//! the job zygote, so it is detached, in its own session, a child subreaper,
//! and outlives the server). It starts the shell on a fresh pseudo-terminal
//! with the side channel on a pipe, serves the control socket, and ends the
//! shell's whole tree when it closes.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::proto::{CONTROL_SOCKET, OpenSpec, Started};
use super::shell::{self, SIDE_FD};
use super::term::{Input, Probe, Reading, Term};
use crate::jobs::procs;
use crate::jobs::supervisor::{nonblocking, read_output as read};

/// Input bytes held for a terminal that does not read them yet.
const MAX_PENDING: usize = 1 << 20;

/// Run the session of `spec` to its end; `server` hears `Started` first.
pub async fn host(
    spec: OpenSpec,
    sigchld: &mut tokio::signal::unix::Signal,
    mut server: StdStream,
) -> i32 {
    let started = start(&spec);
    let (shell_pid, master, side) = match started {
        Ok(s) => s,
        Err(e) => {
            let why = format!(
                "could not start {} in {}: {e}",
                spec.shell,
                spec.cwd.display()
            );
            let _ = send_started(&mut server, None, Some(why));
            return 1;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Input>(64);
    let probe_master = master.try_clone().ok();
    let probe: Option<Probe> =
        probe_master.map(|m| Box::new(move || Some(foreground_reads(&m))) as Probe);
    let term = Term::new(
        spec.name.clone(),
        &spec.dir,
        &spec.shell,
        shell_pid,
        (spec.cols, spec.rows),
        spec.transcript_cap,
        spec.segment_size,
        tx,
        probe,
    );
    let sock = spec.dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let listener = match tokio::net::UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("cannot bind the session socket {}: {e}", sock.display());
            let _ = send_started(&mut server, None, Some(why));
            end_tree();
            return 1;
        }
    };
    let server_task = tokio::spawn(super::socket::serve(listener, term.clone()));
    let _ = send_started(&mut server, Some(shell_pid), None);
    drop(server);

    let (master, side) = match (nonblocking(master), nonblocking(side)) {
        (Ok(m), Ok(s)) => (m, s),
        _ => {
            end_tree();
            return 1;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut side_buf = vec![0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    let mut side_open = true;
    let mut reason: Option<String> = None;
    let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
    let mut hangup_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            n = read(&master, &mut buf) => match n {
                Ok(n) if n > 0 => term.feed_output(&buf[..n]),
                // EIO: every process holding the terminal has closed it.
                _ => {
                    if reason.is_none() {
                        reason = reap_shell(shell_pid);
                    }
                    if reason.is_some() { break }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            n = read(&side, &mut side_buf), if side_open => match n {
                Ok(n) if n > 0 => term.feed_side(&side_buf[..n]),
                _ => side_open = false,
            },
            _ = sigchld.recv() => {
                if let Some(r) = reap_shell(shell_pid) {
                    // Why we hung it up (idle, closed) says more than the SIGHUP.
                    reason.get_or_insert(r);
                    // Output still in the terminal is read before the end.
                    drain(&master, &mut buf, &term);
                    break;
                }
            }
            // Typing waits (up to the writer's limit) while a program does not read.
            input = rx.recv(), if pending.len() < MAX_PENDING => match input {
                Some(Input::Bytes(b)) => pending.extend_from_slice(&b),
                Some(Input::Resize(cols, rows)) => {
                    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                    let _ = rustix::termios::tcsetwinsize(master.get_ref(), ws);
                }
                Some(Input::Close) | None => {
                    hang_up(shell_pid);
                    reason.get_or_insert_with(|| "closed".into());
                    hangup_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
            },
            w = write_some(&master, &pending), if !pending.is_empty() => match w {
                Ok(n) => { pending.drain(..n); }
                Err(_) => pending.clear(),
            },
            _ = idle_tick.tick() => {
                if spec.idle_secs > 0 && term.idle() >= Duration::from_secs(spec.idle_secs) && hangup_at.is_none() {
                    reason = Some(format!("closed after {} s idle", spec.idle_secs));
                    hang_up(shell_pid);
                    hangup_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                if hangup_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    // A shell that ignores SIGHUP is killed.
                    if let Some(pid) = rustix::process::Pid::from_raw(shell_pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }
    let reason = reason.unwrap_or_else(|| "the shell ended".into());
    term.set_exited(reason.clone());
    super::write_ended(&spec.dir, &reason);
    let _ = std::fs::remove_file(&sock);
    // Waiters hear the end before the process goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server_task.abort();
    end_tree();
    0
}

/// Start the shell: terminal, side pipe, start-up file. Returns its pid,
/// the terminal's master side and the side channel's read end.
fn start(spec: &OpenSpec) -> io::Result<(i32, OwnedFd, OwnedFd)> {
    crate::fsutil::create_private_dir(&spec.dir)?;
    let rc = spec.dir.join("rc.bash");
    crate::fsutil::write_private(&rc, shell::rcfile(&shell::Side::Fd).as_bytes())?;
    let (side_r, side_w) = std::io::pipe()?;
    let (side_r, side_w) = (OwnedFd::from(side_r), OwnedFd::from(side_w));
    let (master, slave) = crate::jobs::open_pty(spec.cols, spec.rows)?;
    let mut cmd = Command::new(&spec.shell);
    if shell::has_hooks(&spec.shell) {
        cmd.arg("--rcfile").arg(&rc).arg("-i");
    } else {
        cmd.arg("-i");
    }
    cmd.current_dir(&spec.cwd)
        .env("PWD", &spec.cwd)
        .env("TERM", "xterm-256color")
        .env("MCPSH_SESSION", &spec.name)
        .env_remove("NO_COLOR")
        .env_remove("PAGER");
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    session_child(&mut cmd, side_w.as_raw_fd());
    let child = cmd.spawn()?;
    drop(cmd);
    drop(side_w);
    Ok((child.id() as i32, master, side_r))
}

/// Make the child a session leader on its terminal, with the side channel
/// on [`SIDE_FD`].
#[allow(unsafe_code)]
fn session_child(cmd: &mut Command, side: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe syscalls (setsid, ioctl, dup2) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::io::stdin().as_fd())?;
            if libc::dup2(side, SIDE_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn send_started(server: &mut StdStream, pid: Option<i32>, error: Option<String>) -> io::Result<()> {
    let mut line = serde_json::to_vec(&Started {
        shell_pid: pid,
        error,
    })
    .map_err(io::Error::other)?;
    line.push(b'\n');
    server.write_all(&line)
}

/// The shell's exit, if it has exited; other children are reaped too.
fn reap_shell(shell_pid: i32) -> Option<String> {
    let mut reason = None;
    while let Ok(Some((pid, status))) = rustix::process::wait(rustix::process::WaitOptions::NOHANG)
    {
        if pid.as_raw_nonzero().get() == shell_pid {
            reason = Some(match (status.exit_status(), status.terminating_signal()) {
                (Some(c), _) => format!("the shell exited with code {c}"),
                (_, Some(s)) => format!("the shell was killed by signal {s}"),
                _ => "the shell ended".into(),
            });
        }
    }
    reason
}

fn drain(master: &AsyncFd<OwnedFd>, buf: &mut [u8], term: &Term) {
    while let Ok(n) = rustix::io::read(master.get_ref(), &mut *buf) {
        if n == 0 {
            break;
        }
        term.feed_output(&buf[..n]);
    }
}

/// SIGHUP to the shell and its foreground group, as a terminal hang-up does.
fn hang_up(shell_pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(shell_pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::HUP);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
    }
}

/// End every process the session left (this host is their subreaper).
fn end_tree() {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    procs::kill_tree(me, Duration::from_millis(500));
}

/// Is the terminal's foreground program blocked reading it? `read(2)` on
/// the terminal is a yes; poll/select is a maybe (the screen decides).
fn foreground_reads(master: &OwnedFd) -> Reading {
    let Ok(pgrp) = rustix::termios::tcgetpgrp(master) else {
        return Reading::No;
    };
    // The shell itself may be the reader (`read -p`): callers ask only
    // while a command runs, never at the prompt.
    let pgrp = pgrp.as_raw_nonzero().get();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mut verdict = Reading::No;
    for pid in procs::descendants(me) {
        if procs::stat(pid).is_none_or(|s| s.pgrp != pgrp) {
            continue;
        }
        let Ok(sc) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
            continue;
        };
        let mut f = sc.split_ascii_whitespace();
        let nr = f.next().and_then(|n| n.parse::<i64>().ok());
        let arg0 = f
            .next()
            .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        match nr {
            Some(n) if n == libc::SYS_read => {
                let tty =
                    arg0.and_then(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok());
                if tty.is_some_and(|p| {
                    let p = p.to_string_lossy();
                    p.starts_with("/dev/pts/") || p == "/dev/tty"
                }) {
                    return Reading::Yes;
                }
            }
            Some(n) if is_poll(n) => verdict = Reading::Maybe,
            _ => {}
        }
    }
    verdict
}

#[cfg(target_arch = "x86_64")]
fn is_poll(n: i64) -> bool {
    [
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_select,
        libc::SYS_pselect6,
    ]
    .contains(&n)
}

#[cfg(not(target_arch = "x86_64"))]
fn is_poll(n: i64) -> bool {
    [libc::SYS_ppoll, libc::SYS_pselect6].contains(&n)
}

async fn write_some(fd: &AsyncFd<OwnedFd>, data: &[u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), data)?)) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(result) => return result,
            Err(_would_block) => {}
        }
    }
}
