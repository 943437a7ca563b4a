//! Server side of the job engine: starting jobs through the zygote, watching
//! them over their control sockets, recording their ends in the store,
//! re-adopting them after a restart, and keeping spool usage under the quota.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::Conn;
use super::jobdir::{
    control_request, dir_size, end_from_status, enforce_quota, open_spool, read_status,
    spool_totals,
};
use super::proto::{CONTROL_SOCKET, Event, ExitStatus, KillReport, Request, Spec, StdinMode};
use super::remote::{self, EndedBy, RemoteJob};
use super::spool::SpoolReader;
use super::zygote::{Spare, Zygote};
use super::{JobError, id, lock, now_ms, procs};
use crate::config::JobsConfig;
use crate::ssh::{Pool, RemoteProc, Run};
use crate::store::{JobEnd, JobRow, JobStatus, Store};

/// Live view of a running job, published by its watcher.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Bytes of output so far.
    pub bytes: u64,
    /// Set once the job has ended; its row may be written a moment later
    /// (this server's readers see the end meanwhile; see `Jobs::conclude`).
    pub end: Option<JobStatus>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// `local`, or an SSH host of the pool.
    pub host: String,
    pub cmd: String,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub stdin: StdinMode,
    /// Pseudo-terminal size, if any.
    pub tty: Option<(u16, u16)>,
    pub title: Option<String>,
    pub timeout: Option<Duration>,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: JobsConfig,
    dir: PathBuf,
    store: Store,
    zygote: Arc<Zygote>,
    shell: String,
    home: PathBuf,
    live: Mutex<HashMap<String, watch::Receiver<Progress>>>,
    /// Ends published to this server's callers and not yet in the store
    /// (see [`Jobs::conclude`]); readers lay them over the row.
    ending: Mutex<HashMap<String, JobEnd>>,
    ssh: Option<Pool>,
    remote: Mutex<HashMap<String, Arc<RemoteJob>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    cleanup: Notify,
}

fn request_line(req: &Request) -> Vec<u8> {
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    line
}

/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const SOCKET_PATH_MAX: usize = 108;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Run `f`, a few bounded statements and small reads (tens of microseconds),
/// right here when the database is free, else on a blocking thread. On the
/// path of every `bash` call a hop to a blocking thread and back costs more
/// than the work itself; waiting here behind a long statement must not.
async fn quick<T: Send + 'static>(store: &Store, f: impl FnOnce() -> T + Send + 'static) -> T {
    if store.is_free() {
        f()
    } else {
        blocking(f).await
    }
}

