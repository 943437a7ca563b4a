//! An SFTP client over any byte stream (an SSH `sftp` subsystem channel, or a
//! local `sftp-server` in tests), reduced to what the remote file engine
//! needs and speaking mcpsh's own plain types: [`Attrs`], [`DirEntry`],
//! [`OpenOptions`], and `std::io::Error` whose kind keeps "not found",
//! "permission denied" and "unsupported" apart, with the server's message.
//!
//! Built on russh-sftp's raw session rather than its high-level one, because
//! that hides the OpenSSH extensions this engine relies on: `posix-rename`
//! (atomic replace), `fsync`, `copy-data` (server-side copy), `statvfs`
//! (same filesystem?) and `users-groups-by-id` (owner names). A [`File`]'s
//! reads and writes are pipelined (`file.rs`).
//!
//! It must not interpret paths: they go to the server exactly as given. Only
//! `ssh/` names russh types; nothing of russh-sftp leaks out of this file.

use std::io;
use std::sync::Arc;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::rawsession::Limits;
use russh_sftp::client::{Config, RawSftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

mod file;

pub use file::File;

/// How long one request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Bytes per read or write request (OpenSSH's server allows up to 255 KiB).
const IO_LEN: u32 = 64 * 1024;
/// Bytes one `copy-data` request copies, so each finishes within the timeout.
const COPY_STEP: u64 = 64 << 20;

const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";
const STATVFS: &str = "statvfs@openssh.com";
const COPY_DATA: &str = "copy-data";
const USERS_GROUPS: &str = "users-groups-by-id@openssh.com";
const LIMITS: &str = "limits@openssh.com";

/// File type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;

/// An SFTP session. Requests from several tasks may run at once.
pub struct Sftp {
    raw: Arc<RawSftpSession>,
    ext: Extensions,
    io_len: u32,
    /// Closes of handles dropped without [`File::close`] (a cancelled call).
    closer: TaskTracker,
}

/// The protocol extensions the server offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    pub posix_rename: bool,
    pub fsync: bool,
    pub statvfs: bool,
    pub copy_data: bool,
    pub users_groups: bool,
}

/// Attributes of a file, as the server reports them (0 where it did not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: u64,
    /// `st_mode`: the file type bits and the permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Unix seconds.
    pub atime: i64,
    pub mtime: i64,
}

impl Attrs {
    fn from_sftp(a: &FileAttributes) -> Attrs {
        Attrs {
            size: a.size.unwrap_or(0),
            mode: a.permissions.unwrap_or(0),
            uid: a.uid.unwrap_or(0),
            gid: a.gid.unwrap_or(0),
            atime: a.atime.map_or(0, i64::from),
            mtime: a.mtime.map_or(0, i64::from),
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == 0o100000
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == 0o040000
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == 0o120000
    }

    /// The permission bits (`0o7777`).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// One directory entry (never `.` or `..`), with its `lstat` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub attrs: Attrs,
}

/// How to open a file. Paths are followed if they are symlinks (SFTP has no
/// `O_NOFOLLOW`): check with [`Sftp::lstat`] first where that matters.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub create: bool,
    pub truncate: bool,
    /// With `create`: fail if the file exists.
    pub exclusive: bool,
    /// Permissions of a created file (the server's umask applies).
    pub mode: Option<u32>,
}

impl OpenOptions {
    pub fn read() -> OpenOptions {
        OpenOptions {
            read: true,
            ..OpenOptions::default()
        }
    }
}

