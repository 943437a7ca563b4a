//! Jobs on SSH hosts. The command runs in an exec channel of the host's
//! pooled connection; this server drains the channel into a local spool of
//! the same format as local jobs, so `job poll`, excerpts and paging work
//! unchanged. The remote wrapper first prints the shell's pid (before the
//! command can print anything), which `job kill` and `timeout` use to end
//! the whole remote tree: the session, every descendant, and any process
//! carrying the job's `MCPSH_JOB` marker (a daemon that double-forked away).
//! The exit code comes from the SSH exit-status message, which output
//! cannot forge. A channel that dies without one makes the job `lost`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::engine::Progress;
use super::proto::{ExitStatus, KillReport, StdinMode};
use super::render::TtyRender;
use super::spool::SpoolWriter;
use super::{JobError, lock, now_ms};
use crate::ssh::{Chunk, Pool, Stdin, cmdline};

/// How a job was ended by us, if it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum EndedBy {
    Kill,
    Timeout,
}

/// A running remote job, as the server holds it.
pub(super) struct RemoteJob {
    pub alias: String,
    /// Its input, for a job on its own channel (agent jobs read /dev/null).
    pub stdin: Option<Stdin>,
    /// The remote shell's pid, once the wrapper printed it.
    pub pid: watch::Receiver<Option<u32>>,
    pub ended_by: Mutex<Option<(EndedBy, KillReport)>>,
    /// Held while a kill runs, so the end is recorded with its report.
    pub killing: tokio::sync::Mutex<()>,
    pub done: Notify,
}

impl RemoteJob {
    /// The remote pid, waiting briefly for it: the exec agent reports it a
    /// few milliseconds after the start (with the first output or the exit
    /// when those come sooner).
    pub(super) async fn started_pid(&self) -> Option<u32> {
        let mut rx = self.pid.clone();
        let wait = rx.wait_for(Option::is_some);
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(pid)) => *pid,
            _ => *self.pid.borrow(),
        }
    }
}

/// The exec string of a job: print the pid, enter `cwd`, export `env`, then
/// run `cmd` with bash (or sh where there is no bash), or exec it directly
/// when it is plain words.
pub(super) fn exec_string(
    cmd: &str,
    cwd: Option<&str>,
    env: &[(String, String)],
) -> Result<String, JobError> {
    let mut s = cmdline::Script::new();
    s.raw("echo $$");
    if let Some(dir) = cwd {
        s.set("d_", dir.as_bytes());
        s.raw("cd -- \"$d_\" || exit 126");
    }
    for (k, v) in env {
        s.export(k, v.as_bytes()).map_err(JobError::Invalid)?;
    }
    match super::direct::plain_words(cmd) {
        // Plain words mean the same without a shell (see `direct.rs`): one
        // exec less on the host. They hold only characters safe as script text.
        Some(words) => {
            s.raw(&format!("exec {}", words.join(" ")));
        }
        None => {
            s.set("c_", cmd.as_bytes());
            s.raw("if command -v bash >/dev/null 2>&1; then exec bash -c \"$c_\"; fi");
            s.raw("exec sh -c \"$c_\"");
        }
    }
    s.finish().map_err(|e| JobError::Invalid(e.to_string()))
}

