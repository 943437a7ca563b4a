//! Starting a job's process: directly for plain words, else under `bash -c`;
//! stdout and stderr merged into one pipe, or everything on a fresh
//! pseudo-terminal whose session the job leads. Used only by the supervisor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use super::direct;
use super::proto::{Spec, StdinMode};

/// A job ready to start: its command with stdio wired, and the descriptor its
/// output will come from, which the caller takes (and sets up) first, so
/// that nothing is left to do between the spawn and waiting for output.
pub(super) struct Prepared {
    cmd: Command,
    pub(super) output: Option<OwnedFd>,
    /// The terminal's master side, for a tty job.
    master: Option<OwnedFd>,
}

/// The started job: its pid, where its input goes, its terminal.
pub(super) struct Spawned {
    pub(super) pid: i32,
    pub(super) input: Option<OwnedFd>,
    pub(super) pty: Option<OwnedFd>,
}

pub(super) fn prepare(spec: &Spec) -> io::Result<Prepared> {
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let path = path.or_else(|| std::env::var("PATH").ok());
    let mut cmd = match direct::direct(&spec.cmd, path.as_deref(), &spec.cwd) {
        Some(d) => {
            let mut c = Command::new(&d.program);
            std::os::unix::process::CommandExt::arg0(&mut c, &d.words[0]);
            c.args(&d.words[1..]);
            c
        }
        None => {
            let mut c = Command::new(&spec.shell);
            // Messages then read "bash: line 1: …" rather than with the full path.
            let name = std::path::Path::new(&spec.shell)
                .file_name()
                .unwrap_or_default();
            std::os::unix::process::CommandExt::arg0(&mut c, name);
            c.arg("-c").arg(&spec.cmd);
            c
        }
    };
    cmd.current_dir(&spec.cwd).env("PWD", &spec.cwd);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some((cols, rows)) = spec.tty {
        let (master, slave) = open_pty(cols, rows)?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        pty_session(&mut cmd);
        return Ok(Prepared {
            cmd,
            output: Some(master.try_clone()?),
            master: Some(master),
        });
    }
    let (read, write) = std::io::pipe()?;
    cmd.stdout(Stdio::from(write.try_clone()?))
        .stderr(Stdio::from(write));
    cmd.stdin(match spec.stdin {
        StdinMode::Null => Stdio::null(),
        StdinMode::Text(_) | StdinMode::Interactive => Stdio::piped(),
    });
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(Prepared {
        cmd,
        output: Some(OwnedFd::from(read)),
        master: None,
    })
}

impl Prepared {
    pub(super) fn spawn(self) -> io::Result<Spawned> {
        let Prepared {
            mut cmd, master, ..
        } = self;
        let mut child = cmd.spawn()?;
        // Closes our copies of the pipe's write end (or the terminal's slave
        // side), so EOF can arrive.
        drop(cmd);
        let (input, pty) = match master {
            Some(m) => (Some(m.try_clone()?), Some(m)),
            None => (child.stdin.take().map(OwnedFd::from), None),
        };
        Ok(Spawned {
            pid: child.id() as i32,
            input,
            pty,
        })
    }
}

pub(crate) fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, ws)?;
    Ok((master, slave))
}

/// Make the child a session leader with the pty slave (its stdin) as its
/// controlling terminal, so job control and Ctrl-C work as in a real terminal.
#[allow(unsafe_code)]
fn pty_session(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe syscalls (setsid, ioctl) without allocating.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(std::io::stdin().as_fd())?;
            Ok(())
        });
    }
}
