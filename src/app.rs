//! The composition root: opens state, builds the job engine, and starts the
//! transports. The CLI calls into here; nothing below depends on it.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use crate::config::Config;
use crate::files::Files;
use crate::jobs::{JobError, Jobs};
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

/// A running mcpsh core: state, the job engine, and shutdown plumbing.
pub struct App {
    pub config: Config,
    pub jobs: Jobs,
    pub files: Arc<Files>,
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
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let jobs = Jobs::new(
            config.jobs.clone(),
            config.jobs_dir(),
            store,
            exe,
            tracker.clone(),
            cancel.clone(),
        )?;
        jobs.start_background().await?;
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| "/".into());
        let files = Arc::new(Files::new(&config.files.roots, home)?);
        Ok(App {
            config,
            jobs,
            files,
            tracker,
            cancel,
        })
    }

    /// Serve Streamable HTTP on `listener` until [`App::shutdown`].
    pub async fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        extra_hosts: &[String],
    ) -> Result<(), AppError> {
        let addr = listener.local_addr()?;
        let guard = crate::http::Guard::for_addr(addr, extra_hosts);
        let service = crate::mcp::http_service(
            self.jobs.clone(),
            self.files.clone(),
            self.cancel.child_token(),
        );
        let router = crate::http::router(service, guard);
        crate::http::run(listener, router, self.cancel.clone()).await?;
        Ok(())
    }

    /// Serve MCP on stdin/stdout until the client disconnects.
    pub async fn serve_stdio(&self) -> Result<(), AppError> {
        crate::mcp::serve_stdio(self.jobs.clone(), self.files.clone()).await?;
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
