//! `file_write` actions that change a file's content: `write` (atomic: a temp
//! file in the same directory, fsynced, then renamed over the target, keeping
//! its mode and owner; an optional sha256 precondition), `append`, and `edit`
//! (exact-string replacements applied all or none, never a guess: when an
//! edit matches nothing the closest text is shown, not applied).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{FileError, Scope, kind_of};

/// Largest file `edit` loads (it needs the whole text to apply a batch atomically).
const EDIT_MAX: u64 = 16 << 20;

/// What a content change did.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: String,
    /// Size of the file afterwards.
    pub bytes: u64,
    /// sha256 of the file afterwards (for `write`/`edit`), to pass as `if_hash` next time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// True when the file did not exist before.
    pub created: bool,
    /// Replacements made (for `edit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacements: Option<usize>,
}

impl Written {
    /// `path` now holds exactly `content`.
    pub(crate) fn whole(path: &Path, content: &[u8], created: bool) -> Written {
        Written {
            path: path.display().to_string(),
            bytes: content.len() as u64,
            sha256: Some(crate::crypto::sha256_hex(content)),
            created,
            replacements: None,
        }
    }
}

/// One exact-string replacement.
#[derive(Debug, Clone, Deserialize)]
pub struct Edit {
    /// Exact text to find (whitespace and line breaks included).
    pub old: String,
    /// Text to put in its place.
    pub new: String,
    /// How many occurrences must be replaced (all of them); default: exactly one must exist.
    #[serde(default)]
    pub count: Option<usize>,
}

/// Replace the whole content of `path`, atomically.
pub fn write(
    scope: &Scope,
    path: &Path,
    content: &[u8],
    if_hash: Option<&str>,
    create_parents: bool,
) -> Result<Written, FileError> {
    if create_parents && let Some(parent) = path.parent() {
        scope.create_dirs(parent)?;
    }
    let (dir, name) = scope.open_parent(path)?;
    let existing = existing(&dir, &name, path)?;
    if let Some(want) = if_hash {
        let Some((fd, _)) = &existing else {
            return Err(no_file_for_hash(path, want));
        };
        check_hash(fd, want, path)?;
    }
    let meta = existing
        .as_ref()
        .map(|(_, st)| (st.st_mode & 0o7777, st.st_uid, st.st_gid));
    replace(&dir, &name, path, content, meta)?;
    Ok(Written::whole(path, content, existing.is_none()))
}