/// The script that ends a remote job's tree: `$1` root pid, `$2` the job
/// id (its `MCPSH_JOB` marker), `$3` grace seconds. Stops the tree first so
/// nothing forks away, then TERM, CONT, KILL after the grace; prints
/// `terminated killed remaining`.
const KILL_SCRIPT: &str = r#"
root=$1 job=$2 grace=$3
tree() {
  { ps -A -o pid= -o ppid= -o sid= 2>/dev/null | awk -v r="$root" '
      { pid[NR]=$1; pp[NR]=$2; sid[NR]=$3 }
      END {
        keep[r]=1
        for (i=1; i<=NR; i++) if (sid[i]==r) keep[pid[i]]=1
        do { more=0
          for (i=1; i<=NR; i++) if (!(pid[i] in keep) && (pp[i] in keep)) { keep[pid[i]]=1; more=1 }
        } while (more)
        for (k in keep) print k
      }'
    grep -l -s -z -x -F -e "MCPSH_JOB=$job" /proc/[0-9]*/environ 2>/dev/null | sed -e 's|^/proc/||' -e 's|/environ$||'
  } | sort -u | while read -r p; do
    [ "$p" = "$$" ] && continue
    kill -0 "$p" 2>/dev/null && echo "$p"
  done
}
count() { set -- $1; echo $#; }
t=$(tree); kill -STOP $t 2>/dev/null
t=$(tree); kill -STOP $t 2>/dev/null
n=$(count "$t")
kill -TERM $t 2>/dev/null; kill -CONT $t 2>/dev/null
i=0
while [ "$i" -lt "$grace" ] && [ -n "$(tree)" ]; do sleep 0.1; i=$((i+1)); done
left=$(tree); k=$(count "$left")
[ -n "$left" ] && kill -KILL $left 2>/dev/null && sleep 0.1
echo "$n $k $(count "$(tree)")"
"#;

/// Ends the remote tree of job `id` rooted at `pid` on `alias` (also a
/// remote terminal session's, with the session id as `id`).
pub(crate) async fn kill_tree(
    pool: &Pool,
    alias: &str,
    pid: u32,
    id: &str,
    grace: Duration,
) -> Result<KillReport, JobError> {
    let tenths = (grace.as_millis() / 100).max(1).to_string();
    let exec = cmdline::argv(&[
        "sh",
        "-c",
        KILL_SCRIPT,
        "mcpsh-kill",
        &pid.to_string(),
        id,
        &tenths,
    ])
    .map_err(|e| JobError::Control(e.to_string()))?;
    let out = pool
        .run(alias, &exec, b"", 4096)
        .await
        .map_err(|e| JobError::Control(format!("cannot kill the remote process tree: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<usize> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [terminated, killed, remaining] => Ok(KillReport {
            terminated,
            killed,
            remaining,
        }),
        _ => Err(JobError::Control(format!(
            "the remote kill did not report (exit {:?}): {}",
            out.code,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Where a driver writes.
pub(super) struct Sink {
    pub spool: SpoolWriter,
    pub render: Option<TtyRender>,
    pub last_newline: bool,
    pub error: Option<String>,
}

impl Sink {
    fn write(&mut self, data: &[u8]) {
        let mut rendered = Vec::new();
        let bytes: &[u8] = match self.render.as_mut() {
            Some(r) => {
                r.feed(data, &mut rendered);
                &rendered
            }
            None => data,
        };
        if bytes.is_empty() {
            return;
        }
        self.last_newline = bytes.last() == Some(&b'\n');
        if let Err(e) = self.spool.write(bytes)
            && self.error.is_none()
        {
            self.error = Some(format!(
                "output spool write failed (output after byte {} lost): {e}",
                self.spool.total()
            ));
        }
    }

    fn flush(&mut self) {
        let mut rendered = Vec::new();
        if let Some(r) = self.render.as_mut() {
            r.flush_partial(&mut rendered);
        }
        if !rendered.is_empty() {
            self.last_newline = rendered.last() == Some(&b'\n');
            let _ = self.spool.write(&rendered);
        }
    }
}

/// What a driver needs besides the channel and the sink.
pub(super) struct Driver {
    pub pool: Pool,
    pub job: Arc<RemoteJob>,
    pub id: String,
    pub pid_tx: watch::Sender<Option<u32>>,
    pub tx: watch::Sender<Progress>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
}

/// Follows a remote job's channel to its end: spools its output, publishes
/// progress, enforces `timeout`, and returns its exit status.
pub(super) async fn drive(d: Driver, mut ch: crate::ssh::RemoteProc, mut sink: Sink) -> ExitStatus {
    let Driver {
        pool,
        job,
        id,
        pid_tx,
        tx,
        timeout,
        grace,
    } = d;
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut exit: Option<(Option<u32>, Option<String>)> = None;
    let mut lost: Option<String> = None;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timer_fired = false;
    loop {
        let timer = async {
            match deadline {
                Some(d) if !timer_fired => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            next = ch.next() => match next {
                Ok(Some(Chunk::Stdout(d))) => match head.as_mut() {
                    Some(h) => {
                        // The wrapper's first line is the pid.
                        h.extend_from_slice(&d);
                        if let Some(nl) = h.iter().position(|&b| b == b'\n') {
                            let line = String::from_utf8_lossy(&h[..nl]).trim().to_owned();
                            let rest = h[nl + 1..].to_vec();
                            head = None;
                            if let Ok(pid) = line.parse::<u32>() {
                                let _ = pid_tx.send(Some(pid));
                                sink.write(&rest);
                            } else {
                                let mut all = line.into_bytes();
                                all.push(b'\n');
                                all.extend_from_slice(&rest);
                                sink.write(&all);
                            }
                        } else if h.len() > 64 {
                            let all = head.take().unwrap_or_default();
                            sink.write(&all);
                        }
                    }
                    None => sink.write(&d),
                },
                Ok(Some(Chunk::Stderr(d))) => sink.write(&d),
                Ok(Some(Chunk::Exit { code, signal })) => exit = Some((code, signal)),
                Ok(None) => break,
                Err(v) => {
                    if exit.is_none() {
                        lost = Some(v.reason);
                    }
                    break;
                }
            },
            _ = timer => {
                timer_fired = true;
                let (pool, job, id) = (pool.clone(), job.clone(), id.clone());
                let pid = *pid_tx.borrow();
                tokio::spawn(async move {
                    if let Err(e) = end_tree(&pool, &job, pid, &id, grace, EndedBy::Timeout).await {
                        tracing::warn!(job = %id, "timeout kill failed: {e}");
                    }
                });
            }
        }
        tx.send_modify(|p| p.bytes = sink.spool.total());
    }
    if let Some(h) = head.take() {
        sink.write(&h);
    }
    sink.flush();
    tx.send_modify(|p| p.bytes = sink.spool.total());
    drop(job.killing.lock().await);
    let ended_by = lock(&job.ended_by).clone();
    let (code, signal) = exit.clone().unwrap_or((None, None));
    let exit_code = code.map(|c| c as i32);
    let signal = signal.as_deref().and_then(crate::ssh::signal_number);
    let (status, kill, reason) = match (ended_by, &lost) {
        (Some((EndedBy::Timeout, k)), _) => (
            "timed_out",
            Some(k),
            Some("timeout reached; remote process tree killed".to_owned()),
        ),
        (Some((EndedBy::Kill, k)), _) => ("killed", Some(k), None),
        (None, Some(why)) => (
            "lost",
            None,
            Some(format!(
                "the SSH connection to {} ended while the job ran: {why}",
                job.alias
            )),
        ),
        (None, None) if exit.is_none() => (
            "failed",
            None,
            Some("the remote command ended without an exit status".to_owned()),
        ),
        (None, None) => ("exited", None, None),
    };
    job.done.notify_waiters();
    ExitStatus {
        status: status.into(),
        exit_code,
        signal,
        reason: sink.error.take().or(reason),
        ended_ms: now_ms(),
        total_bytes: sink.spool.total(),
        kill,
        again: false,
    }
}

/// Kills the tree and records why (the driver reads it when the channel ends).
pub(super) async fn end_tree(
    pool: &Pool,
    job: &RemoteJob,
    pid: Option<u32>,
    id: &str,
    grace: Duration,
    why: EndedBy,
) -> Result<KillReport, JobError> {
    let pid = match pid {
        Some(pid) => Some(pid),
        None => job.started_pid().await,
    };
    let Some(pid) = pid else {
        return Err(JobError::Control(
            "the remote command has not started yet; try again in a moment".into(),
        ));
    };
    let _killing = job.killing.lock().await;
    {
        let mut ended = lock(&job.ended_by);
        if ended.is_none() {
            *ended = Some((why, KillReport::default()));
        }
    }
    let report = kill_tree(pool, &job.alias, pid, id, grace).await?;
    if let Some((w, r)) = lock(&job.ended_by).as_mut()
        && *w == why
    {
        *r = report.clone();
    }
    Ok(report)
}

/// Feeds the job's stdin as asked at start.
pub(super) async fn feed_stdin(stdin: &Stdin, mode: &StdinMode, tty: bool) -> Result<(), String> {
    match mode {
        StdinMode::Text(t) => {
            stdin.write(t.as_bytes()).await?;
            stdin.eof().await
        }
        StdinMode::Null if !tty => stdin.eof().await,
        _ => Ok(()),
    }
}
