//! The composition root: opens state, builds the job engine, and starts the
//! transports. The CLI calls into here; nothing below depends on it.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use crate::audit::Audit;
use crate::auth::{Auth, AuthConfig, Principal};
use crate::config::Config;
use crate::files::Files;
use crate::files::remote::RemoteHosts;
use crate::jobs::{JobError, Jobs};
use crate::ssh::Pool;
use crate::store::{Store, StoreError};

/// Errors while starting mcpsh.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error(transparent)]
    Sessions(#[from] crate::sessions::SessionError),
    #[error("file roots")]
    Files(#[from] crate::files::FileError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How `serve` runs its HTTP front.
pub struct HttpOptions {
    /// Extra `Host` names to accept.
    pub extra_hosts: Vec<String>,
    /// The URL clients use (also the OAuth issuer).
    pub public_url: Option<String>,
    /// OAuth and bearer tokens; None only for `--insecure-no-auth`.
    pub auth: Option<AuthConfig>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Remove audit rows older than `keep_days`, now and then daily.
async fn prune_audit(audit: Audit, keep_days: u64, cancel: CancellationToken) {
    loop {
        let a = audit.clone();
        let cutoff = crate::store::now_ms() - (keep_days as i64) * 86_400_000;
        match tokio::task::spawn_blocking(move || a.prune(cutoff)).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, keep_days, "pruned old audit rows"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the audit log"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(86_400)) => {}
        }
    }
}

/// The OS user running mcpsh: who "the owner" is in the audit log.
fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid-{}", rustix::process::getuid().as_raw()))
}

/// A running mcpsh core: state, the job engine, and shutdown plumbing.
pub struct App {
    pub config: Config,
    pub jobs: Jobs,
    pub sessions: crate::sessions::Sessions,
    pub files: Arc<Files>,
    /// SSH hosts, when the inventory could be read.
    pub ssh: Option<Pool>,
    pub remote_files: Option<RemoteHosts>,
    pub store: Store,
    pub audit: Audit,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
}

/// Open the state database under the configured state directory.
pub fn open_store(config: &Config) -> Result<Store, AppError> {
    crate::fsutil::create_private_dir(&config.state_dir).map_err(|source| AppError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    Ok(Store::open(&config.db_path())?)
}

impl App {
    /// Open state and start the job engine (zygote, re-adoption, quota).
    /// `exe` is the mcpsh binary that serves as the job zygote.
    pub async fn start(config: Config, exe: PathBuf) -> Result<App, AppError> {
        let store = open_store(&config)?;
        store.checkpoint_in_background()?;
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let ssh = match Pool::load_or_empty(config.ssh.clone()) {
            Ok(pool) => {
                if let Some(why) = pool.problem() {
                    tracing::warn!("SSH hosts are unavailable until this is fixed: {why}");
                }
                pool.start_reaper(&tracker, cancel.clone());
                Some(pool)
            }
            Err(e) => {
                tracing::warn!("SSH hosts are unavailable: {e}");
                None
            }
        };
        let jobs = Jobs::new(
            config.jobs.clone(),
            config.jobs_dir(),
            store.clone(),
            exe,
            ssh.clone(),
            tracker.clone(),
            cancel.clone(),
        )?;
        jobs.start_background().await?;
        let sessions = crate::sessions::Sessions::new(
            config.sessions.clone(),
            config.terms_dir(),
            store.clone(),
            jobs.clone(),
            ssh.clone(),
            tracker.clone(),
            cancel.clone(),
        )?;
        sessions.reconcile().await?;
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| "/".into());
        let files = Arc::new(Files::new(&config.files.roots, home)?);
        let audit = Audit::new(store.clone());
        if config.audit.keep_days > 0 {
            tracker.spawn(prune_audit(
                audit.clone(),
                config.audit.keep_days,
                cancel.clone(),
            ));
        }
        Ok(App {
            config,
            jobs,
            sessions,
            files,
            remote_files: ssh.clone().map(RemoteHosts::new),
            ssh,
            audit,
            store,
            tracker,
            cancel,
        })
    }

    fn services(&self, default_principal: Option<Principal>) -> crate::mcp::Services {
        crate::mcp::Services {
            jobs: self.jobs.clone(),
            sessions: self.sessions.clone(),
            ssh: self.ssh.clone(),
            remote_files: self.remote_files.clone(),
            files: self.files.clone(),
            audit: self.audit.clone(),
            default_principal,
        }
    }

    /// Serve Streamable HTTP on `listener` until [`App::shutdown`]. With
    /// `opts.auth`, `/mcp` needs a bearer and the OAuth routes are served;
    /// without it every caller is the owner (loopback testing only).
    pub async fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        opts: HttpOptions,
    ) -> Result<(), AppError> {
        let addr = listener.local_addr()?;
        let mut guard = crate::http::Guard::for_addr(addr, &opts.extra_hosts);
        if let Some(url) = &opts.public_url {
            guard = guard.with_public_url(url);
        }
        let auth = opts
            .auth
            .map(|cfg| Auth::new(self.store.clone(), self.audit.clone(), cfg));
        let owner = auth.is_none().then(|| Principal::owner(local_user()));
        let service = crate::mcp::http_service(self.services(owner), self.cancel.child_token());
        let router = crate::http::router(service, guard, auth);
        match opts.tls {
            Some(tls) => {
                crate::http::tls::run_tls(listener, tls, router, self.cancel.clone()).await?
            }
            None => crate::http::run(listener, router, self.cancel.clone()).await?,
        }
        Ok(())
    }

    /// Serve MCP on stdin/stdout until the client disconnects. The client
    /// that spawned mcpsh is the owner.
    pub async fn serve_stdio(&self) -> Result<(), AppError> {
        crate::mcp::serve_stdio(self.services(Some(Principal::owner(local_user())))).await?;
        Ok(())
    }

    /// Stop background tasks. Running jobs are not touched: they belong to
    /// their supervisors and are re-adopted by the next server.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.tracker.wait()).await;
    }
}
