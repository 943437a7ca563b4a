//! One [`RemoteFiles`] per SSH host, over the connection pool: an SFTP
//! session kept open for the host's file calls (one channel of its
//! connection), reopened when the connection died, and an [`Exec`] that
//! runs an argv as one exec request.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use super::{BoxFuture, Exec, ExecOutput, RemoteFiles};
use crate::files::FileError;
use crate::ssh::{Pool, cmdline, sftp::Sftp};

/// The file engines of SSH hosts; cheap to clone.
#[derive(Clone)]
pub struct RemoteHosts {
    pool: Pool,
    engines: Arc<tokio::sync::Mutex<HashMap<String, Arc<RemoteFiles>>>>,
}

/// Runs an argv on one host through the pool.
struct SshExec {
    pool: Pool,
    host: String,
}

impl Exec for SshExec {
    fn run<'a>(
        &'a self,
        argv: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, io::Result<ExecOutput>> {
        Box::pin(async move {
            let exec = cmdline::argv(argv)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let out = self
                .pool
                .run(&self.host, &exec, b"", limit.saturating_add(1))
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let cut = |mut v: Vec<u8>| {
                let over = v.len() > limit;
                v.truncate(limit);
                (v, over)
            };
            let (stdout, so) = cut(out.stdout);
            let (stderr, se) = cut(out.stderr);
            Ok(ExecOutput {
                code: out.code.map(|c| c as i32),
                stdout,
                stderr,
                stdout_truncated: so || out.dropped > 0,
                stderr_truncated: se,
            })
        })
    }
}

impl RemoteHosts {
    pub fn new(pool: Pool) -> RemoteHosts {
        RemoteHosts {
            pool,
            engines: Arc::default(),
        }
    }

    /// The engine of `host`, opening an SFTP session when there is none.
    pub async fn get(&self, host: &str) -> Result<Arc<RemoteFiles>, FileError> {
        let mut engines = self.engines.lock().await;
        if let Some(e) = engines.get(host) {
            return Ok(e.clone());
        }
        let fail = |e: crate::ssh::SshError| FileError::Invalid(e.to_string());
        // The stream holds its channel slot for as long as the session lives.
        let stream = self.pool.sftp_stream(host).await.map_err(fail)?;
        let sftp = Sftp::new(stream).await.map_err(|e| {
            FileError::Invalid(format!("{host}: cannot start an SFTP session: {e}"))
        })?;
        let exec = Arc::new(SshExec {
            pool: self.pool.clone(),
            host: host.to_owned(),
        });
        let engine = Arc::new(RemoteFiles::new(sftp, exec).await?);
        engines.insert(host.to_owned(), engine.clone());
        Ok(engine)
    }

    /// Forgets `host`'s engine (after its session failed), so the next call
    /// opens a new one.
    pub async fn forget(&self, host: &str, engine: &Arc<RemoteFiles>) {
        let mut engines = self.engines.lock().await;
        if engines.get(host).is_some_and(|e| Arc::ptr_eq(e, engine)) {
            engines.remove(host);
        }
    }
}

/// Whether `e` means the SFTP session (or its connection) is gone rather
/// than that the operation failed.
pub fn session_gone(e: &FileError) -> bool {
    match e {
        FileError::Io { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}