impl Sftp {
    /// Start the SFTP protocol on `stream` (an `sftp` subsystem channel).
    pub async fn new<S>(stream: S) -> io::Result<Sftp>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = Config {
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            ..Config::default()
        };
        let mut raw = RawSftpSession::new_with_config(stream, config);
        let version = raw.init().await.map_err(io_error)?;
        let has = |name: &str| version.extensions.contains_key(name);
        let ext = Extensions {
            posix_rename: has(POSIX_RENAME),
            fsync: has(FSYNC),
            statvfs: has(STATVFS),
            copy_data: has(COPY_DATA),
            users_groups: has(USERS_GROUPS),
        };
        let mut io_len = IO_LEN;
        if has(LIMITS) {
            let limits = Limits::from(raw.limits().await.map_err(io_error)?);
            for l in [limits.read_len, limits.write_len].into_iter().flatten() {
                // Room for the request's own header within a write's limit.
                io_len = io_len.min(u32::try_from(l.saturating_sub(1024)).unwrap_or(u32::MAX));
            }
            io_len = io_len.max(1024);
            raw.set_limits(limits);
        }
        Ok(Sftp {
            raw: Arc::new(raw),
            ext,
            io_len,
            closer: TaskTracker::new(),
        })
    }

    pub fn extensions(&self) -> Extensions {
        self.ext
    }

    /// The absolute, canonical form of `path` (`.` is the login directory).
    pub async fn realpath(&self, path: &str) -> io::Result<String> {
        let name = self.raw.realpath(path).await.map_err(io_error)?;
        name.files
            .into_iter()
            .next()
            .map(|f| f.filename)
            .ok_or_else(|| io::Error::other("the SFTP server gave no path for realpath"))
    }

    /// Attributes of `path`, following symlinks.
    pub async fn stat(&self, path: &str) -> io::Result<Attrs> {
        let a = self.raw.stat(path).await.map_err(io_error)?;
        Ok(Attrs::from_sftp(&a.attrs))
    }

    /// Attributes of `path` itself (a symlink is not followed).
    pub async fn lstat(&self, path: &str) -> io::Result<Attrs> {
        let a = self.raw.lstat(path).await.map_err(io_error)?;
        Ok(Attrs::from_sftp(&a.attrs))
    }

    /// Where the symlink `path` points.
    pub async fn read_link(&self, path: &str) -> io::Result<String> {
        let name = self.raw.readlink(path).await.map_err(io_error)?;
        name.files
            .into_iter()
            .next()
            .map(|f| f.filename)
            .ok_or_else(|| io::Error::other("the SFTP server gave no target for readlink"))
    }

    /// The entries of directory `path`, unsorted, at most `max` of them;
    /// `complete` is false when there were more.
    pub async fn read_dir(&self, path: &str, max: usize) -> io::Result<ReadDir> {
        let handle = self.raw.opendir(path).await.map_err(io_error)?.handle;
        let mut entries = Vec::new();
        let mut complete = true;
        let result = loop {
            if entries.len() > max {
                entries.truncate(max);
                complete = false;
                break Ok(());
            }
            match self.raw.readdir(handle.as_str()).await {
                Ok(name) => entries.extend(
                    name.files
                        .into_iter()
                        .filter(|f| f.filename != "." && f.filename != "..")
                        .map(|f| DirEntry {
                            attrs: Attrs::from_sftp(&f.attrs),
                            name: f.filename,
                        }),
                ),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(e) => break Err(io_error(e)),
            }
        };
        let closed = self.raw.close(handle).await.map_err(io_error);
        result.and(closed)?;
        Ok(ReadDir { entries, complete })
    }

    pub async fn open(&self, path: &str, o: OpenOptions) -> io::Result<File> {
        let mut flags = OpenFlags::empty();
        for (on, flag) in [
            (o.read, OpenFlags::READ),
            (o.write, OpenFlags::WRITE),
            (o.append, OpenFlags::APPEND),
            (o.create, OpenFlags::CREATE),
            (o.truncate, OpenFlags::TRUNCATE),
            (o.exclusive, OpenFlags::EXCLUDE),
        ] {
            if on {
                flags |= flag;
            }
        }
        let attrs = FileAttributes {
            permissions: o.mode,
            ..FileAttributes::empty()
        };
        let handle = self
            .raw
            .open(path, flags, attrs)
            .await
            .map_err(io_error)?
            .handle;
        Ok(File::new(
            self.raw.clone(),
            handle,
            self.io_len,
            self.ext,
            self.closer.clone(),
        ))
    }

    /// Create directory `path` with `mode` (the server's umask applies).
    pub async fn mkdir(&self, path: &str, mode: u32) -> io::Result<()> {
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        self.raw.mkdir(path, attrs).await.map_err(io_error)?;
        Ok(())
    }

    pub async fn rmdir(&self, path: &str) -> io::Result<()> {
        self.raw.rmdir(path).await.map_err(io_error)?;
        Ok(())
    }

    /// Remove a file or a symlink (not what it points to).
    pub async fn remove(&self, path: &str) -> io::Result<()> {
        self.raw.remove(path).await.map_err(io_error)?;
        Ok(())
    }

    /// Set the permission bits of `path` (following symlinks).
    pub async fn set_mode(&self, path: &str, mode: u32) -> io::Result<()> {
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        self.raw.setstat(path, attrs).await.map_err(io_error)?;
        Ok(())
    }

    /// The protocol's rename. OpenSSH never replaces an existing target with
    /// it (a regular file moves by `link` + `unlink`, anything else after a
    /// check that the target is absent); other servers may differ.
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.raw.rename(from, to).await.map_err(io_error)?;
        Ok(())
    }

    /// `rename(2)` on the server: replaces `to` atomically. `Unsupported`
    /// when the server lacks `posix-rename@openssh.com`.
    pub async fn rename_replacing(&self, from: &str, to: &str) -> io::Result<()> {
        if !self.ext.posix_rename {
            return Err(unsupported(POSIX_RENAME));
        }
        let mut data = Vec::new();
        put_string(&mut data, from.as_bytes());
        put_string(&mut data, to.as_bytes());
        status(self.raw.extended(POSIX_RENAME, data).await)
    }

    /// Create symlink `link` pointing to `target`.
    pub async fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        // OpenSSH reads SSH_FXP_SYMLINK's two paths in the reverse of the
        // draft's order (target first), and other servers follow it; russh-sftp
        // sends its first argument first.
        self.raw.symlink(target, link).await.map_err(io_error)?;
        Ok(())
    }

    /// Copy bytes from `from` to `to` on the server (`copy-data`), up to
    /// `from`'s end. `Ok(false)` when the server cannot: copy through the
    /// client instead.
    pub async fn copy_data(&self, from: &File, to: &File) -> io::Result<bool> {
        if !self.ext.copy_data {
            return Ok(false);
        }
        let size = from.fstat().await?.size;
        let mut offset = 0;
        while offset < size {
            let len = COPY_STEP.min(size - offset);
            let mut data = Vec::new();
            put_string(&mut data, from.handle().as_bytes());
            data.extend_from_slice(&offset.to_be_bytes());
            data.extend_from_slice(&len.to_be_bytes());
            put_string(&mut data, to.handle().as_bytes());
            data.extend_from_slice(&offset.to_be_bytes());
            status(self.raw.extended(COPY_DATA, data).await)?;
            offset += len;
        }
        Ok(true)
    }

    /// An id of the filesystem holding `path` (`statvfs`), if the server says.
    pub async fn fs_id(&self, path: &str) -> io::Result<Option<u64>> {
        if !self.ext.statvfs {
            return Ok(None);
        }
        let st = self.raw.statvfs(path).await.map_err(io_error)?;
        Ok(Some(st.fs_id))
    }

    /// The user name of `uid` and group name of `gid` on the server, where
    /// it knows them and offers `users-groups-by-id@openssh.com`.
    pub async fn names(&self, uid: u32, gid: u32) -> io::Result<(Option<String>, Option<String>)> {
        if !self.ext.users_groups {
            return Ok((None, None));
        }
        let mut data = Vec::new();
        put_string(&mut data, &uid.to_be_bytes());
        put_string(&mut data, &gid.to_be_bytes());
        let reply = match self.raw.extended(USERS_GROUPS, data).await {
            Ok(Packet::ExtendedReply(r)) => r.data,
            other => return status(other).map(|()| (None, None)),
        };
        // string usernames (a list of strings), string groupnames (likewise).
        let mut rest = reply.as_slice();
        let mut first_name = || -> Option<String> {
            let mut list = get_string(&mut rest)?;
            let name = get_string(&mut list)?;
            (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
        };
        let user = first_name();
        let group = first_name();
        Ok((user, group))
    }

    /// End the session once the closes of dropped handles went out.
    pub async fn close(&self) {
        self.closer.close();
        self.closer.wait().await;
        let _ = self.raw.close_session();
    }
}

