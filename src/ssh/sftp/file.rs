//! An open remote file: reads and writes at offsets, pipelined ([`WINDOW`]
//! requests in flight), attributes, fsync, close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, StatusCode};
use tokio_util::task::TaskTracker;

use super::{Attrs, Extensions, io_error};

/// Requests in flight at once when reading or writing a range.
const WINDOW: usize = 16;

/// An open file. Call [`File::close`]; one dropped unclosed is closed in the
/// background.
pub struct File {
    raw: Arc<RawSftpSession>,
    handle: String,
    closed: bool,
    io_len: u32,
    ext: Extensions,
    closer: TaskTracker,
}

impl File {
    pub(super) fn new(
        raw: Arc<RawSftpSession>,
        handle: String,
        io_len: u32,
        ext: Extensions,
        closer: TaskTracker,
    ) -> File {
        File {
            raw,
            handle,
            closed: false,
            io_len,
            ext,
            closer,
        }
    }

    /// The server's handle, for extension requests.
    pub(super) fn handle(&self) -> &str {
        &self.handle
    }

    /// Up to `len` bytes from `offset`; fewer only at the end of the file.
    pub async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let step = self.io_len as usize;
        let mut out = Vec::with_capacity(len.min(WINDOW * step));
        while out.len() < len {
            let (at, want) = (offset + out.len() as u64, len - out.len());
            let sizes: Vec<usize> = (0..want.div_ceil(step).min(WINDOW))
                .map(|k| step.min(want - k * step))
                .collect();
            let reads = sizes.iter().enumerate().map(|(k, &n)| {
                self.raw
                    .read(self.handle.as_str(), at + (k * step) as u64, n as u32)
            });
            let mut answers = join_all(reads.collect()).await.into_iter().zip(&sizes);
            let mut end = false;
            while let Some((answer, &asked)) = answers.next() {
                let mut data = match answer {
                    Ok(d) => d.data,
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => Vec::new(),
                    Err(e) => return Err(io_error(e)),
                };
                data.truncate(asked);
                out.extend_from_slice(&data);
                if data.len() < asked {
                    // The end of the file, or a server that sent less than
                    // asked: then later answers start at the wrong place, and
                    // the next round starts at the gap. An empty answer after
                    // it means the end.
                    end = data.is_empty()
                        || answers.any(|(a, _)| match a {
                            Ok(d) => d.data.is_empty(),
                            Err(SftpError::Status(s)) => s.status_code == StatusCode::Eof,
                            Err(_) => false,
                        });
                    break;
                }
            }
            if end {
                break;
            }
        }
        Ok(out)
    }

    /// Write all of `data` at `offset`.
    pub async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let step = self.io_len as usize;
        for (w, window) in data.chunks(step * WINDOW).enumerate() {
            let base = offset + (w * step * WINDOW) as u64;
            let writes = window.chunks(step).enumerate().map(|(k, chunk)| {
                self.raw.write(
                    self.handle.as_str(),
                    base + (k * step) as u64,
                    chunk.to_vec(),
                )
            });
            for r in join_all(writes.collect()).await {
                r.map_err(io_error)?;
            }
        }
        Ok(())
    }

    pub async fn fstat(&self) -> io::Result<Attrs> {
        let a = self
            .raw
            .fstat(self.handle.as_str())
            .await
            .map_err(io_error)?;
        Ok(Attrs::from_sftp(&a.attrs))
    }

    /// Set the permission bits.
    pub async fn set_mode(&self, mode: u32) -> io::Result<()> {
        self.set(FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        })
        .await
    }

    /// Set the owner (only root may give a file away).
    pub async fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        self.set(FileAttributes {
            uid: Some(uid),
            gid: Some(gid),
            ..FileAttributes::empty()
        })
        .await
    }

    async fn set(&self, attrs: FileAttributes) -> io::Result<()> {
        self.raw
            .fsetstat(self.handle.as_str(), attrs)
            .await
            .map_err(io_error)?;
        Ok(())
    }

    /// Flush to stable storage; `Ok(false)` when the server cannot.
    pub async fn fsync(&self) -> io::Result<bool> {
        if !self.ext.fsync {
            return Ok(false);
        }
        self.raw
            .fsync(self.handle.as_str())
            .await
            .map_err(io_error)?;
        Ok(true)
    }

    pub async fn close(mut self) -> io::Result<()> {
        self.closed = true;
        self.raw
            .close(std::mem::take(&mut self.handle))
            .await
            .map_err(io_error)?;
        Ok(())
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (raw, handle) = (self.raw.clone(), std::mem::take(&mut self.handle));
        self.closer.spawn_on(
            async move {
                let _ = raw.close(handle).await;
            },
            &runtime,
        );
    }
}

/// Run `futures` concurrently on this task; their results in order. (The
/// raw session sends a request when its future is first polled, so this is
/// what puts several requests in flight.)
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