impl Jobs {
    /// Create the engine over `jobs_dir` (created 0700). `exe` is this binary,
    /// used to start the zygote.
    pub fn new(
        cfg: JobsConfig,
        jobs_dir: PathBuf,
        store: Store,
        exe: PathBuf,
        ssh: Option<Pool>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Jobs, JobError> {
        crate::fsutil::create_private_dir(&jobs_dir)?;
        // A job's control socket is bound well after the job started, so a
        // path too long for a socket address must be refused here, up front.
        let longest = jobs_dir.join("x".repeat(id::MAX_LEN)).join(CONTROL_SOCKET);
        if longest.as_os_str().len() >= SOCKET_PATH_MAX {
            return Err(JobError::Invalid(format!(
                "the jobs directory {} is too long a path for control sockets \
                 (at most {} bytes); set MCPSH_STATE_DIR to a shorter path",
                jobs_dir.display(),
                SOCKET_PATH_MAX - 1 - (longest.as_os_str().len() - jobs_dir.as_os_str().len()),
            )));
        }
        // Spares of this server connect here (one socket per server process);
        // sockets left by servers that were killed are removed.
        remove_stale_spare_sockets(&jobs_dir);
        let spare_socket = jobs_dir.join(format!(".spares-{}.sock", std::process::id()));
        let shell = ["/bin/bash", "/usr/bin/bash", "/bin/sh"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("/bin/sh")
            .to_owned();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| "/".into());
        Ok(Jobs {
            inner: Arc::new(Inner {
                cfg,
                dir: jobs_dir,
                store,
                zygote: Arc::new(Zygote::new(exe, spare_socket)),
                shell,
                home,
                live: Mutex::new(HashMap::new()),
                ending: Mutex::new(HashMap::new()),
                ssh,
                remote: Mutex::new(HashMap::new()),
                tracker,
                cancel,
                cleanup: Notify::new(),
            }),
        })
    }

    pub fn config(&self) -> &JobsConfig {
        &self.inner.cfg
    }

    /// The shell jobs run under, and the directory they start in by default.
    pub fn shell_and_home(&self) -> (&str, &Path) {
        (&self.inner.shell, &self.inner.home)
    }

    /// Hand a terminal session to an idle supervisor, which hosts it from
    /// then on (surviving this server), and order a replacement spare.
    pub async fn host_session(
        &self,
        spec: &crate::sessions::proto::OpenSpec,
    ) -> Result<super::zygote::Spare, JobError> {
        let spare = self.inner.zygote.hand_over(spec).await?;
        let zygote = self.inner.zygote.clone();
        self.inner.tracker.spawn(async move {
            let _ = zygote.replenish().await;
        });
        Ok(spare)
    }

    /// Start the zygote, re-adopt jobs left running by an earlier server, and
    /// start the quota cleaner.
    pub async fn start_background(&self) -> Result<(), JobError> {
        let zygote = self.inner.zygote.clone();
        zygote
            .start(&self.inner.tracker, self.inner.cancel.clone())
            .await?;
        let store = self.inner.store.clone();
        let rows = blocking(move || {
            store.list_jobs(&crate::store::JobFilter {
                status: Some(JobStatus::Running),
                limit: 100_000,
                ..Default::default()
            })
        })
        .await?;
        for row in rows {
            if row.host == "local" {
                self.adopt(row).await;
            } else if !row
                .sup_pid
                .zip(row.sup_start)
                .is_some_and(|(pid, start)| procs::same_process_alive(pid, start))
            {
                // Its channel died with the server that ran it.
                self.mark_lost(&row.id, REMOTE_OWNER_GONE).await;
            }
        }
        let this = self.clone();
        self.inner
            .tracker
            .spawn(async move { this.quota_loop().await });
        self.inner.cleanup.notify_one();
        Ok(())
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.dir.join(id)
    }

    /// Start a job; returns its id once the supervisor runs.
    pub async fn start(&self, req: StartRequest) -> Result<String, JobError> {
        let inner = &self.inner;
        if req.cmd.trim().is_empty() {
            return Err(JobError::Invalid(
                "cmd is empty; pass the shell command to run".into(),
            ));
        }
        validate_env(&req.env)?;
        if req.host != "local" {
            return self.start_remote(req).await;
        }
        let cwd = req.cwd.clone().unwrap_or_else(|| inner.home.clone());
        if !cwd.is_dir() {
            return Err(JobError::Invalid(format!(
                "cwd {} does not exist or is not a directory; pass an existing directory",
                cwd.display()
            )));
        }
        // The supervisor is chosen first so that the row names it from the
        // start: a restart can always re-adopt the job, and the start path
        // writes one row, not two.
        let spare = inner.zygote.take().await?;
        let owner = (spare.pid, spare.start);
        let id = match self
            .insert_row(
                "local",
                &req,
                Some(cwd.to_string_lossy().into_owned()),
                Some(owner),
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                inner.zygote.put_back(spare);
                return Err(e);
            }
        };

        let mut env = self.base_env(&id, req.tty.is_some());
        env.extend(req.env);
        let timeout_ms = self
            .effective_timeout(req.timeout)
            .map(|t| t.as_millis() as u64);
        let spec = Spec {
            id: id.clone(),
            dir: self.job_dir(&id),
            cmd: req.cmd,
            shell: inner.shell.clone(),
            cwd,
            env,
            stdin: req.stdin,
            tty: req.tty,
            timeout_ms,
            timeout_grace_ms: inner.cfg.timeout_grace_ms,
            segment_size: inner.cfg.segment_size,
            output_cap: inner.cfg.output_cap,
        };
        let spare = match inner.zygote.give(spare, &spec).await {
            Ok(spare) => spare,
            Err(e) => {
                let end = JobEnd {
                    spool_bytes: 0,
                    status: JobStatus::Failed,
                    exit_code: None,
                    signal: None,
                    reason: Some(e.to_string()),
                    ended_ms: now_ms(),
                    total_bytes: 0,
                    total_lines: 0,
                };
                let store = inner.store.clone();
                let jid = id.clone();
                let _ = blocking(move || store.finish_job(&jid, &end)).await;
                return Err(e);
            }
        };
        let (pid, start) = (spare.pid, spare.start);
        let (tx, rx) = watch::channel(Progress::default());
        lock(&inner.live).insert(id.clone(), rx);
        let this = self.clone();
        let jid = id.clone();
        inner.tracker.spawn(async move {
            if (pid, start) != owner {
                // The chosen spare had died while idle and another took the job.
                let store = this.inner.store.clone();
                let rid = jid.clone();
                if let Err(e) = quick(&this.inner.store, move || {
                    store.set_supervisor(&rid, pid, start)
                })
                .await
                {
                    tracing::error!(job = %jid, "cannot record the supervisor: {e}");
                }
            }
            this.watch_job(jid, pid, start, tx, Some(spare.conn)).await
        });
        Ok(id)
    }

