//! Where file operations may reach. Unconfined, a path means what it means to
//! the kernel. Confined to roots, a path must lie lexically under a root (by
//! whole components, so `/srv/app2` is not under `/srv/app`), and the rest of
//! it is resolved by the kernel beneath that root's open directory with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: `..`, absolute or escaping
//! symlinks (even one swapped in after a check) and `/proc/self/root`-style
//! magic links all fail instead of leaving the root.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::FileError;

/// The roots file operations are confined to, or none.
#[derive(Debug)]
pub struct Scope {
    roots: Vec<Root>,
    /// Where relative paths start.
    home: PathBuf,
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    dir: OwnedFd,
}

impl Scope {
    /// No confinement; relative paths start at `home`.
    pub fn unconfined(home: PathBuf) -> Scope {
        Scope {
            roots: Vec::new(),
            home,
        }
    }

    /// Confine to `roots` (each canonicalized and opened now; they must be
    /// existing directories). Relative paths start at the first root.
    pub fn confined(roots: &[PathBuf]) -> Result<Scope, FileError> {
        let mut opened = Vec::new();
        for r in roots {
            let path = std::fs::canonicalize(r).map_err(|e| FileError::io(r, e))?;
            let dir = rustix::fs::open(
                &path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| FileError::io(&path, e))?;
            opened.push(Root { path, dir });
        }
        let home = opened
            .first()
            .map(|r| r.path.clone())
            .ok_or_else(|| FileError::Invalid("file roots are set but empty".into()))?;
        Ok(Scope {
            roots: opened,
            home,
        })
    }

    pub fn is_confined(&self) -> bool {
        !self.roots.is_empty()
    }

    /// The absolute form of an agent's path: relative paths start at home;
    /// `.` components are dropped. `..` is kept (the kernel resolves it).
    pub fn absolute(&self, path: &str) -> Result<PathBuf, FileError> {
        absolute(&self.home, path)
    }

    /// Open `path` (absolute) with `flags`, confined when roots are set.
    pub fn open(&self, path: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, FileError> {
        // openat2 refuses flags that O_PATH ignores.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        let result = match self.locate(path)? {
            None => rustix::fs::open(path, flags, mode),
            Some((root, rel)) if rel.as_os_str().is_empty() => rustix::fs::openat2(
                &root.dir,
                ".",
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ),
            Some((root, rel)) => rustix::fs::openat2(
                &root.dir,
                rel,
                flags,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ),
        };
        result.map_err(|e| self.error(path, e))
    }

    /// Open the directory holding `path` and return it with the final name,
    /// for operations that create, replace or remove that name (`*at` calls
    /// relative to the directory, so nothing is resolved twice).
    pub fn open_parent(&self, path: &Path) -> Result<(OwnedFd, OsString), FileError> {
        let (parent, name) = split(path)?;
        let dir = self.open(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((dir, name))
    }

    /// Create `path` and any missing parents as directories (mode 0777 less
    /// the umask, as `mkdir -p`), confined like everything else.
    pub fn create_dirs(&self, path: &Path) -> Result<(), FileError> {
        match self.open(path, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
            Ok(_) => return Ok(()),
            Err(FileError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let (parent, name) = split(path)?;
        self.create_dirs(parent)?;
        let (dir, _) = self.open_parent(path)?;
        match rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(FileError::io(path, e)),
        }
    }

    /// Is `path` (absolute, as a walk reports it) lexically inside the scope?
    pub fn contains(&self, path: &Path) -> bool {
        !self.is_confined() || self.roots.iter().any(|r| path.starts_with(&r.path))
    }

    /// The root `path` lies under and the rest of it; `None` when unconfined.
    fn locate<'a>(&'a self, path: &'a Path) -> Result<Option<(&'a Root, &'a Path)>, FileError> {
        if !self.is_confined() {
            return Ok(None);
        }
        self.roots
            .iter()
            .filter_map(|r| path.strip_prefix(&r.path).ok().map(|rel| (r, rel)))
            // The innermost root wins when roots nest.
            .max_by_key(|(r, _)| r.path.as_os_str().len())
            .map(Some)
            .ok_or_else(|| self.outside(path))
    }

    fn error(&self, path: &Path, e: rustix::io::Errno) -> FileError {
        match e {
            // openat2 says EXDEV when resolution would leave the root, and
            // ELOOP for a magic link it refuses.
            rustix::io::Errno::XDEV if self.is_confined() => self.outside(path),
            rustix::io::Errno::LOOP if self.is_confined() => self.outside(path),
            e => FileError::io(path, e),
        }
    }

    fn outside(&self, path: &Path) -> FileError {
        let roots: Vec<String> = self
            .roots
            .iter()
            .map(|r| r.path.display().to_string())
            .collect();
        FileError::Outside {
            path: path.to_owned(),
            roots: roots.join(", "),
        }
    }
}

/// The absolute form of an agent's `path`: relative paths start at `home`;
/// `.` components are dropped, `..` is kept. Remote hosts share it.
pub(crate) fn absolute(home: &Path, path: &str) -> Result<PathBuf, FileError> {
    if path.is_empty() {
        return Err(FileError::Invalid(
            "path is empty; pass an absolute path".into(),
        ));
    }
    if path.contains('\0') {
        return Err(FileError::Invalid("path contains a NUL byte".into()));
    }
    let p = Path::new(path);
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        home.join(p)
    };
    Ok(joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect())
}

