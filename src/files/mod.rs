//! The `file` tools' engine for host `local`: bounded reads, atomic writes,
//! edits, moves, listings and searches. Every path an agent gives goes through
//! [`Scope`], which confines it to the configured roots without races (the
//! kernel resolves it with `openat2(RESOLVE_BENEATH)`), and every answer stays
//! within a byte budget and says how to get the rest.
//!
//! Nothing here spawns a process or a shell: searching uses ripgrep's
//! libraries, and agent text is only ever data (a path, a pattern), never an
//! option or a command. Remote hosts will plug in behind the same calls.

mod scope;

pub use scope::Scope;

use std::path::{Path, PathBuf};

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
