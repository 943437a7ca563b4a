//! The `file` tools' engine for SSH hosts: the same actions, limits and
//! answers as the local engine, over SFTP, with a command on the host only
//! where SFTP has no equivalent (`grep`: ripgrep when the host has it, else
//! grep). Answers are the local engine's types ([`ReadResult`], [`Listing`],
//! [`GrepResult`], [`StatResult`], [`Written`], [`Changed`]), built by the
//! same shared rules, so the tool renders both alike.
//!
//! It must not: put an agent's text into shell text (commands go through
//! [`Exec`] as an argv; patterns follow `-e` and paths follow `--`), load a
//! whole file (pages, byte ranges and streamed hashes; `edit` alone loads up
//! to 16 MiB), or replace a file non-atomically where the server offers
//! `posix-rename`. Paths are not confined on SSH hosts: the account's own
//! permissions are the boundary. SFTP follows symlinks when it opens a file,
//! so each open that must not is preceded by an `lstat`; a symlink swapped
//! in between the two is followed (the local engine has no such window).

mod grep;
mod hosts;
mod list;
mod ops;
mod read;
mod rules;
mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_grep;
#[cfg(test)]
mod tests_ops;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use super::FileError;
use super::grep::{GrepOptions, GrepResult};
use super::list::{ListOptions, Listing};
use super::ops::{Changed, StatResult};
use super::read::{LineIndexes, ReadRange, ReadResult};
use super::write::{Edit, Written};
use crate::ssh::sftp::{Attrs, Sftp};

pub use hosts::{RemoteHosts, session_gone};

/// A boxed future, for [`Exec`] (which must be usable as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a command on the host: `argv[0]` looked up on the host's `PATH`,
/// every element passed as one exact argument with no shell reading it
/// (over SSH, the exec request is [`crate::ssh::cmdline::argv`]), stdin
/// empty. Each output stream keeps its first `limit` bytes and says whether
/// more came. Dropping the future must end the command.
pub trait Exec: Send + Sync {
    fn run<'a>(&'a self, argv: &'a [String], limit: usize)
    -> BoxFuture<'a, io::Result<ExecOutput>>;
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; `None` when a signal ended the command.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output was left out after the first `limit` bytes.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// The file engine of one SSH host: an SFTP session for everything, a way
/// to run a command for `grep`, and the line indexes of recently read files.
pub struct RemoteFiles {
    sftp: Sftp,
    exec: Arc<dyn Exec>,
    /// The login directory, where relative paths start.
    home: PathBuf,
    indexes: LineIndexes,
    /// Which search program the host has, once asked.
    searcher: tokio::sync::OnceCell<grep::Searcher>,
}

impl RemoteFiles {
    /// An engine over `sftp`, running searches through `exec`; asks the
    /// server for the login directory.
    pub async fn new(sftp: Sftp, exec: Arc<dyn Exec>) -> Result<RemoteFiles, FileError> {
        let home = sftp
            .realpath(".")
            .await
            .map_err(|e| FileError::io(Path::new("."), e))?;
        Ok(RemoteFiles {
            sftp,
            exec,
            home: PathBuf::from(home),
            indexes: LineIndexes::default(),
            searcher: tokio::sync::OnceCell::new(),
        })
    }

    /// The login directory on the host.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The absolute form of an agent's path: relative paths start at the
    /// login directory; `.` components are dropped, `..` is kept (the server
    /// resolves it).
    pub fn absolute(&self, path: &str) -> Result<PathBuf, FileError> {
        super::scope::absolute(&self.home, path)
    }

    /// A page of a file by lines, or bytes as base64 (see [`super::read::read`]).
    pub async fn read(
        &self,
        path: &Path,
        range: &ReadRange,
        budget: usize,
    ) -> Result<ReadResult, FileError> {
        read::read(self, path, range, budget).await
    }

    /// Describe `path` itself (see [`super::ops::stat`]); `ctime` is absent
    /// (SFTP does not report it).
    pub async fn stat(&self, path: &Path, sha256: bool) -> Result<StatResult, FileError> {
        ops::stat(self, path, sha256).await
    }

    /// A page of a directory's entries (see [`super::list::list`]).
    pub async fn list(
        &self,
        dir: &Path,
        opts: &ListOptions,
        budget: usize,
    ) -> Result<Listing, FileError> {
        list::list(self, dir, opts, budget).await
    }

    /// A page of regex matches (see [`super::grep::grep`]), searched by a
    /// program on the host.
    pub async fn grep(
        &self,
        path: &Path,
        opts: &GrepOptions,
        budget: usize,
    ) -> Result<GrepResult, FileError> {
        grep::grep(self, path, opts, budget).await
    }

    /// Replace the content of `path` atomically (see [`super::write::write`]).
    pub async fn write(
        &self,
        path: &Path,
        content: &[u8],
        if_hash: Option<&str>,
        create_parents: bool,
    ) -> Result<Written, FileError> {
        write::write(self, path, content, if_hash, create_parents).await
    }

    /// Append to `path`, created if missing.
    pub async fn append(
        &self,
        path: &Path,
        content: &[u8],
        create_parents: bool,
    ) -> Result<Written, FileError> {
        write::append(self, path, content, create_parents).await
    }

    /// Exact-string replacements, all or none (see [`super::write::edit`]).
    pub async fn edit(
        &self,
        path: &Path,
        edits: &[Edit],
        if_hash: Option<&str>,
    ) -> Result<Written, FileError> {
        write::edit(self, path, edits, if_hash).await
    }

    /// Remove `path`; a directory needs `recursive`.
    pub async fn delete(&self, path: &Path, recursive: bool) -> Result<Changed, FileError> {
        ops::delete(self, path, recursive).await
    }

    /// Move `from` to `to`, never over an existing target unless `overwrite`.
    pub async fn rename(
        &self,
        from: &Path,
        to: &Path,
        overwrite: bool,
    ) -> Result<Changed, FileError> {
        ops::rename(self, from, to, overwrite).await
    }

    /// Copy `from` to `to` (a directory with `recursive`), never over an
    /// existing target unless `overwrite`.
    pub async fn copy(
        &self,
        from: &Path,
        to: &Path,
        overwrite: bool,
        recursive: bool,
    ) -> Result<Changed, FileError> {
        ops::copy(self, from, to, overwrite, recursive).await
    }
}

/// `path` as the string SFTP carries. Agent paths come from JSON strings,
/// so this fails only for paths built otherwise.
fn s(path: &Path) -> Result<&str, FileError> {
    path.to_str().ok_or_else(|| {
        FileError::Invalid(format!(
            "{} is not valid UTF-8, which SFTP paths must be here",
            path.display()
        ))
    })
}

impl RemoteFiles {
    /// `lstat`, with "not found" as `None`.
    async fn lstat_opt(&self, path: &Path) -> Result<Option<Attrs>, FileError> {
        match self.sftp.lstat(s(path)?).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::io(path, e)),
        }
    }
}
