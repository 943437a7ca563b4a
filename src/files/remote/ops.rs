//! `stat`, `delete`, `move` and `copy` on an SSH host, with the local
//! engine's rules and messages: symlinks are described, removed and copied
//! as symlinks, never followed; a directory is deleted or copied only with
//! `recursive`; a move or copy never lands on an existing target unless
//! `overwrite`.

use std::path::Path;

use crate::files::ops::{
    Changed, MAX_DEPTH, StatResult, exists, needs_recursive, no_merge, no_sha256, not_copied,
    too_deep,
};
use crate::files::{FileError, kind_of};
use crate::ssh::sftp::{Attrs, DirEntry, OpenOptions};

use super::write::{commit, sha256_of, temp_file};
use super::{RemoteFiles, s};

/// Entries of one directory that `delete` and `copy` take in at once.
const DIR_BATCH: usize = 100_000;
/// Bytes copied per round trip when the server cannot copy by itself.
const COPY_CHUNK: usize = 1 << 20;

pub(super) async fn stat(
    fs: &RemoteFiles,
    path: &Path,
    sha256: bool,
) -> Result<StatResult, FileError> {
    let a = fs
        .sftp
        .lstat(s(path)?)
        .await
        .map_err(|e| FileError::io(path, e))?;
    let kind = kind_of(a.mode);
    let link_target = match kind {
        "symlink" => Some(fs.sftp.read_link(s(path)?).await.unwrap_or_default()),
        _ => None,
    };
    let sha256 = match (sha256, kind) {
        (true, "file") => Some(sha256_of(fs, path).await?),
        (true, other) => return Err(no_sha256(path, other)),
        _ => None,
    };
    let (owner, group) = fs.sftp.names(a.uid, a.gid).await.unwrap_or((None, None));
    Ok(StatResult {
        path: path.display().to_string(),
        kind,
        size: a.size,
        mode: format!("{:04o}", a.perm()),
        uid: a.uid,
        gid: a.gid,
        owner,
        group,
        mtime: a.mtime,
        atime: a.atime,
        ctime: None,
        link_target,
        sha256,
    })
}

pub(super) async fn delete(
    fs: &RemoteFiles,
    path: &Path,
    recursive: bool,
) -> Result<Changed, FileError> {
    let a = fs
        .sftp
        .lstat(s(path)?)
        .await
        .map_err(|e| FileError::io(path, e))?;
    let entries = if a.is_dir() {
        if !recursive {
            return Err(needs_recursive(path, "delete"));
        }
        Box::pin(remove_tree(fs, path, 0)).await?
    } else {
        fs.sftp
            .remove(s(path)?)
            .await
            .map_err(|e| FileError::io(path, e))?;
        1
    };
    Ok(Changed {
        path: path.display().to_string(),
        to: None,
        entries,
        bytes: None,
        replaced: false,
    })
}

/// Remove the directory `path` and everything in it; the entries removed.
async fn remove_tree(fs: &RemoteFiles, path: &Path, depth: usize) -> Result<u64, FileError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path, "delete"));
    }
    let mut count = 0;
    loop {
        // Removing what one batch held makes room for the next.
        let batch = children(fs, path).await?;
        for e in &batch.entries {
            let child = path.join(&e.name);
            if e.attrs.is_dir() {
                count += Box::pin(remove_tree(fs, &child, depth + 1)).await?;
            } else {
                fs.sftp
                    .remove(s(&child)?)
                    .await
                    .map_err(|e| FileError::io(&child, e))?;
                count += 1;
            }
        }
        if batch.complete {
            break;
        }
    }
    fs.sftp
        .rmdir(s(path)?)
        .await
        .map_err(|e| FileError::io(path, e))?;
    Ok(count + 1)
}

async fn children(fs: &RemoteFiles, path: &Path) -> Result<crate::ssh::sftp::ReadDir, FileError> {
    fs.sftp
        .read_dir(s(path)?, DIR_BATCH)
        .await
        .map_err(|e| FileError::io(path, e))
}

pub(super) async fn rename(
    fs: &RemoteFiles,
    from: &Path,
    to: &Path,
    overwrite: bool,
) -> Result<Changed, FileError> {
    fs.sftp
        .lstat(s(from)?)
        .await
        .map_err(|e| FileError::io(from, e))?;
    let target = fs.lstat_opt(to).await?;
    if target.is_some() && !overwrite {
        return Err(exists(to));
    }
    let moved = if overwrite {
        match fs.sftp.rename_replacing(s(from)?, s(to)?).await {
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                // No posix-rename: the protocol's rename never replaces, so
                // a file target goes first (not atomic).
                if target.is_some_and(|t| !t.is_dir()) {
                    let _ = fs.sftp.remove(s(to)?).await;
                }
                fs.sftp.rename(s(from)?, s(to)?).await
            }
            other => other,
        }
    } else {
        // OpenSSH moves a regular file by link + unlink, which fails if the
        // target appeared since the check above; anything else it renames
        // after checking again, which leaves a short window in which a
        // directory created at `to` could still be replaced.
        fs.sftp.rename(s(from)?, s(to)?).await
    };
    match moved {
        Ok(()) => Ok(Changed {
            path: from.display().to_string(),
            to: Some(to.display().to_string()),
            entries: 1,
            bytes: None,
            replaced: overwrite && target.is_some(),
        }),
        Err(e) => {
            // As locally: a target that appeared, or a directory that is
            // not empty, is "already exists".
            let blocked = !overwrite || target.is_some_and(|t| t.is_dir());
            if blocked && fs.lstat_opt(to).await?.is_some() {
                return Err(exists(to));
            }
            if across_filesystems(fs, from, to).await {
                let mut c = copy(fs, from, to, overwrite, true).await?;
                delete(fs, from, true).await?;
                c.path = from.display().to_string();
                return Ok(c);
            }
            Err(FileError::io(from, e))
        }
    }
}