/// What [`Sftp::read_dir`] found.
#[derive(Debug, Clone, Default)]
pub struct ReadDir {
    pub entries: Vec<DirEntry>,
    /// False when the directory had more entries than asked for.
    pub complete: bool,
}

/// An SSH wire string: length, then bytes.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn get_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let s = buf.get(4..4 + len)?;
    *buf = &buf[4 + len..];
    Some(s)
}

/// The outcome of a request answered by a status.
fn status(reply: Result<Packet, SftpError>) -> io::Result<()> {
    match reply {
        Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
        Ok(Packet::Status(s)) => Err(io_error(SftpError::Status(s))),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the SFTP server answered with an unexpected packet",
        )),
        Err(e) => Err(io_error(e)),
    }
}

fn unsupported(ext: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the SFTP server does not offer {ext}"),
    )
}

/// An SFTP error as an `io::Error` of the matching kind, with the server's
/// message.
fn io_error(e: SftpError) -> io::Error {
    use io::ErrorKind as K;
    match e {
        SftpError::Status(s) => {
            let kind = match s.status_code {
                StatusCode::NoSuchFile => K::NotFound,
                StatusCode::PermissionDenied => K::PermissionDenied,
                StatusCode::Eof => K::UnexpectedEof,
                StatusCode::OpUnsupported => K::Unsupported,
                StatusCode::BadMessage => K::InvalidData,
                StatusCode::NoConnection | StatusCode::ConnectionLost => K::ConnectionAborted,
                StatusCode::Ok | StatusCode::Failure => K::Other,
            };
            let message = if s.error_message.is_empty() {
                s.status_code.to_string()
            } else {
                s.error_message
            };
            io::Error::new(kind, message)
        }
        SftpError::Timeout => io::Error::new(
            K::TimedOut,
            format!("the SFTP server did not answer within {REQUEST_TIMEOUT_SECS} s"),
        ),
        SftpError::Limited(m) => io::Error::new(K::InvalidInput, m),
        SftpError::IO(m) => io::Error::new(K::ConnectionAborted, format!("SFTP stream: {m}")),
        SftpError::UnexpectedPacket => io::Error::new(
            K::InvalidData,
            "the SFTP server answered with an unexpected packet",
        ),
        SftpError::UnexpectedBehavior(m) => io::Error::new(
            K::ConnectionAborted,
            format!("the SFTP session failed: {m}"),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