/// Append to `path` (created if missing).
pub fn append(
    scope: &Scope,
    path: &Path,
    content: &[u8],
    create_parents: bool,
) -> Result<Written, FileError> {
    if create_parents && let Some(parent) = path.parent() {
        scope.create_dirs(parent)?;
    }
    let (dir, name) = scope.open_parent(path)?;
    let created = existing(&dir, &name, path)?.is_none();
    let fd = rustix::fs::openat(
        &dir,
        &name,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(|e| FileError::io(path, e))?;
    let mut f = File::from(fd);
    f.write_all(content).map_err(|e| FileError::io(path, e))?;
    let bytes = f.metadata().map_err(|e| FileError::io(path, e))?.len();
    Ok(Written {
        path: path.display().to_string(),
        bytes,
        sha256: None,
        created,
        replacements: None,
    })
}

/// Apply `edits` in order to the text of `path`; all or none.
pub fn edit(
    scope: &Scope,
    path: &Path,
    edits: &[Edit],
    if_hash: Option<&str>,
) -> Result<Written, FileError> {
    check_edits(edits)?;
    let (dir, name) = scope.open_parent(path)?;
    let Some((fd, st)) = existing(&dir, &name, path)? else {
        return Err(FileError::NotFound(path.to_owned()));
    };
    check_edit_size(path, st.st_size as u64)?;
    let mut raw = Vec::new();
    File::from(fd)
        .read_to_end(&mut raw)
        .map_err(|e| FileError::io(path, e))?;
    let (text, replaced) = apply_edits(raw, edits, if_hash, path)?;
    replace(
        &dir,
        &name,
        path,
        text.as_bytes(),
        Some((st.st_mode & 0o7777, st.st_uid, st.st_gid)),
    )?;
    Ok(Written {
        replacements: Some(replaced),
        ..Written::whole(path, text.as_bytes(), false)
    })
}

/// `edit` needs at least one edit.
pub(super) fn check_edits(edits: &[Edit]) -> Result<(), FileError> {
    if edits.is_empty() {
        return Err(FileError::Invalid(
            "edits is empty; pass at least one {old, new}".into(),
        ));
    }
    Ok(())
}

/// `edit` loads the whole file, so only up to [`EDIT_MAX`] bytes.
pub(super) fn check_edit_size(path: &Path, size: u64) -> Result<(), FileError> {
    if size > EDIT_MAX {
        return Err(FileError::Invalid(format!(
            "{} is {size} bytes; edit loads at most {EDIT_MAX}; use bash (sed, a script) for files this large",
            path.display(),
        )));
    }
    Ok(())
}

/// Apply `edits` in order to `raw`, the current content of `path` (which
/// must have sha256 `if_hash` when given, and be UTF-8): the new text and the
/// number of replacements, or why nothing may change. Pure, so remote hosts
/// share it.
pub(super) fn apply_edits(
    raw: Vec<u8>,
    edits: &[Edit],
    if_hash: Option<&str>,
    path: &Path,
) -> Result<(String, usize), FileError> {
    if let Some(want) = if_hash {
        let have = crate::crypto::sha256_hex(&raw);
        if !have.eq_ignore_ascii_case(want) {
            return Err(hash_mismatch(path, want, &have));
        }
    }
    let mut text = String::from_utf8(raw).map_err(|_| {
        FileError::Invalid(format!(
            "{} is not UTF-8 text; edit works on text only (use write with the whole content)",
            path.display()
        ))
    })?;
    let mut replaced = 0;
    for (i, e) in edits.iter().enumerate() {
        if e.old.is_empty() {
            return Err(FileError::Invalid(format!("edit {}: old is empty", i + 1)));
        }
        let found = text.matches(e.old.as_str()).count();
        let want = e.count.unwrap_or(1);
        if found == 0 {
            return Err(FileError::Invalid(format!(
                "edit {} of {}: old text not found in {}; nothing was changed.{}",
                i + 1,
                edits.len(),
                path.display(),
                closest(&text, &e.old)
            )));
        }
        if found != want {
            return Err(FileError::Invalid(format!(
                "edit {} of {}: old text occurs {found} times in {} but {} expected; nothing was \
                 changed. Add surrounding lines to old to make it unique, or pass count={found} to \
                 replace all of them",
                i + 1,
                edits.len(),
                path.display(),
                if e.count.is_some() {
                    format!("count={want} was")
                } else {
                    "exactly 1 was".to_owned()
                },
            )));
        }
        text = text.replace(e.old.as_str(), &e.new);
        replaced += found;
    }
    Ok((text, replaced))
}

/// The current file at `dir/name`, opened for reading, with its stat; `None`
/// if there is none. Directories and symlinks are refused: a write replaces
/// a regular file or creates one.
fn existing(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<Option<(OwnedFd, rustix::fs::Stat)>, FileError> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, e))?;
            match kind_of(st.st_mode) {
                "file" => Ok(Some((fd, st))),
                kind => Err(not_writable(path, kind)),
            }
        }
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(symlink_not_written(path, &target))
        }
        Err(e) => Err(FileError::io(path, e)),
    }
}

/// Only regular files are written.
pub(super) fn not_writable(path: &Path, kind: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is a {kind}; only regular files are written",
        path.display()
    ))
}

/// A symlink is never written through.
pub(super) fn symlink_not_written(path: &Path, target: &str) -> FileError {
    FileError::Invalid(format!(
        "{} is a symlink (to {target}); write to the file it points to instead",
        path.display()
    ))
}

