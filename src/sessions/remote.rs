//! The host of a session on an SSH host. It lives in the server (the
//! connection is the server's), on two channels of the pooled connection:
//! one runs `cat` on a FIFO in a fresh private directory (the side channel),
//! the other runs bash under a pseudo-terminal, whose start-up file opens
//! that FIFO and then removes it, so nothing is left on the host.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::proto::OpenSpec;
use super::shell::{self, quote};
use super::term::{Input, Term};
use crate::ssh::{Chunk, Pool};

/// The side channel's command: a private directory with a FIFO, its path
/// on the first line, then whatever the shell's hooks write to it.
const SIDE: &str = "umask 077; d=$(mktemp -d \"${TMPDIR:-/tmp}/mcpsh.XXXXXXXX\") || exit 1; \
    mkfifo -m 600 \"$d/side\" || exit 1; printf '%s %s\\n' \"$$\" \"$d/side\"; exec cat -- \"$d/side\"";

/// Run when a session ends: `$1` the side channel's `cat`, `$2` its FIFO.
/// The FIFO still there means the shell never opened it, so `cat` still
/// waits for a writer and is killed; the private directory goes either way.
const CLEANUP: &str = "d=${2%/*}; case \"$d\" in /*/mcpsh.*) ;; *) exit 0 ;; esac; \
    [ -p \"$2\" ] && kill \"$1\" 2>/dev/null; rm -rf -- \"$d\"";

/// Start the session of `spec` on `alias`; the returned term is fed by a
/// task on `tracker` until the shell ends.
pub(super) async fn open(
    pool: &Pool,
    alias: &str,
    spec: &OpenSpec,
    tracker: &tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<Arc<Term>, String> {
    let mut side = pool
        .exec(alias, SIDE, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut first = Vec::new();
    let first_line = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), side.next()).await;
        match next {
            Ok(Ok(Some(Chunk::Stdout(d)))) => {
                first.extend_from_slice(&d);
                if let Some(i) = first.iter().position(|&b| b == b'\n') {
                    let path = String::from_utf8_lossy(&first[..i]).into_owned();
                    first.drain(..=i);
                    break path;
                }
                if first.len() > 4096 {
                    return Err("the host answered the session set-up with garbage".into());
                }
            }
            Ok(Ok(Some(Chunk::Stderr(d)))) => {
                return Err(format!(
                    "cannot prepare the session on {alias}: {}",
                    String::from_utf8_lossy(&d).trim()
                ));
            }
            Ok(Ok(_)) | Ok(Err(_)) => {
                return Err(format!(
                    "cannot prepare the session on {alias} (mktemp/mkfifo failed)"
                ));
            }
            Err(_) => return Err(format!("{alias} did not answer the session set-up in 10 s")),
        }
    };
    // `PID PATH`: the side channel's `cat`, and the FIFO it waits on.
    let Some((cat_pid, fifo)) = first_line
        .split_once(' ')
        .and_then(|(p, f)| Some((p.parse::<u32>().ok()?, f.to_owned())))
    else {
        return Err(format!(
            "the session set-up on {alias} answered {first_line:?}"
        ));
    };
    // Until the shell opens the FIFO (and removes it), `cat` waits for it:
    // if the shell never does, this ends both.
    let pid = cat_pid.to_string();
    let cleanup = crate::ssh::cmdline::argv(&[
        "sh",
        "-c",
        CLEANUP,
        "mcpsh-side-cleanup",
        pid.as_str(),
        fifo.as_str(),
    ])
    .unwrap_or_default();
    let command = shell_command(spec, &fifo)?;
    let mut pty = pool
        .exec(alias, &command, Some((spec.cols, spec.rows)))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<Input>(64);
    let term = Term::new(
        spec.name.clone(),
        &spec.dir,
        &spec.shell,
        0,
        (spec.cols, spec.rows),
        spec.transcript_cap,
        spec.segment_size,
        tx,
        None,
    );
    if !first.is_empty() {
        term.feed_side(&first);
    }
    let t = term.clone();
    let idle_secs = spec.idle_secs;
    let (pool, host, id) = (pool.clone(), alias.to_owned(), spec.session.clone());
    tracker.spawn(async move {
        let input = pty.stdin();
        let mut side_open = true;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let reason = loop {
            tokio::select! {
                c = pty.next() => match c {
                    Ok(Some(Chunk::Stdout(d) | Chunk::Stderr(d))) => t.feed_output(&d),
                    Ok(Some(Chunk::Exit { code, signal })) => break match (code, signal) {
                        (Some(c), _) => format!("the shell exited with code {c}"),
                        (_, Some(s)) => format!("the shell was killed by signal {s}"),
                        _ => "the shell ended".into(),
                    },
                    Ok(None) => break "the shell ended".into(),
                    Err(v) => break format!("the SSH connection was lost: {}", v.reason),
                },
                c = side.next(), if side_open => match c {
                    Ok(Some(Chunk::Stdout(d))) => t.feed_side(&d),
                    Ok(Some(_)) => {}
                    _ => side_open = false,
                },
                i = rx.recv() => match i {
                    Some(Input::Bytes(b)) => { let _ = input.write(&b).await; }
                    Some(Input::Resize(cols, rows)) => { let _ = input.resize(cols, rows).await; }
                    Some(Input::Close) | None => break "closed".into(),
                },
                _ = cancel.cancelled() => break "the server stopped".into(),
                _ = tick.tick() => {
                    if idle_secs > 0 && t.idle() >= Duration::from_secs(idle_secs) {
                        break format!("closed after {idle_secs} s idle");
                    }
                }
            }
        };
        // A session we end takes its whole tree with it (background jobs
        // too); then dropping the channels closes them, and `cat` sees the
        // FIFO's end.
        let pid = t.shell_pid();
        if pid > 0 && !reason.starts_with("the SSH connection was lost") {
            let grace = Duration::from_millis(500);
            if let Err(e) =
                crate::jobs::kill_remote_tree(&pool, &host, pid as u32, &id, grace).await
            {
                tracing::warn!(host = %host, "could not end the session's processes: {e}");
            }
        }
        if !reason.starts_with("the SSH connection was lost") {
            let _ = pool.run(&host, &cleanup, b"", 1024).await;
        }
        t.set_exited(reason);
    });
    if let Err(why) = term.wait_started(Duration::from_secs(15)).await {
        let _ = term.handle(super::proto::Request::Close).await;
        let _ = term.wait_exit().await;
        return Err(format!("the session shell on {alias} did not start: {why}"));
    }
    Ok(term)
}

/// `cd`, the variables, then bash with the start-up file on descriptor 3.
fn shell_command(spec: &OpenSpec, fifo: &str) -> Result<String, String> {
    let mut cmd = String::new();
    if !spec.cwd.as_os_str().is_empty() {
        let cwd = spec.cwd.to_string_lossy();
        cmd.push_str(&format!("cd -- {} || exit 1; ", quote(&cwd)));
    }
    for (k, v) in &spec.env {
        if !crate::ssh::cmdline::valid_env_name(k) {
            return Err(format!("env name {k:?} is not a valid variable name"));
        }
        cmd.push_str(&format!("export {k}={}; ", quote(v)));
    }
    let rc = shell::rcfile(&shell::Side::Fifo(fifo.to_owned()));
    cmd.push_str(&format!(
        "export MCPSH_SESSION={}; exec bash --rcfile /dev/fd/3 -i 3<<'MCPSH_RC_EOF'\n{rc}exec 3<&-\nMCPSH_RC_EOF\n",
        quote(&spec.name)
    ));
    Ok(cmd)
}
