//! `file_write` content changes on an SSH host, with the local engine's
//! rules and messages: `write` (a temp file in the same directory, fsynced
//! when the server can, given the old file's mode and owner, renamed over the
//! target with `posix-rename`), `append`, and `edit` (the shared matching of
//! [`apply_edits`]).

use std::io;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::files::scope::split;
use crate::files::write::{
    Edit, Written, apply_edits, check_edit_size, check_edits, hash_mismatch, no_file_for_hash,
    not_writable, symlink_not_written, temp_name,
};
use crate::files::{FileError, kind_of};
use crate::ssh::sftp::{Attrs, File, OpenOptions};

use super::{RemoteFiles, s};

/// Bytes hashed per round trip.
const HASH_CHUNK: usize = 1 << 20;

pub(super) async fn write(
    fs: &RemoteFiles,
    path: &Path,
    content: &[u8],
    if_hash: Option<&str>,
    create_parents: bool,
) -> Result<Written, FileError> {
    if create_parents && let Some(parent) = path.parent() {
        create_dirs(fs, parent).await?;
    }
    let old = existing(fs, path).await?;
    if let Some(want) = if_hash {
        if old.is_none() {
            return Err(no_file_for_hash(path, want));
        }
        let have = sha256_of(fs, path).await?;
        if !have.eq_ignore_ascii_case(want) {
            return Err(hash_mismatch(path, want, &have));
        }
    }
    replace(fs, path, content, old.as_ref()).await?;
    Ok(Written::whole(path, content, old.is_none()))
}

pub(super) async fn append(
    fs: &RemoteFiles,
    path: &Path,
    content: &[u8],
    create_parents: bool,
) -> Result<Written, FileError> {
    if create_parents && let Some(parent) = path.parent() {
        create_dirs(fs, parent).await?;
    }
    let io = |e| FileError::io(path, e);
    let created = existing(fs, path).await?.is_none();
    let o = OpenOptions {
        write: true,
        append: true,
        create: true,
        mode: Some(0o666),
        ..OpenOptions::default()
    };
    let file = fs.sftp.open(s(path)?, o).await.map_err(io)?;
    let result = async {
        // OpenSSH appends whatever the offset; others get the end as it is now.
        let end = file.fstat().await?.size;
        file.write_at(end, content).await?;
        Ok(file.fstat().await?.size)
    }
    .await;
    let closed = file.close().await;
    let bytes = result.and_then(|b| closed.map(|()| b)).map_err(io)?;
    Ok(Written {
        path: path.display().to_string(),
        bytes,
        sha256: None,
        created,
        replacements: None,
    })
}

pub(super) async fn edit(
    fs: &RemoteFiles,
    path: &Path,
    edits: &[Edit],
    if_hash: Option<&str>,
) -> Result<Written, FileError> {
    check_edits(edits)?;
    let Some(old) = existing(fs, path).await? else {
        return Err(FileError::NotFound(path.to_owned()));
    };
    check_edit_size(path, old.size)?;
    let io = |e| FileError::io(path, e);
    let file = fs
        .sftp
        .open(s(path)?, OpenOptions::read())
        .await
        .map_err(io)?;
    // One byte more than the size, to load what is there even if it grew;
    // never more than the limit allows.
    let raw = file.read_at(0, old.size as usize + 1).await;
    let closed = file.close().await;
    let raw = raw.and_then(|r| closed.map(|()| r)).map_err(io)?;
    check_edit_size(path, raw.len() as u64)?;
    let (text, replaced) = apply_edits(raw, edits, if_hash, path)?;
    replace(fs, path, text.as_bytes(), Some(&old)).await?;
    Ok(Written {
        replacements: Some(replaced),
        ..Written::whole(path, text.as_bytes(), false)
    })
}

/// The regular file at `path`, or `None`; directories, symlinks and special
/// files are refused as the local engine refuses them.
async fn existing(fs: &RemoteFiles, path: &Path) -> Result<Option<Attrs>, FileError> {
    let Some(a) = fs.lstat_opt(path).await? else {
        return Ok(None);
    };
    if a.is_symlink() {
        let target = fs.sftp.read_link(s(path)?).await.unwrap_or_default();
        return Err(symlink_not_written(path, &target));
    }
    match kind_of(a.mode) {
        "file" => Ok(Some(a)),
        kind => Err(not_writable(path, kind)),
    }
}

