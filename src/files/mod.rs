//! The `file` tools' engine for host `local`: bounded reads, atomic writes,
//! edits, moves, listings and searches. Every path an agent gives goes through
//! [`Scope`], which confines it to the configured roots without races (the
//! kernel resolves it with `openat2(RESOLVE_BENEATH)`), and every answer stays
//! within a byte budget and says how to get the rest.
//!
//! Nothing here spawns a process or a shell: searching uses ripgrep's
//! libraries, and agent text is only ever data (a path, a pattern), never an
//! option or a command. SSH hosts have their own engine in `remote/` (SFTP,
//! and a search program run as an argv), which answers with the same types
//! built by the same rules.

pub mod grep;
pub mod list;
pub mod ops;
pub mod read;
pub mod remote;
mod scope;
pub mod write;

pub use scope::Scope;

use std::path::{Path, PathBuf};

/// The file engine of one server: where paths may reach, and the line
/// indexes of recently read files. Calls block; run them off the runtime.
pub struct Files {
    pub scope: Scope,
    pub indexes: read::LineIndexes,
}

impl Files {
    /// Confined to `roots` when there are any; relative paths start at the
    /// first root, or at `home` without roots.
    pub fn new(roots: &[PathBuf], home: PathBuf) -> Result<Files, FileError> {
        let scope = if roots.is_empty() {
            Scope::unconfined(home)
        } else {
            Scope::confined(roots)?
        };
        Ok(Files {
            scope,
            indexes: read::LineIndexes::default(),
        })
    }
}

/// Why a file operation could not be done; every message says what to try.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error(
        "{path} is outside the directories this server may touch ({roots}); use a path under one of them"
    )]
    Outside { path: PathBuf, roots: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// An I/O error on `path`, with "not found" made explicit.
    pub(crate) fn io(path: &Path, source: impl Into<std::io::Error>) -> FileError {
        let source = source.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            FileError::NotFound(path.to_owned())
        } else {
            FileError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// A file type in words, from `st_mode`.
pub fn kind_of(mode: u32) -> &'static str {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::RegularFile => "file",
        rustix::fs::FileType::Directory => "dir",
        rustix::fs::FileType::Symlink => "symlink",
        rustix::fs::FileType::Fifo => "fifo",
        rustix::fs::FileType::Socket => "socket",
        rustix::fs::FileType::CharacterDevice => "char device",
        rustix::fs::FileType::BlockDevice => "block device",
        rustix::fs::FileType::Unknown => "special file",
    }
}
