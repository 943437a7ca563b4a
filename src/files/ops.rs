//! `stat`, and the `file_write` actions on whole entries: `delete` (a
//! directory only with `recursive`), `move` and `copy` (never over an existing
//! target unless `overwrite`). Everything works on directory descriptors
//! (`*at` calls, no symlink followed), so nothing is resolved twice.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use serde::Serialize;

use super::write::{sha256_fd, temp_file};
use super::{FileError, Scope, kind_of};

/// How deep `delete` and `copy` go into a tree.
pub(super) const MAX_DEPTH: usize = 128;

/// What `stat` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatResult {
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char device` or `block device`.
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits in octal, e.g. `0644`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// User and group names from /etc/passwd and /etc/group, when listed there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Unix seconds.
    pub mtime: i64,
    pub atime: i64,
    /// Absent on SSH hosts (SFTP does not report it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctime: Option<i64>,
    /// Where a symlink points (it is not followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Describe `path` itself (a symlink is described, not followed).
pub fn stat(scope: &Scope, path: &Path, sha256: bool) -> Result<StatResult, FileError> {
    let fd = scope.open(path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, e))?;
    let kind = kind_of(st.st_mode);
    let link_target = (kind == "symlink").then(|| {
        rustix::fs::readlinkat(&fd, "", Vec::new())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let sha256 = match (sha256, kind) {
        (true, "file") => {
            let f = scope.open(path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
            Some(sha256_fd(&f).map_err(|e| FileError::io(path, e))?)
        }
        (true, other) => return Err(no_sha256(path, other)),
        _ => None,
    };
    Ok(StatResult {
        path: path.display().to_string(),
        kind,
        size: st.st_size as u64,
        mode: format!("{:04o}", st.st_mode & 0o7777),
        uid: st.st_uid,
        gid: st.st_gid,
        owner: name_of("/etc/passwd", st.st_uid),
        group: name_of("/etc/group", st.st_gid),
        mtime: st.st_mtime,
        atime: st.st_atime,
        ctime: Some(st.st_ctime),
        link_target,
        sha256,
    })
}

/// The name with this numeric id in an /etc/passwd-style file (`name:x:id:…`).
fn name_of(db: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(db).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_owned())
    })
}

/// What `delete`, `move` and `copy` did.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Entries removed or copied (a file counts 1).
    pub entries: u64,
    /// Bytes copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// True when an existing target was replaced.
    pub replaced: bool,
}

impl Changed {
    /// `from` was copied to `to`: `entries` files, directories and links
    /// holding `bytes` bytes.
    pub(crate) fn copied(
        from: &Path,
        to: &Path,
        entries: u64,
        bytes: u64,
        replaced: bool,
    ) -> Changed {
        Changed {
            path: from.display().to_string(),
            to: Some(to.display().to_string()),
            entries,
            bytes: Some(bytes),
            replaced,
        }
    }
}

/// Remove `path`; a directory needs `recursive`.
pub fn delete(scope: &Scope, path: &Path, recursive: bool) -> Result<Changed, FileError> {
    let (dir, name) = scope.open_parent(path)?;
    let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FileError::io(path, e))?;
    let entries = if kind_of(st.st_mode) == "dir" {
        if !recursive {
            return Err(needs_recursive(path, "delete"));
        }
        remove_tree(&dir, &name, path, 0)?
    } else {
        rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).map_err(|e| FileError::io(path, e))?;
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

fn remove_tree(
    parent: &OwnedFd,
    name: &OsStr,
    path: &Path,
    depth: usize,
) -> Result<u64, FileError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path, "delete"));
    }
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FileError::io(path, e))?;
    let mut count = 0;
    for (child, is_dir) in children(&fd, path)? {
        let child_path = path.join(&child);
        if is_dir {
            count += remove_tree(&fd, &child, &child_path, depth + 1)?;
        } else {
            rustix::fs::unlinkat(&fd, &child, AtFlags::empty())
                .map_err(|e| FileError::io(&child_path, e))?;
            count += 1;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| FileError::io(path, e))?;
    Ok(count + 1)
}

/// The entries of an open directory: (name, is a real directory).
fn children(dir: &OwnedFd, path: &Path) -> Result<Vec<(std::ffi::OsString, bool)>, FileError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir).map_err(|e| FileError::io(path, e))?;
    for entry in d.by_ref() {
        let entry = entry.map_err(|e| FileError::io(path, e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_owned();
        let is_dir = match entry.file_type() {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => {
                rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| kind_of(st.st_mode) == "dir")
                    .unwrap_or(false)
            }
            _ => false,
        };
        out.push((name, is_dir));
    }
    Ok(out)
}

/// Move `from` to `to` (a rename; across filesystems, a copy then a delete).
pub fn rename(
    scope: &Scope,
    from: &Path,
    to: &Path,
    overwrite: bool,
) -> Result<Changed, FileError> {
    let (src_dir, src_name) = scope.open_parent(from)?;
    let (dst_dir, dst_name) = scope.open_parent(to)?;
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::NOREPLACE
    };
    let replaced =
        overwrite && rustix::fs::statat(&dst_dir, &dst_name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    match rustix::fs::renameat_with(&src_dir, &src_name, &dst_dir, &dst_name, flags) {
        Ok(()) => Ok(Changed {
            path: from.display().to_string(),
            to: Some(to.display().to_string()),
            entries: 1,
            bytes: None,
            replaced,
        }),
        Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => Err(exists(to)),
        Err(rustix::io::Errno::XDEV) => {
            let mut c = copy(scope, from, to, overwrite, true)?;
            delete(scope, from, true)?;
            c.path = from.display().to_string();
            Ok(c)
        }
        Err(e) => Err(FileError::io(from, e)),
    }
}

/// Copy `from` to `to`; a directory needs `recursive`. Symlinks are copied as
/// symlinks. Each file lands atomically (temp file, then rename).
pub fn copy(
    scope: &Scope,
    from: &Path,
    to: &Path,
    overwrite: bool,
    recursive: bool,
) -> Result<Changed, FileError> {
    let src = scope.open(from, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?;
    let st = rustix::fs::fstat(&src).map_err(|e| FileError::io(from, e))?;
    let (dst_dir, dst_name) = scope.open_parent(to)?;
    let replaced = rustix::fs::statat(&dst_dir, &dst_name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    if replaced && !overwrite {
        return Err(exists(to));
    }
    let (entries, bytes) = match kind_of(st.st_mode) {
        "dir" if !recursive => return Err(needs_recursive(from, "copy")),
        "dir" => {
            if replaced {
                return Err(no_merge(to));
            }
            let src = scope.open(
                from,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            copy_tree(&src, from, &dst_dir, &dst_name, to, st.st_mode & 0o7777, 0)?
        }
        "file" => {
            let src = scope.open(
                from,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            (
                1,
                copy_file(
                    &src,
                    &dst_dir,
                    &dst_name,
                    to,
                    st.st_mode & 0o7777,
                    overwrite,
                )?,
            )
        }
        "symlink" => {
            let target =
                rustix::fs::readlinkat(&src, "", Vec::new()).map_err(|e| FileError::io(from, e))?;
            if replaced {
                rustix::fs::unlinkat(&dst_dir, &dst_name, AtFlags::empty())
                    .map_err(|e| FileError::io(to, e))?;
            }
            rustix::fs::symlinkat(target.as_c_str(), &dst_dir, &dst_name)
                .map_err(|e| FileError::io(to, e))?;
            (1, 0)
        }
        other => return Err(not_copied(from, other)),
    };
    Ok(Changed::copied(from, to, entries, bytes, replaced))
}

fn copy_file(
    src: &OwnedFd,
    dst_dir: &OwnedFd,
    dst_name: &OsStr,
    to: &Path,
    mode: u32,
    overwrite: bool,
) -> Result<u64, FileError> {
    let (tmp, fd) = temp_file(dst_dir, dst_name, to)?;
    let result = (|| -> std::io::Result<u64> {
        let mut out = File::from(fd);
        let mut input = File::from(src.try_clone()?);
        let n = std::io::copy(&mut input, &mut out)?;
        rustix::fs::fchmod(out.as_fd(), Mode::from_raw_mode(mode))?;
        out.sync_all()?;
        let flags = if overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(dst_dir, &tmp, dst_dir, dst_name, flags)?;
        Ok(n)
    })();
    result.map_err(|e| {
        let _ = rustix::fs::unlinkat(dst_dir, &tmp, AtFlags::empty());
        if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) {
            exists(to)
        } else {
            FileError::io(to, e)
        }
    })
}

fn copy_tree(
    src: &OwnedFd,
    from: &Path,
    dst_parent: &OwnedFd,
    dst_name: &OsStr,
    to: &Path,
    mode: u32,
    depth: usize,
) -> Result<(u64, u64), FileError> {
    if depth > MAX_DEPTH {
        return Err(too_deep(from, "copy"));
    }
    rustix::fs::mkdirat(dst_parent, dst_name, Mode::from_raw_mode(0o700))
        .map_err(|e| FileError::io(to, e))?;
    let dst = rustix::fs::openat(
        dst_parent,
        dst_name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FileError::io(to, e))?;
    let (mut entries, mut bytes) = (1, 0);
    for (name, _) in children(src, from)? {
        let (f, t) = (from.join(&name), to.join(&name));
        let st = rustix::fs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FileError::io(&f, e))?;
        match kind_of(st.st_mode) {
            "dir" => {
                let sub = rustix::fs::openat(
                    src,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| FileError::io(&f, e))?;
                let (e, b) = copy_tree(&sub, &f, &dst, &name, &t, st.st_mode & 0o7777, depth + 1)?;
                entries += e;
                bytes += b;
            }
            "file" => {
                let fd = rustix::fs::openat(
                    src,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| FileError::io(&f, e))?;
                bytes += copy_file(&fd, &dst, &name, &t, st.st_mode & 0o7777, false)?;
                entries += 1;
            }
            "symlink" => {
                let target = rustix::fs::readlinkat(src, &name, Vec::new())
                    .map_err(|e| FileError::io(&f, e))?;
                rustix::fs::symlinkat(target.as_c_str(), &dst, &name)
                    .map_err(|e| FileError::io(&t, e))?;
                entries += 1;
            }
            // Devices, FIFOs and sockets are not copied.
            _ => {}
        }
    }
    rustix::fs::fchmod(&dst, Mode::from_raw_mode(mode)).map_err(|e| FileError::io(to, e))?;
    Ok((entries, bytes))
}

/// `sha256` is only for regular files.
pub(super) fn no_sha256(path: &Path, kind: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is a {kind}; sha256 is for regular files",
        path.display()
    ))
}

/// A directory is deleted or copied only with `recursive`.
pub(super) fn needs_recursive(path: &Path, verb: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is a directory; pass recursive=true to {verb} it and everything in it",
        path.display()
    ))
}

/// A directory copy never lands on an existing target.
pub(super) fn no_merge(to: &Path) -> FileError {
    FileError::Invalid(format!(
        "{} exists; copying a directory never merges into or replaces one — delete it first or pick another target",
        to.display()
    ))
}

pub(super) fn not_copied(from: &Path, kind: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is a {kind}; only files, directories and symlinks are copied",
        from.display()
    ))
}

pub(super) fn too_deep(path: &Path, verb: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is nested deeper than {MAX_DEPTH} levels; {verb} it with bash",
        path.display()
    ))
}

pub(super) fn exists(to: &Path) -> FileError {
    FileError::Invalid(format!(
        "{} already exists; pass overwrite=true to replace it, or choose another target",
        to.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Scope, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_owned();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/f"), "deep").unwrap();
        std::fs::write(root.join("d/g"), "gee").unwrap();
        std::fs::write(root.join("-delete"), "dash").unwrap();
        std::os::unix::fs::symlink("d/g", root.join("link")).unwrap();
        let scope = Scope::unconfined(root.clone());
        (t, scope, root)
    }

    #[test]
    fn stat_describes_without_following() {
        let (_t, scope, root) = setup();
        let s = stat(&scope, &root.join("link"), false).unwrap();
        assert_eq!((s.kind, s.link_target.as_deref()), ("symlink", Some("d/g")));
        let s = stat(&scope, &root.join("d/g"), true).unwrap();
        assert_eq!(s.kind, "file");
        assert_eq!(s.size, 3);
        let want = crate::crypto::sha256_hex(b"gee");
        assert_eq!(s.sha256, Some(want));
        assert_eq!(stat(&scope, &root.join("d"), false).unwrap().kind, "dir");
        // Whoever runs the tests owns what they create; root is always uid 0.
        assert_eq!(name_of("/etc/passwd", 0).as_deref(), Some("root"));
        assert_eq!(s.owner, name_of("/etc/passwd", s.uid));
    }

    #[test]
    fn delete_needs_recursive_for_directories_and_takes_dashes_as_names() {
        let (_t, scope, root) = setup();
        let err = delete(&scope, &root.join("d"), false).unwrap_err();
        assert!(err.to_string().contains("recursive=true"), "{err}");
        assert!(root.join("d/e/f").exists());
        assert_eq!(delete(&scope, &root.join("d"), true).unwrap().entries, 4);
        assert!(!root.join("d").exists());
        delete(&scope, &root.join("-delete"), false).unwrap();
        assert!(!root.join("-delete").exists());
        // A symlink is removed, not what it points to.
        std::fs::write(root.join("target"), "t").unwrap();
        std::os::unix::fs::symlink("target", root.join("l2")).unwrap();
        delete(&scope, &root.join("l2"), false).unwrap();
        assert!(root.join("target").exists());
    }

    #[test]
    fn move_and_copy_never_overwrite_unless_asked() {
        let (_t, scope, root) = setup();
        let err = rename(&scope, &root.join("-delete"), &root.join("d/g"), false).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(root.join("d/g")).unwrap(), "gee");
        let err = copy(
            &scope,
            &root.join("-delete"),
            &root.join("d/g"),
            false,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(root.join("d/g")).unwrap(), "gee");

        let c = copy(
            &scope,
            &root.join("-delete"),
            &root.join("d/g"),
            true,
            false,
        )
        .unwrap();
        assert!(c.replaced);
        assert_eq!(std::fs::read_to_string(root.join("d/g")).unwrap(), "dash");
        rename(&scope, &root.join("-delete"), &root.join("moved"), false).unwrap();
        assert!(!root.join("-delete").exists());
        assert_eq!(std::fs::read_to_string(root.join("moved")).unwrap(), "dash");

        let err = copy(&scope, &root.join("d"), &root.join("d2"), false, false).unwrap_err();
        assert!(err.to_string().contains("recursive=true"), "{err}");
        let c = copy(&scope, &root.join("d"), &root.join("d2"), false, true).unwrap();
        assert_eq!(c.entries, 4);
        assert_eq!(
            std::fs::read_to_string(root.join("d2/e/f")).unwrap(),
            "deep"
        );
        let c = copy(
            &scope,
            &root.join("link"),
            &root.join("link2"),
            false,
            false,
        )
        .unwrap();
        assert_eq!(c.entries, 1);
        assert_eq!(
            std::fs::read_link(root.join("link2")).unwrap(),
            Path::new("d/g")
        );
    }
}