    /// The job's timeout after the configured hard limit.
    fn effective_timeout(&self, asked: Option<Duration>) -> Option<Duration> {
        match (asked, self.inner.cfg.max_runtime) {
            (Some(t), 0) => Some(t),
            (Some(t), max) => Some(t.min(Duration::from_secs(max))),
            (None, 0) => None,
            (None, max) => Some(Duration::from_secs(max)),
        }
    }

    /// Variables every job gets, before the caller's own.
    fn base_env(&self, id: &str, tty: bool) -> Vec<(String, String)> {
        vec![
            ("NO_COLOR".to_owned(), "1".to_owned()),
            ("PAGER".to_owned(), "cat".to_owned()),
            ("GIT_PAGER".to_owned(), "cat".to_owned()),
            ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
            (
                "TERM".to_owned(),
                if tty { "xterm-256color" } else { "dumb" }.to_owned(),
            ),
            ("MCPSH_JOB".to_owned(), id.to_owned()),
        ]
    }

    /// Inserts the `running` row of a new job on `host`, under the
    /// concurrency limit; returns its id.
    /// Insert the job's row; `owner` is the process that runs it when known
    /// now (the server itself for an SSH job).
    async fn insert_row(
        &self,
        host: &str,
        req: &StartRequest,
        cwd: Option<String>,
        owner: Option<(i32, u64)>,
    ) -> Result<String, JobError> {
        let store = self.inner.store.clone();
        let max = self.inner.cfg.max_concurrent;
        let title = req.title.clone();
        let cmd = req.cmd.clone();
        let host = host.to_owned();
        let tty = req.tty.is_some();
        let interactive = req.stdin == StdinMode::Interactive;
        quick(&self.inner.store, move || -> Result<String, JobError> {
            let running = store.count_running()?;
            if running >= max {
                return Err(JobError::TooMany { running, max });
            }
            for _ in 0..16 {
                let id = id::new_id(title.as_deref(), &cmd);
                let row = JobRow {
                    title: title.clone(),
                    cwd: cwd.clone(),
                    tty,
                    interactive,
                    sup_pid: owner.map(|o| o.0),
                    sup_start: owner.map(|o| o.1),
                    ..JobRow::running(id.clone(), host.clone(), cmd.clone(), now_ms())
                };
                // The supervisor creates the job's directory when it first
                // needs it: most short jobs leave no file at all.
                if store.insert_job(&row)? {
                    return Ok(id);
                }
            }
            Err(JobError::Spawn("could not allocate a unique job id".into()))
        })
        .await
    }