/// Create `path` and any missing parents as directories (0777 less the
/// server's umask, as `mkdir -p`).
pub(super) async fn create_dirs(fs: &RemoteFiles, path: &Path) -> Result<(), FileError> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match fs.sftp.stat(s(at)?).await {
            Ok(a) if a.is_dir() => break,
            Ok(_) => {
                return Err(FileError::Invalid(format!(
                    "{} is not a directory, so nothing can be created in it",
                    at.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(at),
            Err(e) => return Err(FileError::io(at, e)),
        }
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        if let Err(e) = fs.sftp.mkdir(s(dir)?, 0o777).await {
            // Someone else may have made it meanwhile.
            match fs.sftp.stat(s(dir)?).await {
                Ok(a) if a.is_dir() => {}
                _ => return Err(FileError::io(dir, e)),
            }
        }
    }
    Ok(())
}

/// Atomically give `path` the content `content`: written to a temp file next
/// to it, which takes `old`'s mode and owner (or the umask'd default for a
/// new file), is fsynced, and then renamed over `path`. The target is left
/// untouched on any failure.
async fn replace(
    fs: &RemoteFiles,
    path: &Path,
    content: &[u8],
    old: Option<&Attrs>,
) -> Result<(), FileError> {
    let (tmp, file) = temp_file(fs, path, old.is_some()).await?;
    let filled = async {
        file.write_at(0, content).await?;
        if let Some(a) = old {
            file.set_mode(a.perm()).await?;
            // Keeps another user's file theirs when we may (as root); else ours.
            let _ = file.set_owner(a.uid, a.gid).await;
        }
        Ok(())
    }
    .await;
    commit(fs, &tmp, file, filled, path, true).await
}

/// A new, exclusive temp file next to `path` (so the rename stays on one
/// filesystem): mode 0600 when it will take an old file's mode, else 0666
/// less the server's umask, like any file created there.
pub(super) async fn temp_file(
    fs: &RemoteFiles,
    path: &Path,
    private: bool,
) -> Result<(PathBuf, File), FileError> {
    let (parent, name) = split(path)?;
    let tmp = parent.join(temp_name(&name));
    let o = OpenOptions {
        write: true,
        create: true,
        exclusive: true,
        mode: Some(if private { 0o600 } else { 0o666 }),
        ..OpenOptions::default()
    };
    // Six random bytes make a clash with an existing name as good as impossible.
    let file = fs
        .sftp
        .open(s(&tmp)?, o)
        .await
        .map_err(|e| FileError::io(path, e))?;
    Ok((tmp, file))
}

/// Finish a temp file that `filled` says was written: fsync (when the
/// server can), close, and rename it to `path` — replacing an existing
/// file when `replace`, else failing if there is one. On any failure the
/// temp file is removed.
pub(super) async fn commit(
    fs: &RemoteFiles,
    tmp: &Path,
    file: File,
    filled: io::Result<()>,
    path: &Path,
    replace: bool,
) -> Result<(), FileError> {
    let synced = match filled {
        Ok(()) => file.fsync().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let closed = file.close().await;
    let result = match synced.and(closed) {
        Err(e) => Err(FileError::io(path, e)),
        Ok(()) => rename_into_place(fs, tmp, path, replace).await,
    };
    if result.is_err() {
        let _ = fs.sftp.remove(s(tmp)?).await;
    }
    result
}

async fn rename_into_place(
    fs: &RemoteFiles,
    tmp: &Path,
    path: &Path,
    replace: bool,
) -> Result<(), FileError> {
    let (from, to) = (s(tmp)?, s(path)?);
    if !replace {
        // OpenSSH's plain rename links the new name, so it fails rather than
        // replace a file that appeared since the caller checked.
        return match fs.sftp.rename(from, to).await {
            Ok(()) => Ok(()),
            Err(e) => match fs.lstat_opt(path).await {
                Ok(Some(_)) => Err(crate::files::ops::exists(path)),
                _ => Err(FileError::io(path, e)),
            },
        };
    }
    match fs.sftp.rename_replacing(from, to).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            // A server without posix-rename: remove, then rename. Not atomic:
            // for a moment `path` does not exist.
            let _ = fs.sftp.remove(to).await;
            fs.sftp
                .rename(from, to)
                .await
                .map_err(|e| FileError::io(path, e))
        }
        Err(e) => Err(FileError::io(path, e)),
    }
}

/// sha256 of the file at `path`, streamed.
pub(super) async fn sha256_of(fs: &RemoteFiles, path: &Path) -> Result<String, FileError> {
    let io = |e| FileError::io(path, e);
    let file = fs
        .sftp
        .open(s(path)?, OpenOptions::read())
        .await
        .map_err(io)?;
    let hashed = async {
        let mut h = sha2::Sha256::new();
        let mut pos = 0;
        loop {
            let buf = file.read_at(pos, HASH_CHUNK).await?;
            if buf.is_empty() {
                return Ok(crate::crypto::hex(&h.finalize()));
            }
            h.update(&buf);
            pos += buf.len() as u64;
        }
    }
    .await;
    let closed = file.close().await;
    hashed.and_then(|h| closed.map(|()| h)).map_err(io)
}