/// Write `content` to a temp file in `dir`, fsync it, give it `meta` (mode,
/// owner) and rename it over `name`. On failure the temp file is removed and
/// the target is untouched.
fn replace(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    content: &[u8],
    meta: Option<(u32, u32, u32)>,
) -> Result<(), FileError> {
    let (tmp, fd) = temp_file(dir, name, path)?;
    let result = (|| -> std::io::Result<()> {
        let mut f = File::from(fd);
        f.write_all(content)?;
        if let Some((mode, uid, gid)) = meta {
            rustix::fs::fchmod(f.as_fd(), Mode::from_raw_mode(mode))?;
            // Keeps another user's file theirs when we may (as root); else ours.
            let _ = rustix::fs::fchown(
                f.as_fd(),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
        }
        f.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(FileError::io(path, e));
    }
    Ok(())
}

/// A new, exclusive temp file next to `name` (so the rename stays on one
/// filesystem), mode 0600 until its real mode is set.
pub(super) fn temp_file(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<(std::ffi::OsString, OwnedFd), FileError> {
    for _ in 0..8 {
        let tmp = temp_name(name);
        match rustix::fs::openat(
            dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                // A fresh file takes the umask'd default mode, like any created file.
                let mode = 0o666 & !current_umask();
                let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
                return Ok((tmp, fd));
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(FileError::io(path, e)),
        }
    }
    Err(FileError::Invalid(format!(
        "cannot create a temporary file next to {}",
        path.display()
    )))
}

/// A random hidden name next to `name`: `.NAME.mcpsh-RANDOM.tmp`.
pub(super) fn temp_name(name: &OsStr) -> std::ffi::OsString {
    let mut rnd = [0u8; 6];
    crate::crypto::random_bytes(&mut rnd);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".mcpsh-{}.tmp", crate::crypto::hex(&rnd)));
    tmp
}

/// The process umask (read from /proc, which does not change it).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

fn check_hash(fd: &OwnedFd, want: &str, path: &Path) -> Result<(), FileError> {
    let have = sha256_fd(fd).map_err(|e| FileError::io(path, e))?;
    if have.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(hash_mismatch(path, want, &have))
    }
}

/// `if_hash` was given for a file that does not exist.
pub(super) fn no_file_for_hash(path: &Path, want: &str) -> FileError {
    FileError::Invalid(format!(
        "{} does not exist, so it cannot have sha256 {want}; drop if_hash to create it",
        path.display()
    ))
}

pub(super) fn hash_mismatch(path: &Path, want: &str, have: &str) -> FileError {
    FileError::Invalid(format!(
        "{} changed: its sha256 is {have}, not {want} (if_hash); nothing was written. Read it again \
         and redo the change on the current content",
        path.display()
    ))
}

/// sha256 of a file, streamed.
pub(super) fn sha256_fd(fd: &OwnedFd) -> std::io::Result<String> {
    let mut f = File::from(fd.try_clone()?);
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(crate::crypto::hex(&h.finalize()))
}