    /// Starts a job on an SSH host: an exec channel drained into a local
    /// spool by a task of this server (see `remote.rs`).
    async fn start_remote(&self, req: StartRequest) -> Result<String, JobError> {
        let inner = &self.inner;
        let Some(pool) = inner.ssh.clone() else {
            return Err(JobError::Invalid(format!(
                "host {:?} is not available: SSH is not configured in this server",
                req.host
            )));
        };
        let cwd = req.cwd.as_ref().map(|c| c.to_string_lossy().into_owned());
        // The server owns the job: a restart finds it lost.
        let id = self
            .insert_row(&req.host, &req, cwd.clone(), server_identity())
            .await?;
        let mut env = self.base_env(&id, req.tty.is_some());
        env.extend(req.env.iter().cloned());
        let fail = |e: JobError| async {
            self.record_end(
                &id,
                ExitStatus {
                    status: "failed".into(),
                    exit_code: None,
                    signal: None,
                    reason: Some(e.to_string()),
                    ended_ms: now_ms(),
                    total_bytes: 0,
                    kill: None,
                    again: false,
                },
            )
            .await;
            Err(e)
        };
        let exec = match remote::exec_string(&req.cmd, cwd.as_deref(), &env) {
            Ok(e) => e,
            Err(e) => return fail(e).await,
        };
        // A command that reads nothing and needs no terminal goes through
        // the connection's exec agent when it runs: no channel, login shell
        // or sh to start (see `ssh/agent.rs`).
        let fast = match (req.tty, &req.stdin) {
            (None, StdinMode::Null) => {
                let run = match super::direct::plain_words(&req.cmd) {
                    Some(words) => Run::Argv(words.into_iter().map(str::to_owned).collect()),
                    None => Run::Shell(req.cmd.clone()),
                };
                pool.fast(&req.host, cwd.as_deref(), &env, run).await
            }
            _ => None,
        };
        let (ch, stdin) = match fast {
            Some(p) => (RemoteProc::Agent(p), None),
            None => {
                let ch = match pool.exec(&req.host, &exec, req.tty).await {
                    Ok(ch) => ch,
                    Err(e) => return fail(JobError::Spawn(e.to_string())).await,
                };
                let stdin = ch.stdin();
                if let Err(e) = remote::feed_stdin(&stdin, &req.stdin, req.tty.is_some()).await {
                    return fail(JobError::Spawn(e)).await;
                }
                (RemoteProc::Channel(ch), Some(stdin))
            }
        };
        let (pid_tx, pid_rx) = watch::channel(None);
        let job = Arc::new(RemoteJob {
            alias: req.host.clone(),
            stdin,
            pid: pid_rx,
            ended_by: Mutex::new(None),
            killing: tokio::sync::Mutex::new(()),
            done: Notify::new(),
        });
        lock(&inner.remote).insert(id.clone(), job.clone());
        let (tx, rx) = watch::channel(Progress::default());
        lock(&inner.live).insert(id.clone(), rx);
        let sink = remote::Sink {
            spool: super::spool::SpoolWriter::new(
                &self.job_dir(&id),
                inner.cfg.segment_size,
                inner.cfg.output_cap,
            ),
            render: req.tty.map(|_| super::render::TtyRender::default()),
            last_newline: true,
            error: None,
        };
        let this = self.clone();
        let jid = id.clone();
        let timeout = self.effective_timeout(req.timeout);
        let grace = Duration::from_millis(inner.cfg.timeout_grace_ms);
        inner.tracker.spawn(async move {
            let driver = remote::Driver {
                pool,
                job,
                id: jid.clone(),
                pid_tx,
                tx: tx.clone(),
                timeout,
                grace,
            };
            let status = remote::drive(driver, ch, sink).await;
            let end = this.end_of(&jid, &status);
            this.conclude(&jid, end, &tx).await;
            lock(&this.inner.remote).remove(&jid);
        });
        Ok(id)
    }

    /// Re-adopt a job a previous server left running, or settle it.
    async fn adopt(&self, row: JobRow) {
        let dir = self.job_dir(&row.id);
        if let Some(status) = read_status(&dir) {
            self.finalize(&row.id, status).await;
            return;
        }
        match (row.sup_pid, row.sup_start) {
            (Some(pid), Some(start)) if procs::same_process_alive(pid, start) => {
                let (tx, rx) = watch::channel(Progress::default());
                lock(&self.inner.live).insert(row.id.clone(), rx);
                let this = self.clone();
                self.inner.tracker.spawn(async move { this.watch_job(row.id, pid, start, tx, None).await });
            }
            _ => {
                self.mark_lost(&row.id, "its supervisor process is gone and left no exit status (was the machine rebooted?)")
                    .await
            }
        }
    }