/// Split an absolute path into its parent and a final name that is a plain
/// component (not `/`, `.` or `..`).
pub(crate) fn split(path: &Path) -> Result<(&Path, OsString), FileError> {
    match (path.parent(), path.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => Ok((parent, name.to_owned())),
        _ => Err(FileError::Invalid(format!(
            "{} does not name a file or directory inside a directory",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), "in").unwrap();
        std::fs::create_dir_all(root.parent().unwrap().join("root2")).unwrap();
        std::fs::write(root.parent().unwrap().join("root2/secret"), "out").unwrap();
        std::fs::write(root.parent().unwrap().join("secret"), "out").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("up")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("inside")).unwrap();
        (t, root)
    }

    fn read(scope: &Scope, p: &str) -> Result<String, String> {
        let path = scope.absolute(p).map_err(|e| e.to_string())?;
        let fd = scope
            .open(&path, OFlags::RDONLY, Mode::empty())
            .map_err(|e| match e {
                FileError::Outside { .. } => "outside".to_owned(),
                FileError::NotFound(_) => "not found".to_owned(),
                e => e.to_string(),
            })?;
        Ok(std::io::read_to_string(std::fs::File::from(fd)).unwrap())
    }

    #[test]
    fn confinement_holds_for_every_way_out() {
        let (_t, root) = tree();
        let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
        let r = root.display().to_string();
        for (path, expected) in [
            (format!("{r}/sub/f"), Ok("in")),
            ("sub/f".to_owned(), Ok("in")),
            (format!("{r}/inside"), Ok("in")),
            (format!("{r}/sub/../sub/f"), Ok("in")),
            (format!("{r}/../secret"), Err("outside")),
            (format!("{r}/sub/../../secret"), Err("outside")),
            (format!("{r}2/secret"), Err("outside")),
            (format!("{r}/up"), Err("outside")),
            (format!("{r}/abs/hostname"), Err("outside")),
            ("/etc/hostname".to_owned(), Err("outside")),
            ("/proc/self/root/etc/hostname".to_owned(), Err("outside")),
            (format!("{r}/missing"), Err("not found")),
        ] {
            assert_eq!(
                read(&scope, &path),
                expected.map(str::to_owned).map_err(str::to_owned),
                "{path}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever path an agent makes of these pieces, anything that opens
        /// is really inside the root (asked of the kernel afterwards).
        #[test]
        fn no_random_path_opens_outside_the_root(
            absolute in proptest::bool::ANY,
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "..", ".", "sub", "f", "inside", "up", "abs", "root2", "secret", "root",
                    "etc", "hostname", "proc", "self", "fd", "loop", "", "//",
                ]),
                0..8,
            ),
        ) {
            let (_t, root) = tree();
            std::os::unix::fs::symlink("/proc/self/root", root.join("sub/proc")).ok();
            std::os::unix::fs::symlink("loop", root.join("loop")).ok();
            let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
            let joined = parts.join("/");
            let path = if absolute { format!("{}/{joined}", root.display()) } else { joined };
            let Ok(abs) = scope.absolute(&path) else { return Ok(()) };
            for flags in [OFlags::RDONLY, OFlags::PATH] {
                if let Ok(fd) = scope.open(&abs, flags, Mode::empty()) {
                    use std::os::fd::AsRawFd;
                    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
                    proptest::prop_assert!(real.starts_with(&root), "{path} opened {}", real.display());
                }
            }
            if let Ok((dir, _)) = scope.open_parent(&abs) {
                use std::os::fd::AsRawFd;
                let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).unwrap();
                proptest::prop_assert!(real.starts_with(&root), "{path}: parent {}", real.display());
            }
        }
    }

    #[test]
    fn a_symlink_swapped_in_after_a_check_cannot_escape() {
        let (_t, root) = tree();
        let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
        let target = root.join("swap/hostname");
        std::fs::create_dir(root.join("swap")).unwrap();
        std::fs::write(&target, "mine").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::rename(root.join("swap"), root.join("swap.real"));
                    let _ = std::os::unix::fs::symlink("/etc", root.join("swap"));
                    let _ = std::fs::remove_file(root.join("swap"));
                    let _ = std::fs::rename(root.join("swap.real"), root.join("swap"));
                }
            })
        };
        let mut opened = 0;
        for _ in 0..20_000 {
            if let Ok(fd) = scope.open(&target, OFlags::RDONLY, Mode::empty()) {
                opened += 1;
                let text = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
                assert_eq!(text, "mine", "read a file outside the root");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert!(opened > 0);
    }

    #[test]
    fn unconfined_paths_mean_what_they_mean() {
        let (_t, root) = tree();
        let scope = Scope::unconfined(root.clone());
        assert_eq!(read(&scope, "up").unwrap(), "out");
        assert_eq!(
            read(&scope, &format!("{}/../secret", root.display())).unwrap(),
            "out"
        );
    }

    #[test]
    fn create_dirs_makes_parents_but_not_outside() {
        let (_t, root) = tree();
        let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
        scope.create_dirs(&root.join("a/b/c")).unwrap();
        assert!(root.join("a/b/c").is_dir());
        assert!(matches!(
            scope.create_dirs(&root.join("up/x")),
            Err(FileError::Outside { .. } | FileError::Io { .. })
        ));
        assert!(matches!(
            scope.create_dirs(&root.join("abs/x")),
            Err(FileError::Outside { .. })
        ));
    }
}