/// Do `from` and `to` lie on different filesystems (where a rename cannot
/// work)? False when the server cannot tell.
async fn across_filesystems(fs: &RemoteFiles, from: &Path, to: &Path) -> bool {
    let (Some(a), Some(b)) = (from.parent(), to.parent()) else {
        return false;
    };
    let (Ok(a), Ok(b)) = (s(a), s(b)) else {
        return false;
    };
    match (fs.sftp.fs_id(a).await, fs.sftp.fs_id(b).await) {
        (Ok(Some(x)), Ok(Some(y))) => x != y,
        _ => false,
    }
}

pub(super) async fn copy(
    fs: &RemoteFiles,
    from: &Path,
    to: &Path,
    overwrite: bool,
    recursive: bool,
) -> Result<Changed, FileError> {
    let src = fs
        .sftp
        .lstat(s(from)?)
        .await
        .map_err(|e| FileError::io(from, e))?;
    let replaced = fs.lstat_opt(to).await?.is_some();
    if replaced && !overwrite {
        return Err(exists(to));
    }
    let (entries, bytes) = match kind_of(src.mode) {
        "dir" if !recursive => return Err(needs_recursive(from, "copy")),
        "dir" => {
            if replaced {
                return Err(no_merge(to));
            }
            Box::pin(copy_tree(fs, from, to, src.perm(), 0)).await?
        }
        "file" => (1, copy_file(fs, from, to, src.perm(), overwrite).await?),
        "symlink" => {
            let target = fs
                .sftp
                .read_link(s(from)?)
                .await
                .map_err(|e| FileError::io(from, e))?;
            if replaced {
                fs.sftp
                    .remove(s(to)?)
                    .await
                    .map_err(|e| FileError::io(to, e))?;
            }
            fs.sftp
                .symlink(&target, s(to)?)
                .await
                .map_err(|e| FileError::io(to, e))?;
            (1, 0)
        }
        other => return Err(not_copied(from, other)),
    };
    Ok(Changed::copied(from, to, entries, bytes, replaced))
}

/// Copy one regular file to `to` atomically (a temp file renamed into
/// place, over an existing file only when `overwrite`), on the server when
/// it can (`copy-data`), else streamed through here; the bytes copied.
async fn copy_file(
    fs: &RemoteFiles,
    from: &Path,
    to: &Path,
    mode: u32,
    overwrite: bool,
) -> Result<u64, FileError> {
    let src = fs
        .sftp
        .open(s(from)?, OpenOptions::read())
        .await
        .map_err(|e| FileError::io(from, e))?;
    let (tmp, dst) = match temp_file(fs, to, true).await {
        Ok(t) => t,
        Err(e) => {
            let _ = src.close().await;
            return Err(e);
        }
    };
    let mut copied = 0u64;
    let filled = async {
        if fs.sftp.copy_data(&src, &dst).await? {
            copied = dst.fstat().await?.size;
        } else {
            loop {
                let buf = src.read_at(copied, COPY_CHUNK).await?;
                if buf.is_empty() {
                    break;
                }
                dst.write_at(copied, &buf).await?;
                copied += buf.len() as u64;
            }
        }
        dst.set_mode(mode).await
    }
    .await;
    let _ = src.close().await;
    commit(fs, &tmp, dst, filled, to, overwrite).await?;
    Ok(copied)
}

/// Copy the directory `from` to the new directory `to` and everything in
/// it; devices, FIFOs and sockets are left out. (entries, bytes).
async fn copy_tree(
    fs: &RemoteFiles,
    from: &Path,
    to: &Path,
    mode: u32,
    depth: usize,
) -> Result<(u64, u64), FileError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(from, "copy"));
    }
    fs.sftp
        .mkdir(s(to)?, 0o700)
        .await
        .map_err(|e| FileError::io(to, e))?;
    let listing = children(fs, from).await?;
    if !listing.complete {
        return Err(FileError::Invalid(format!(
            "{} holds more than {DIR_BATCH} entries; copy it with bash (cp -a)",
            from.display()
        )));
    }
    let (mut entries, mut bytes) = (1, 0);
    for DirEntry { name, attrs } in &listing.entries {
        let (f, t) = (from.join(name), to.join(name));
        let Attrs { mode: st_mode, .. } = *attrs;
        match kind_of(st_mode) {
            "dir" => {
                let (e, b) = Box::pin(copy_tree(fs, &f, &t, attrs.perm(), depth + 1)).await?;
                entries += e;
                bytes += b;
            }
            "file" => {
                bytes += copy_file(fs, &f, &t, attrs.perm(), false).await?;
                entries += 1;
            }
            "symlink" => {
                let target = fs
                    .sftp
                    .read_link(s(&f)?)
                    .await
                    .map_err(|e| FileError::io(&f, e))?;
                fs.sftp
                    .symlink(&target, s(&t)?)
                    .await
                    .map_err(|e| FileError::io(&t, e))?;
                entries += 1;
            }
            // Devices, FIFOs and sockets are not copied.
            _ => {}
        }
    }
    fs.sftp
        .set_mode(s(to)?, mode)
        .await
        .map_err(|e| FileError::io(to, e))?;
    Ok((entries, bytes))
}