    /// Follow a job to its end: first on `handed` (the connection the job was
    /// handed over on) when there is one, then on its control socket, falling
    /// back to its status file and the supervisor's liveness.
    async fn watch_job(
        &self,
        id: String,
        pid: i32,
        start: u64,
        tx: watch::Sender<Progress>,
        handed: Option<Conn>,
    ) {
        let dir = self.job_dir(&id);
        let sock = dir.join(CONTROL_SOCKET);
        let mut next_conn = handed.map(|c| (c, true));
        loop {
            let conn = match next_conn.take() {
                Some(c) => Some(c),
                None => match UnixStream::connect(&sock).await.and_then(Conn::from_tokio) {
                    Ok(c) => c
                        .write_all(&request_line(&Request::Watch))
                        .await
                        .ok()
                        .map(|()| (c, false)),
                    Err(_) => None,
                },
            };
            if let Some((mut conn, handed)) = conn {
                loop {
                    let next = tokio::select! {
                        l = conn.read_line() => l,
                        _ = self.inner.cancel.cancelled() => return,
                    };
                    let Ok(Some(line)) = next else { break };
                    match serde_json::from_slice::<Event>(&line) {
                        Ok(Event::Out { bytes }) => {
                            tx.send_modify(|p| p.bytes = bytes);
                        }
                        Ok(Event::Exit(status)) => {
                            let again = status.again;
                            let end = self.end_of(&id, &status);
                            let recorded = self.conclude(&id, end, &tx).await;
                            let mut back = false;
                            if handed && recorded {
                                // Confirming the exit (the supervisor need
                                // not write status.json) and taking the
                                // supervisor back follow the row.
                                let confirmed = conn
                                    .write_all(&request_line(&Request::ExitRecorded))
                                    .await
                                    .is_ok();
                                if confirmed && again && conn.drained() {
                                    self.inner.zygote.put_back(Spare { pid, start, conn });
                                    back = true;
                                }
                            }
                            if !back {
                                self.replenish_soon();
                            }
                            return;
                        }
                        _ => {}
                    }
                }
            }
            if let Some(status) = read_status(&dir) {
                let (end, _) = self.finalize(&id, status).await;
                tx.send_modify(|p| p.end = Some(end));
                lock(&self.inner.live).remove(&id);
                return;
            }
            if !procs::same_process_alive(pid, start) {
                // It may have written its status just before exiting.
                let end = match read_status(&dir) {
                    Some(status) => self.finalize(&id, status).await.0,
                    None => {
                        self.mark_lost(
                            &id,
                            "its supervisor process exited without recording an exit status",
                        )
                        .await;
                        JobStatus::Lost
                    }
                };
                tx.send_modify(|p| p.end = Some(end));
                lock(&self.inner.live).remove(&id);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = self.inner.cancel.cancelled() => return,
            }
        }
    }

    /// Record a job's end; returns its status and whether the row was written.
    async fn finalize(&self, id: &str, status: ExitStatus) -> (JobStatus, bool) {
        self.replenish_soon();
        self.record_end(id, status).await
    }

