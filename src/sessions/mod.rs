//! Terminal sessions: named, persistent shells an agent drives with `exec`,
//! `write` and `read`, and a person can watch with `mcpsh attach`.
//!
//! Every session has a directory under the state dir with its control
//! socket (`proto.rs`), its transcript and, once ended, `status.json`. A
//! local session is hosted by a supervisor process (`local.rs`), so it
//! outlives the server; an SSH session is hosted in the server on its
//! pooled connection (`remote.rs`) and serves the same socket. Either way
//! the state machine is `term.rs`, and this manager only starts sessions,
//! finds them by `(host, name)` in SQLite and forwards requests.

mod local;
pub mod marker;
pub mod proto;
mod remote;
pub mod shell;
pub mod socket;
pub mod term;

pub use local::host as host_local;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::config::SessionsConfig;
use crate::host::Host;
use crate::jobs::Jobs;
use crate::ssh::Pool;
use crate::store::{Store, TermRow};
use proto::{CONTROL_SOCKET, Ended, Info, OpenSpec, Request, Response, STATUS_FILE, Started};

/// Errors written for a model to act on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no open session named {name:?} on {host}; open one with session action=open name={name:?}{}",
        reason.as_ref().map(|r| format!(" (the last one ended: {r})")).unwrap_or_default()
    )]
    NotFound {
        host: String,
        name: String,
        reason: Option<String>,
    },
    #[error("could not start the session: {0}")]
    Start(String),
    #[error("session {name:?}: {message}")]
    Call { name: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What `open` asks for.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub host: Host,
    pub name: String,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub shell: Option<String>,
    pub size: Option<(u16, u16)>,
}

/// A session found or started by `open`.
#[derive(Debug, Clone)]
pub struct Opened {
    pub info: Info,
    pub reused: bool,
    pub transcript: PathBuf,
}

/// Handle to the session manager; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SessionsConfig,
    dir: PathBuf,
    store: Store,
    jobs: Jobs,
    ssh: Option<Pool>,
    tracker: tokio_util::task::TaskTracker,
    /// Ends SSH sessions (and their remote processes) when the server stops.
    cancel: tokio_util::sync::CancellationToken,
    /// One `open` at a time, so two calls cannot both create `(host, name)`.
    opening: tokio::sync::Mutex<()>,
}

/// Closed sessions whose transcripts are kept (newest first).
const KEEP_CLOSED: usize = 32;

/// How long a request may take beyond its own wait.
const SLACK: Duration = Duration::from_secs(10);

/// Host names as rows store them.
fn host_key(h: &Host) -> &str {
    match h {
        Host::Local => "local",
        Host::Ssh(n) => n,
    }
}

fn valid_name(name: &str) -> Result<(), SessionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(SessionError::Invalid(format!(
            "session name {name:?} is not valid: use 1-64 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
        )))
    }
}

