//! `mcpsh terms` (the terminal sessions, open and recently closed) and
//! `mcpsh attach NAME` (watch one live, or type into it with `--rw`). Both
//! read the same state as a running server and talk to a session's control
//! socket directly, so they work from any shell on the host.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::age;
use crate::app::open_store;
use crate::config::Config;
use crate::sessions::proto::{CONTROL_SOCKET, Request};

#[derive(Debug, Args)]
pub(crate) struct TermsArgs {
    /// Print JSON (one object per session).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// The session's name.
    name: String,
    /// The host the session runs on.
    #[arg(long, default_value = "local")]
    host: String,
    /// Type into the session too (default: watch only).
    #[arg(long)]
    rw: bool,
}

/// The key that detaches: Ctrl-] (as in telnet).
const DETACH: u8 = 0x1d;

pub(crate) async fn list(config: Config, args: TermsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    let rows = crate::sessions::list(&store, |_| true).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for l in &rows {
            writeln!(out, "{}", serde_json::to_string(l)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no terminal sessions")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<16} {:<12} {:<8} {:>6} {:>6} {:>9}  STATE",
        "NAME", "HOST", "PID", "UP", "IDLE", "PENDING"
    )?;
    let now = crate::store::now_ms();
    for l in &rows {
        let r = &l.row;
        match &l.info {
            Some(i) => {
                let state = match (&i.running, i.waiting_for_input) {
                    (_, true) => "waiting for input".to_owned(),
                    (Some(run), _) => format!("running command {}", run.seq),
                    (None, _) => format!("idle in {}", i.cwd.as_deref().unwrap_or("?")),
                };
                writeln!(
                    out,
                    "{:<16} {:<12} {:<8} {:>6} {:>6} {:>9}  {state}",
                    r.name,
                    r.host,
                    if i.shell_pid > 0 {
                        i.shell_pid.to_string()
                    } else {
                        "-".into()
                    },
                    age((now - i.started_ms).max(0) / 1000),
                    age((i.idle_ms / 1000) as i64),
                    i.pending_bytes,
                )?;
            }
            None => writeln!(
                out,
                "{:<16} {:<12} {:<8} {:>6} {:>6} {:>9}  closed: {}",
                r.name,
                r.host,
                "-",
                age((now - r.created_ms).max(0) / 1000),
                "-",
                "-",
                r.reason.as_deref().unwrap_or("?"),
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn attach(config: Config, args: AttachArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    let Some(row) = store.open_term(&args.host, &args.name)? else {
        bail!(
            "no open session named {:?} on {}; `mcpsh terms` lists them",
            args.name,
            args.host
        );
    };
    let sock = std::path::Path::new(&row.dir).join(CONTROL_SOCKET);
    let mut stream = tokio::net::UnixStream::connect(&sock)
        .await
        .with_context(|| format!("cannot reach session {:?} at {}", args.name, sock.display()))?;
    let mut line = serde_json::to_vec(&Request::Attach { rw: args.rw })?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    eprint!(
        "[attached to {:?} on {}, {}; Ctrl-] detaches]\r\n",
        args.name,
        args.host,
        if args.rw {
            "typing goes to the session"
        } else {
            "read-only"
        }
    );
    let raw = RawMode::enter();
    let (mut from, mut to) = stream.into_split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    let mut key = [0u8; 1024];
    let mut stdin_open = true;
    let ended = loop {
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(n) if n > 0 => {
                    stdout.write_all(&buf[..n]).await?;
                    stdout.flush().await?;
                }
                _ => break true,
            },
            n = stdin.read(&mut key), if stdin_open => match n {
                Ok(n) if n > 0 => {
                    let keys = &key[..n];
                    let (typed, detach) = match keys.iter().position(|&b| b == DETACH) {
                        Some(i) => (&keys[..i], true),
                        None => (keys, false),
                    };
                    if args.rw && !typed.is_empty() {
                        to.write_all(typed).await?;
                    }
                    if detach {
                        break false;
                    }
                }
                // stdin closed: keep watching (read-only use from a script).
                _ => stdin_open = false,
            },
        }
    };
    drop(raw);
    eprint!(
        "\r\n[{}]\r\n",
        if ended {
            "the session ended"
        } else {
            "detached; the session keeps running"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The controlling terminal in raw mode while attached (so keys reach the
/// session one by one and Ctrl-] can detach), restored on drop.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}