    /// A job ended and its supervisor did not come back as a spare (its job
    /// left processes behind, or it answered elsewhere): fork a replacement,
    /// after a moment so as not to compete with the next start.
    fn replenish_soon(&self) {
        let zygote = self.inner.zygote.clone();
        self.inner.tracker.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(e) = zygote.replenish().await {
                tracing::warn!("cannot prepare spare supervisors: {e}");
            }
        });
    }

    /// Writes a job's end to its row; returns its status and whether the row
    /// was written.
    async fn record_end(&self, id: &str, status: ExitStatus) -> (JobStatus, bool) {
        let end = self.end_of(id, &status);
        (end.status, self.write_end(id, end).await)
    }

    /// A job's end as its row will hold it: `status` with the totals of its
    /// spool.
    fn end_of(&self, id: &str, status: &ExitStatus) -> JobEnd {
        end_from_status(&self.job_dir(id), status)
    }

    /// Writes `end` to the job's row; returns whether it was written.
    async fn write_end(&self, id: &str, end: JobEnd) -> bool {
        let store = self.inner.store.clone();
        let id = id.to_owned();
        let written = quick(&self.inner.store, move || {
            match store.finish_job(&id, &end) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(job = %id, "cannot record the job's end: {e}");
                    false
                }
            }
        })
        .await;
        self.inner.cleanup.notify_one();
        written
    }

    /// The end of a job this server watched: the call waiting for it answers
    /// first, then the row is written, off that call's path (its readers here
    /// see the end meanwhile, through [`Jobs::settle`]). A crash in between
    /// loses nothing for a local job: its supervisor writes `status.json`
    /// unless told the row holds the exit. A remote job's row is then marked
    /// lost on restart, as for any remote job the crash interrupted (its
    /// output is in the spool). Returns whether the row was written.
    async fn conclude(&self, id: &str, end: JobEnd, tx: &watch::Sender<Progress>) -> bool {
        let status = end.status;
        lock(&self.inner.ending).insert(id.to_owned(), end.clone());
        tx.send_modify(|p| p.end = Some(status));
        tokio::task::yield_now().await;
        let written = self.write_end(id, end).await;
        lock(&self.inner.ending).remove(id);
        lock(&self.inner.live).remove(id);
        written
    }

    /// Lays over a running row the end this server has published but not
    /// yet written.
    fn settle(&self, row: &mut JobRow) {
        if !row.status.is_final()
            && let Some(end) = lock(&self.inner.ending).get(&row.id)
        {
            row.apply_end(end);
        }
    }

    async fn mark_lost(&self, id: &str, reason: &str) {
        let store = self.inner.store.clone();
        let dir = self.job_dir(id);
        let id = id.to_owned();
        let reason = reason.to_owned();
        blocking(move || {
            let (total_bytes, total_lines) = spool_totals(&dir);
            let _ = store.finish_job(
                &id,
                &JobEnd {
                    spool_bytes: dir_size(&dir),
                    status: JobStatus::Lost,
                    exit_code: None,
                    signal: None,
                    reason: Some(reason),
                    ended_ms: now_ms(),
                    total_bytes,
                    total_lines,
                },
            );
        })
        .await;
    }

    /// The live progress channel of a job this server watches.
    pub fn progress(&self, id: &str) -> Option<watch::Receiver<Progress>> {
        lock(&self.inner.live).get(id).cloned()
    }

    /// The progress channel of `id`, adopting it first if it runs but no watcher
    /// of this server follows it (it was started by another mcpsh process).
    /// `None` when the job is not running.
    async fn watched(&self, id: &str) -> Option<watch::Receiver<Progress>> {
        if let Some(rx) = self.progress(id) {
            return Some(rx);
        }
        let row = self.row(id).await.ok()?;
        if row.status.is_final() || row.host != "local" {
            // A remote job is followed only by the server that started it.
            return None;
        }
        self.adopt(row).await;
        self.progress(id)
    }

    /// Wait until the job ends, its output grows past `beyond` bytes (when
    /// given), `deadline` passes, or `cancel` fires; returns at once for a job
    /// that is not running (read its row for the outcome). `on_tick` is called about
    /// once a second with the current progress (for progress notifications).
    pub async fn wait(
        &self,
        id: &str,
        deadline: tokio::time::Instant,
        beyond: Option<u64>,
        cancel: &CancellationToken,
        mut on_tick: impl FnMut(&Progress),
    ) -> Progress {
        let Some(mut rx) = self.watched(id).await else {
            return Progress::default();
        };
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        loop {
            {
                let p = rx.borrow_and_update();
                if p.end.is_some() || beyond.is_some_and(|b| p.bytes > b) {
                    return p.clone();
                }
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return rx.borrow().clone();
                    }
                }
                _ = tick.tick() => on_tick(&rx.borrow()),
                _ = tokio::time::sleep_until(deadline) => return rx.borrow().clone(),
                _ = cancel.cancelled() => return rx.borrow().clone(),
            }
        }
    }

    /// Row for `id`, or NotFound.
    pub async fn row(&self, id: &str) -> Result<JobRow, JobError> {
        let store = self.inner.store.clone();
        let jid = id.to_owned();
        let mut row = blocking(move || store.get_job(&jid))
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_owned()))?;
        self.settle(&mut row);
        Ok(row)
    }

    /// Open the spool of `id` (a snapshot of its current length).
    pub async fn spool(&self, id: &str) -> Result<SpoolReader, JobError> {
        let row = self.row(id).await?;
        let dir = self.job_dir(id);
        blocking(move || open_spool(&dir, &row)).await
    }

    /// Build a view of a job from its row and its output, in one trip to a
    /// blocking thread: `f` returns the view and the agent's new read
    /// position, which is stored when it moved. `bounded` says `f` reads no
    /// more than a budget's worth (an excerpt, a page), so it may run inline.
    pub async fn read_view<T, F>(&self, id: &str, bounded: bool, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce(&JobRow, &SpoolReader) -> std::io::Result<(T, u64)> + Send + 'static,
    {
        let this = self.clone();
        let dir = self.job_dir(id);
        let id = id.to_owned();
        let view = move || {
            let mut row = this
                .inner
                .store
                .get_job(&id)?
                .ok_or_else(|| JobError::NotFound(id.clone()))?;
            this.settle(&mut row);
            let reader = open_spool(&dir, &row)?;
            let (view, cursor) = f(&row, &reader)?;
            if cursor != row.poll_cursor {
                this.inner.store.set_poll_cursor(&id, cursor)?;
            }
            Ok(view)
        };
        if bounded {
            quick(&self.inner.store, view).await
        } else {
            blocking(view).await
        }
    }

    pub async fn list(&self, filter: crate::store::JobFilter) -> Result<Vec<JobRow>, JobError> {
        let store = self.inner.store.clone();
        let status = filter.status;
        let mut rows = blocking(move || store.list_jobs(&filter)).await?;
        for row in &mut rows {
            self.settle(row);
        }
        // A job that ended a moment ago is no longer running.
        rows.retain(|r| status.is_none_or(|s| r.status == s));
        Ok(rows)
    }

    /// Send a control request to a running job.
    pub async fn control(&self, id: &str, req: Request) -> Result<Event, JobError> {
        let row = self.row(id).await?;
        if row.status.is_final() {
            return Err(JobError::NotRunning(format!(
                "{id} ({})",
                row.status.as_str()
            )));
        }
        if row.host != "local" {
            return self.control_remote(&row, req).await;
        }
        control_request(&self.job_dir(id), &req).await
    }

    async fn control_remote(&self, row: &JobRow, req: Request) -> Result<Event, JobError> {
        let closed_stdin = || {
            JobError::Control(
                "this job's stdin is closed (it was started without interactive=true or tty=true)"
                    .into(),
            )
        };
        let job = lock(&self.inner.remote).get(&row.id).cloned();
        let (Some(job), Some(pool)) = (job, self.inner.ssh.clone()) else {
            return Err(JobError::Control(format!(
                "job {} runs on {} under another mcpsh server process; act on it there",
                row.id, row.host
            )));
        };
        let control = JobError::Control;
        match req {
            Request::Write { data, eof } => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| JobError::Invalid(format!("bad write data: {e}")))?;
                let stdin = job.stdin.as_ref().ok_or_else(closed_stdin)?;
                if !bytes.is_empty() {
                    stdin.write(&bytes).await.map_err(control)?;
                }
                if eof {
                    stdin.eof().await.map_err(control)?;
                }
                Ok(Event::Ok { detail: None })
            }
            Request::Resize { cols, rows } => {
                let stdin = job.stdin.as_ref().ok_or_else(closed_stdin)?;
                stdin.resize(cols, rows).await.map_err(control)?;
                Ok(Event::Ok { detail: None })
            }
            Request::Signal { signal } => {
                let pid = job.started_pid().await.ok_or_else(|| {
                    JobError::Control("the remote command has not started yet".into())
                })?;
                let exec = crate::ssh::cmdline::argv(&[
                    "kill".to_owned(),
                    format!("-{signal}"),
                    "--".to_owned(),
                    format!("-{pid}"),
                ])
                .map_err(|e| JobError::Control(e.to_string()))?;
                let out = pool
                    .run(&job.alias, &exec, b"", 4096)
                    .await
                    .map_err(|e| JobError::Control(e.to_string()))?;
                if out.code != Some(0) {
                    return Err(JobError::Control(format!(
                        "remote kill -{signal} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(Event::Ok { detail: None })
            }
            Request::Kill { grace_ms } => {
                let report = remote::end_tree(
                    &pool,
                    &job,
                    None,
                    &row.id,
                    Duration::from_millis(grace_ms),
                    EndedBy::Kill,
                )
                .await?;
                Ok(Event::Ok {
                    detail: Some(report),
                })
            }
            Request::Watch | Request::ExitRecorded => {
                Err(JobError::Invalid("not a request for a remote job".into()))
            }
        }
    }

    /// Kill the job's whole process tree and wait for it to be recorded.
    /// Returns what the kill verified (from the supervisor's answer, or from
    /// the exit status if the answer was lost as the job ended) and the row.
    pub async fn kill(&self, id: &str) -> Result<(Option<KillReport>, JobRow), JobError> {
        let grace = self.inner.cfg.kill_grace_ms;
        let reply = self.control(id, Request::Kill { grace_ms: grace }).await;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(grace) + Duration::from_secs(8);
        self.wait(id, deadline, None, &CancellationToken::new(), |_| {})
            .await;
        let row = self.row(id).await?;
        let report = match reply {
            Ok(Event::Ok { detail }) => detail,
            Ok(Event::Error { message }) => return Err(JobError::Control(message)),
            // The job ended as the kill landed: its status says what was verified.
            Ok(_) | Err(JobError::Control(_)) if row.status.is_final() => {
                read_status(&self.job_dir(id)).and_then(|s| s.kill)
            }
            Ok(_) => None,
            Err(e) => return Err(e),
        };
        Ok((report, row))
    }

    async fn quota_loop(&self) {
        loop {
            tokio::select! {
                _ = self.inner.cleanup.notified() => {}
                _ = self.inner.cancel.cancelled() => return,
            }
            let store = self.inner.store.clone();
            let dir = self.inner.dir.clone();
            let quota = self.inner.cfg.spool_quota;
            let _ = blocking(move || enforce_quota(&store, &dir, quota)).await;
            // Debounce: at most one sweep per second however many jobs end.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.inner.cancel.cancelled() => return,
            }
        }
    }
}

/// This process's pid and start time (read once), recorded as the owner of
/// its remote jobs.
fn server_identity() -> Option<(i32, u64)> {
    static ME: std::sync::OnceLock<Option<(i32, u64)>> = std::sync::OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        procs::stat(pid).map(|s| (pid, s.start))
    })
}