impl Sessions {
    pub fn new(
        cfg: SessionsConfig,
        dir: PathBuf,
        store: Store,
        jobs: Jobs,
        ssh: Option<Pool>,
        tracker: tokio_util::task::TaskTracker,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Sessions, SessionError> {
        crate::fsutil::create_private_dir(&dir)
            .map_err(|e| SessionError::Start(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Sessions {
            inner: Arc::new(Inner {
                cfg,
                dir,
                store,
                jobs,
                ssh,
                tracker,
                cancel,
                opening: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Settle the rows of sessions that ended while no server watched, and
    /// of SSH sessions, which end with the server that held their connection.
    pub async fn reconcile(&self) -> Result<(), SessionError> {
        for row in self.inner.store.list_terms(0)? {
            if row.host != "local" {
                self.inner.store.close_term(
                    &row.id,
                    "the server restarted; a session on an SSH host ends with the server's connection",
                    crate::store::now_ms(),
                )?;
                continue;
            }
            let _ = self.live(&row).await;
        }
        self.prune();
        Ok(())
    }

    /// Remove the directories (transcripts) and rows of closed sessions
    /// beyond the newest [`KEEP_CLOSED`], so disk use stays bounded.
    fn prune(&self) {
        let Ok(old) = self.inner.store.closed_terms_beyond(KEEP_CLOSED) else {
            return;
        };
        for row in old {
            let dir = Path::new(&row.dir);
            // Only ever a directory this manager made.
            if dir.parent() == Some(self.inner.dir.as_path()) {
                let _ = std::fs::remove_dir_all(dir);
            }
            let _ = self.inner.store.delete_term(&row.id);
        }
    }

    /// Is the session of `row` alive? A dead one's row is closed with the
    /// reason its host left (or `lost`).
    async fn live(&self, row: &TermRow) -> Option<Info> {
        let sock = Path::new(&row.dir).join(CONTROL_SOCKET);
        if let Ok(Response::Info(info)) = socket::call(&sock, &Request::Info, SLACK).await
            && info.exit_reason.is_none()
        {
            return Some(info);
        }
        let reason = ended_reason(Path::new(&row.dir));
        let _ = self
            .inner
            .store
            .close_term(&row.id, &reason, crate::store::now_ms());
        None
    }

    /// Reuse the open session `(host, name)` or start it.
    pub async fn open(&self, req: OpenRequest) -> Result<Opened, SessionError> {
        valid_name(&req.name)?;
        let _one = self.inner.opening.lock().await;
        let host = host_key(&req.host).to_owned();
        if let Some(row) = self.inner.store.open_term(&host, &req.name)?
            && let Some(info) = self.live(&row).await
        {
            return Ok(Opened {
                info,
                reused: true,
                transcript: Path::new(&row.dir).join(proto::TRANSCRIPT),
            });
        }
        self.prune();
        let open = self.inner.store.list_terms(0)?.len();
        if open >= self.inner.cfg.max_open {
            return Err(SessionError::Invalid(format!(
                "{open} sessions are open, the most allowed ([sessions] max_open); close one with session action=close"
            )));
        }
        let id = crate::jobs::id::new_id(Some(&req.name), "term");
        let dir = self.inner.dir.join(&id);
        let (shell_default, home) = self.inner.jobs.shell_and_home();
        let remote = matches!(req.host, Host::Ssh(_));
        let shell = match (&req.shell, remote) {
            (Some(s), false) => s.clone(),
            (Some(s), true) if shell::has_hooks(s) => "bash".into(),
            (Some(s), true) => {
                return Err(SessionError::Invalid(format!(
                    "SSH sessions run bash; shell {s:?} is not available there"
                )));
            }
            (None, true) => "bash".into(),
            (None, false) => shell_default.to_owned(),
        };
        for (k, _) in &req.env {
            if !crate::ssh::cmdline::valid_env_name(k) {
                return Err(SessionError::Invalid(format!(
                    "env name {k:?} is not a valid variable name"
                )));
            }
        }
        let (cols, rows) = req
            .size
            .unwrap_or((self.inner.cfg.cols, self.inner.cfg.rows));
        if !(1..=1000).contains(&cols) || !(1..=500).contains(&rows) {
            return Err(SessionError::Invalid(
                "cols must be 1..=1000 and rows 1..=500".into(),
            ));
        }
        let cwd = match (&req.cwd, remote) {
            (Some(c), _) => PathBuf::from(c),
            (None, true) => PathBuf::new(),
            (None, false) => home.to_owned(),
        };
        if !remote && !cwd.is_dir() {
            return Err(SessionError::Invalid(format!(
                "cwd {} is not a directory on this machine",
                cwd.display()
            )));
        }
        let spec = OpenSpec {
            session: id.clone(),
            name: req.name.clone(),
            dir: dir.clone(),
            shell: shell.clone(),
            cwd,
            env: req.env.clone(),
            cols,
            rows,
            idle_secs: self.inner.cfg.idle_secs,
            transcript_cap: self.inner.cfg.transcript_cap,
            segment_size: self.inner.jobs.config().segment_size,
        };
        let (sup_pid, sup_start) = match &req.host {
            Host::Local => self.start_local(&spec).await?,
            Host::Ssh(alias) => self.start_remote(alias, &spec).await?,
        };
        let row = TermRow {
            id: id.clone(),
            name: req.name.clone(),
            host: host.clone(),
            dir: dir.to_string_lossy().into_owned(),
            shell,
            sup_pid: Some(sup_pid),
            sup_start: Some(sup_start),
            created_ms: crate::store::now_ms(),
            closed_ms: None,
            reason: None,
        };
        // An earlier row of this name (dead, or closed by `live`) is settled.
        if let Some(old) = self.inner.store.open_term(&host, &req.name)? {
            self.inner.store.close_term(
                &old.id,
                &ended_reason(Path::new(&old.dir)),
                crate::store::now_ms(),
            )?;
        }
        self.inner.store.insert_term(&row)?;
        let sock = dir.join(CONTROL_SOCKET);
        let info = match socket::call(&sock, &Request::Info, SLACK).await {
            Ok(Response::Info(i)) => i,
            other => {
                return Err(SessionError::Start(format!(
                    "the session started but does not answer: {other:?}"
                )));
            }
        };
        Ok(Opened {
            info,
            reused: false,
            transcript: dir.join(proto::TRANSCRIPT),
        })
    }

    async fn start_local(&self, spec: &OpenSpec) -> Result<(i32, u64), SessionError> {
        let spare = self
            .inner
            .jobs
            .host_session(spec)
            .await
            .map_err(|e| SessionError::Start(e.to_string()))?;
        let (pid, start) = (spare.pid, spare.start);
        let stream = spare
            .conn
            .into_tokio()
            .map_err(|e| SessionError::Start(format!("cannot talk to the session host: {e}")))?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        let read = tokio::time::timeout(SLACK, reader.read_line(&mut line)).await;
        let started: Started = match read {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).map_err(|e| {
                SessionError::Start(format!("bad answer from the session host: {e}"))
            })?,
            _ => {
                return Err(SessionError::Start(
                    "the session host did not report its shell within 10 s".into(),
                ));
            }
        };
        match (started.shell_pid, started.error) {
            (Some(_), _) => Ok((pid, start)),
            (None, e) => Err(SessionError::Start(
                e.unwrap_or_else(|| "the shell did not start".into()),
            )),
        }
    }

    async fn start_remote(&self, alias: &str, spec: &OpenSpec) -> Result<(i32, u64), SessionError> {
        let Some(pool) = &self.inner.ssh else {
            return Err(SessionError::Start("SSH hosts are not configured".into()));
        };
        crate::fsutil::create_private_dir(&spec.dir).map_err(|e| {
            SessionError::Start(format!("cannot create {}: {e}", spec.dir.display()))
        })?;
        let term = remote::open(
            pool,
            alias,
            spec,
            &self.inner.tracker,
            self.inner.cancel.clone(),
        )
        .await
        .map_err(SessionError::Start)?;
        let sock = spec.dir.join(CONTROL_SOCKET);
        let listener = tokio::net::UnixListener::bind(&sock)
            .map_err(|e| SessionError::Start(format!("cannot bind {}: {e}", sock.display())))?;
        let (store, dir, id) = (
            self.inner.store.clone(),
            spec.dir.clone(),
            spec.session.clone(),
        );
        self.inner.tracker.spawn(async move {
            let reason = tokio::select! {
                _ = socket::serve(listener, term.clone()) => "the session socket failed".to_owned(),
                r = term.wait_exit() => r,
            };
            write_ended(&dir, &reason);
            let _ = std::fs::remove_file(dir.join(CONTROL_SOCKET));
            let _ = store.close_term(&id, &reason, crate::store::now_ms());
        });
        let me = std::process::id() as i32;
        let start = crate::jobs::procs::stat(me).map_or(0, |s| s.start);
        Ok((me, start))
    }

    /// Send `req` to the open session `(host, name)`.
    pub async fn call(
        &self,
        host: &Host,
        name: &str,
        req: Request,
    ) -> Result<Response, SessionError> {
        valid_name(name)?;
        let row = self.find(host, name)?;
        let wait = match &req {
            Request::Exec { wait_ms, .. } | Request::Read { wait_ms, .. } => *wait_ms,
            _ => 0,
        };
        let sock = Path::new(&row.dir).join(CONTROL_SOCKET);
        match socket::call(&sock, &req, Duration::from_millis(wait) + SLACK).await {
            Ok(r) => Ok(r),
            Err(e) => match self.live(&row).await {
                None => Err(SessionError::NotFound {
                    host: row.host,
                    name: name.to_owned(),
                    reason: Some(ended_reason(Path::new(&row.dir))),
                }),
                Some(_) => Err(SessionError::Call {
                    name: name.to_owned(),
                    message: format!("the request failed: {e}"),
                }),
            },
        }
    }

    fn find(&self, host: &Host, name: &str) -> Result<TermRow, SessionError> {
        let key = host_key(host);
        self.inner
            .store
            .open_term(key, name)?
            .ok_or_else(|| SessionError::NotFound {
                host: key.to_owned(),
                name: name.to_owned(),
                reason: self.last_reason(key, name),
            })
    }

    fn last_reason(&self, host: &str, name: &str) -> Option<String> {
        let rows = self.inner.store.list_terms(50).ok()?;
        rows.into_iter()
            .find(|r| r.host == host && r.name == name)
            .and_then(|r| r.reason)
    }

    /// Close `(host, name)`: the shell is hung up and its processes end.
    pub async fn close(&self, host: &Host, name: &str) -> Result<String, SessionError> {
        let row = self.find(host, name)?;
        let sock = Path::new(&row.dir).join(CONTROL_SOCKET);
        let _ = socket::call(&sock, &Request::Close, SLACK).await;
        // The host writes why it ended; give it a moment.
        for _ in 0..250 {
            if Path::new(&row.dir).join(STATUS_FILE).exists() || !sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reason = "closed".to_owned();
        self.inner
            .store
            .close_term(&row.id, &reason, crate::store::now_ms())?;
        Ok(reason)
    }

    /// Open sessions with their state (hosts filtered by `allow`), and recently
    /// closed ones with why they ended.
    pub async fn list(&self, allow: impl Fn(&str) -> bool) -> Result<Vec<Listed>, SessionError> {
        list(&self.inner.store, allow).await
    }
}

/// One row of a session list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub row: TermRow,
    pub info: Option<Info>,
}

/// Sessions from `store` with live state from their sockets; rows of
/// sessions found dead are closed. Used by the server and the CLI.
pub async fn list(
    store: &Store,
    allow: impl Fn(&str) -> bool,
) -> Result<Vec<Listed>, SessionError> {
    let mut out = Vec::new();
    for row in store.list_terms(10)? {
        if !allow(&row.host) {
            continue;
        }
        let mut row = row;
        let info = if row.closed_ms.is_none() {
            let sock = Path::new(&row.dir).join(CONTROL_SOCKET);
            match socket::call(&sock, &Request::Info, SLACK).await {
                Ok(Response::Info(i)) if i.exit_reason.is_none() => Some(i),
                _ => {
                    let reason = ended_reason(Path::new(&row.dir));
                    let now = crate::store::now_ms();
                    let _ = store.close_term(&row.id, &reason, now);
                    row.closed_ms = Some(now);
                    row.reason = Some(reason);
                    None
                }
            }
        } else {
            None
        };
        out.push(Listed { row, info });
    }
    Ok(out)
}

/// Why the session in `dir` ended, from its `status.json`, else `lost`.
fn ended_reason(dir: &Path) -> String {
    std::fs::read(dir.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Ended>(&b).ok())
        .map(|e| e.reason)
        .unwrap_or_else(|| "lost: its host process is gone without a status".into())
}

/// Record why the session in `dir` ended (`status.json`, 0600, atomic).
fn write_ended(dir: &Path, reason: &str) {
    let ended = Ended {
        reason: reason.to_owned(),
        ended_ms: crate::store::now_ms(),
    };
    if let Err(e) = crate::fsutil::write_private(
        &dir.join(STATUS_FILE),
        &serde_json::to_vec(&ended).unwrap_or_default(),
    ) {
        tracing::error!("cannot write {}: {e}", dir.join(STATUS_FILE).display());
    }
}
