//! Starting a job's process: directly for plain words, else under `bash -c`;
//! stdout and stderr merged into one pipe, or everything on a fresh
//! pseudo-terminal whose session the job leads. Used only by the supervisor.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use super::direct;
use super::proto::{Spec, StdinMode};

/// The started job: its pid, where its output comes from, where its input goes.
pub(super) struct Spawned {
    pub(super) pid: i32,
    pub(super) output: OwnedFd,
    pub(super) input: Option<OwnedFd>,
    pub(super) pty: Option<OwnedFd>,
}

pub(super) fn spawn(spec: &Spec) -> io::Result<Spawned> {
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
        let child = cmd.spawn()?;
        drop(cmd);
        let input = Some(master.try_clone()?);
        let pty = Some(master.try_clone()?);
        return Ok(Spawned {
            pid: child.id() as i32,
            output: master,
            input,
            pty,
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
    let mut child = cmd.spawn()?;
    drop(cmd); // closes our copies of the pipe's write end, so EOF can arrive
    let input = child.stdin.take().map(OwnedFd::from);
    Ok(Spawned {
        pid: child.id() as i32,
        output: OwnedFd::from(read),
        input,
        pty: None,
    })
}

fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
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