const REMOTE_OWNER_GONE: &str =
    "the mcpsh server that ran it over SSH stopped, and its channel with it";

fn remove_stale_spare_sockets(jobs_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(".spares-"))
            .and_then(|n| n.strip_suffix(".sock"))
            .and_then(|n| n.parse::<i32>().ok());
        if let Some(pid) = pid
            && procs::stat(pid).is_none()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn validate_env(env: &[(String, String)]) -> Result<(), JobError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(JobError::Invalid(format!(
                "env variable {k:?} is not valid: names must be non-empty without '=' and neither may contain NUL"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Between answering a job's caller and writing its row, every reader of
    /// this server (one row, a page, a list filtered by status) sees the end;
    /// once it is gone from `ending` they see the store again.
    #[tokio::test]
    async fn an_end_not_yet_written_is_what_readers_see() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let jobs = Jobs::new(
            JobsConfig::default(),
            dir.path().join("jobs"),
            store.clone(),
            PathBuf::from("/nonexistent"),
            None,
            TaskTracker::new(),
            CancellationToken::new(),
        )
        .unwrap();
        let row = JobRow::running("j-1".into(), "local".into(), "true".into(), 1);
        store.insert_job(&row).unwrap();
        let end = JobEnd {
            spool_bytes: 0,
            status: JobStatus::Exited,
            exit_code: Some(4),
            signal: None,
            reason: None,
            ended_ms: 9,
            total_bytes: 3,
            total_lines: 1,
        };
        lock(&jobs.inner.ending).insert("j-1".into(), end);
        let running = || crate::store::JobFilter {
            status: Some(JobStatus::Running),
            limit: 10,
            ..Default::default()
        };

        let got = jobs.row("j-1").await.unwrap();
        assert_eq!(
            (got.status, got.exit_code, got.ended_ms),
            (JobStatus::Exited, Some(4), Some(9))
        );
        let viewed = jobs
            .read_view("j-1", true, |row, _| Ok(((row.status, row.total_bytes), 0)))
            .await
            .unwrap();
        assert_eq!(viewed, (JobStatus::Exited, 3));
        assert!(jobs.list(running()).await.unwrap().is_empty());

        lock(&jobs.inner.ending).remove("j-1");
        assert_eq!(jobs.row("j-1").await.unwrap().status, JobStatus::Running);
        assert_eq!(jobs.list(running()).await.unwrap().len(), 1);
    }
}