/// Where `old` nearly matches: the same text with whitespace ignored, or the
/// line most like its first line. Shown to the agent, never applied.
fn closest(text: &str, old: &str) -> String {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = old
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(old)
        .trim();
    let n = old.lines().count().max(1);
    let lines: Vec<&str> = text.lines().collect();
    let want = squash(old);
    for i in 0..lines.len() {
        let window = lines[i..(i + n).min(lines.len())].join("\n");
        if squash(&window) == want {
            return format!(
                " It does occur with different whitespace at line {}:\n{}",
                i + 1,
                numbered(&lines, i, n)
            );
        }
    }
    let score = |l: &str| -> usize {
        let l = l.trim();
        let prefix = l
            .chars()
            .zip(first.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = l
            .chars()
            .rev()
            .zip(first.chars().rev())
            .take_while(|(a, b)| a == b)
            .count();
        prefix + suffix
    };
    // The first of equally close lines.
    let best =
        lines
            .iter()
            .enumerate()
            .fold(None, |best: Option<(usize, usize)>, (i, l)| match best {
                Some((_, s)) if s >= score(l) => best,
                _ => Some((i, score(l))),
            });
    match best {
        Some((i, s)) if s >= 3 => format!(
            " The closest text is at line {} (not applied):\n{}",
            i + 1,
            numbered(&lines, i, n)
        ),
        _ => " Nothing similar was found; read the file again to see its current text.".into(),
    }
}

fn numbered(lines: &[&str], from: usize, n: usize) -> String {
    lines[from..(from + n).min(lines.len())]
        .iter()
        .enumerate()
        .map(|(k, l)| format!("{:>6}\t{l}\n", from + k + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, Scope) {
        let t = tempfile::tempdir().unwrap();
        let scope = Scope::unconfined(t.path().to_owned());
        (t, scope)
    }

    fn ed(old: &str, new: &str, count: Option<usize>) -> Edit {
        Edit {
            old: old.into(),
            new: new.into(),
            count,
        }
    }

    #[test]
    fn write_is_atomic_keeps_mode_and_honours_if_hash() {
        let (t, scope) = setup();
        let p = t.path().join("a/b/f.txt");
        let w = write(&scope, &p, b"one\n", None, true).unwrap();
        assert!(w.created);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o751)).unwrap();
        let err = write(&scope, &p, b"two\n", Some("00"), true).unwrap_err();
        assert!(
            err.to_string().contains(w.sha256.as_deref().unwrap()),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"one\n");
        let w2 = write(&scope, &p, b"two\n", w.sha256.as_deref(), true).unwrap();
        assert!(!w2.created);
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o751
        );
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("f.txt")]);
    }

    #[test]
    fn writes_refuse_directories_and_symlinks() {
        let (t, scope) = setup();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("l")).unwrap();
        assert!(write(&scope, &t.path().join("d"), b"x", None, false).is_err());
        let err = write(&scope, &t.path().join("l"), b"x", None, false).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(append(&scope, &t.path().join("l"), b"x", false).is_err());
    }

    #[test]
    fn append_adds_and_creates() {
        let (t, scope) = setup();
        let p = t.path().join("log");
        assert!(append(&scope, &p, b"a\n", false).unwrap().created);
        let w = append(&scope, &p, b"b\n", false).unwrap();
        assert_eq!((w.created, w.bytes), (false, 4));
        assert_eq!(std::fs::read(&p).unwrap(), b"a\nb\n");
    }

    #[test]
    fn edits_apply_all_or_nothing() {
        let (t, scope) = setup();
        let p = t.path().join("f.rs");
        let orig = "fn a() {}\nfn b() {}\nlet x = 1;\nlet x = 1;\n";
        std::fs::write(&p, orig).unwrap();
        for (edits, needle) in [
            (vec![ed("let x = 1;", "let x = 2;", None)], "occurs 2 times"),
            (
                vec![
                    ed("fn a() {}", "fn a2() {}", None),
                    ed("missing", "x", None),
                ],
                "not found",
            ),
            (
                vec![ed("fn  a() {}", "x", None)],
                "different whitespace at line 1",
            ),
            (vec![ed("fn c() {}", "x", None)], "closest text is at line"),
            (vec![ed("let x = 1;", "y", Some(3))], "count=3"),
        ] {
            let err = edit(&scope, &p, &edits, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            assert_eq!(
                std::fs::read_to_string(&p).unwrap(),
                orig,
                "unchanged after {needle}"
            );
        }
        let w = edit(
            &scope,
            &p,
            &[
                ed("fn a() {}", "fn a2() {}", None),
                ed("let x = 1;", "let x = 2;", Some(2)),
            ],
            None,
        )
        .unwrap();
        assert_eq!(w.replacements, Some(3));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "fn a2() {}\nfn b() {}\nlet x = 2;\nlet x = 2;\n"
        );
    }
}
