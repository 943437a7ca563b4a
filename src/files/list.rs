//! `file action=list`: a directory's entries, recursively to a depth, in one
//! stable order (by name at each level, depth first) so that pages given by
//! `offset` and `limit` fit together exactly. Filters: a glob, dotfiles, and
//! `.gitignore`/`.ignore` rules. Also the walk set-up that `grep` shares.
//!
//! It must not follow symlinks (they are listed as symlinks), must not show
//! anything outside the scope (every returned entry is stat'ed through
//! [`Scope::open`], so a directory swapped for a symlink mid-walk cannot
//! reveal what lies outside the roots), and must not walk without bound: the
//! walk stops as soon as it knows whether entries follow the page, and never
//! looks at more than [`MAX_SCANNED`] entries.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ignore::overrides::{Override, OverrideBuilder};
use ignore::{DirEntry, WalkBuilder};
use rustix::fs::{Mode, OFlags};
use serde::Serialize;

use super::{FileError, Scope};

/// A listing looks at most at this many entries (those the ignore rules let
/// through).
pub const MAX_SCANNED: usize = 1_000_000;

/// Approximate serialized size of an entry besides its path, for the budget.
pub(super) const ENTRY_OVERHEAD: usize = 40;

#[derive(Debug, Clone)]
pub struct ListOptions {
    /// 1 lists only the directory's own entries; 0 means no limit.
    pub depth: usize,
    /// Which entries to list, on the path relative to the listed directory,
    /// with `.gitignore` syntax (`*.toml` matches at any depth, `src/*.rs`
    /// only there, a leading `!` excludes). Directories that do not match are
    /// still descended, just not listed.
    pub glob: Option<String>,
    /// Include dotfiles and dot-directories.
    pub hidden: bool,
    /// Honour `.gitignore`, `.ignore` and git's exclude files.
    pub gitignore: bool,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Relative to the listed directory.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    /// Permission bits in octal, like `0644`.
    pub mode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub dir: String,
    pub entries: Vec<Entry>,
    /// Where the next page starts, when there are more entries.
    pub next_offset: Option<usize>,
    /// The page stopped early because of the byte budget.
    pub truncated: bool,
    /// The walk stopped after [`MAX_SCANNED`] entries; narrow it down.
    pub scanned_limit_hit: bool,
}

/// List entries `[offset, offset + limit)` of `dir` (absolute), within about
/// `budget` bytes of output (at least one entry, so paging always advances).
pub fn list(
    scope: &Scope,
    dir: &Path,
    opts: &ListOptions,
    budget: usize,
) -> Result<Listing, FileError> {
    list_scanning(scope, dir, opts, budget, MAX_SCANNED)
}

fn list_scanning(
    scope: &Scope,
    dir: &Path,
    opts: &ListOptions,
    budget: usize,
    max_scanned: usize,
) -> Result<Listing, FileError> {
    check_dir(scope, dir)?;
    let globs = overrides(dir, opts.glob.as_slice())?;
    let mut walk = walker(scope, dir, opts.hidden, opts.gitignore);
    // Count what the walk looks at (past the ignore rules, before the
    // globs) and stop it at the bound.
    let scanned = Arc::new(AtomicUsize::new(0));
    let counter = scanned.clone();
    let matches = glob_filter(globs.clone());
    walk.max_depth((opts.depth > 0).then_some(opts.depth))
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| counter.fetch_add(1, Ordering::Relaxed) < max_scanned && matches(e));

    let mut page = Pager::new(dir, opts, budget);
    for entry in walk.build() {
        // Unreadable directories and vanished entries are left out.
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if entry.depth() == 0 || !scope.contains(path) {
            continue;
        }
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        if is_dir && !lists_dirs(&globs, path) {
            continue;
        }
        let at = match page.place() {
            Slot::Before => continue,
            Slot::After => break,
            Slot::On(at) => at,
        };
        let Some(e) = stat(scope, dir, path) else {
            continue;
        };
        if !page.push(at, e) {
            break;
        }
    }
    Ok(page.finish(scanned.load(Ordering::Relaxed) > max_scanned))
}

/// Where the next entry of a walk falls against the page asked for.
pub(super) enum Slot {
    /// Before `offset`: skip it.
    Before,
    /// On the page, at this position of the full listing.
    On(usize),
    /// Past the page: the listing is complete (it names where the next page starts).
    After,
}

/// Cuts a walk into the page `[offset, offset + limit)`, within a byte
/// budget (at least one entry, so paging always advances). The local and the
/// SSH listing share it, so their pages fit together the same way.
pub(super) struct Pager {
    listing: Listing,
    offset: usize,
    end: usize,
    budget: usize,
    used: usize,
    /// Position in the full listing of the next entry that would be listed.
    index: usize,
    /// The page is complete; later entries are not looked at.
    done: bool,
}

impl Pager {
    pub(super) fn new(dir: &Path, opts: &ListOptions, budget: usize) -> Pager {
        Pager {
            listing: Listing {
                dir: dir.display().to_string(),
                entries: Vec::new(),
                next_offset: None,
                truncated: false,
                scanned_limit_hit: false,
            },
            offset: opts.offset,
            end: opts.offset.saturating_add(opts.limit.max(1)),
            budget,
            used: 0,
            index: 0,
            done: false,
        }
    }

    /// Place the next listable entry of the walk.
    pub(super) fn place(&mut self) -> Slot {
        let at = self.index;
        self.index += 1;
        if at < self.offset {
            Slot::Before
        } else if at >= self.end {
            self.listing.next_offset = Some(at);
            self.done = true;
            Slot::After
        } else {
            Slot::On(at)
        }
    }

    /// Add the entry placed at `at`; false when the budget is spent, which
    /// ends the page there.
    pub(super) fn push(&mut self, at: usize, e: Entry) -> bool {
        let cost = e.path.len() + ENTRY_OVERHEAD;
        if !self.listing.entries.is_empty() && self.used + cost > self.budget {
            self.listing.truncated = true;
            self.listing.next_offset = Some(at);
            self.done = true;
            return false;
        }
        self.used += cost;
        self.listing.entries.push(e);
        true
    }

    /// The page; `scan_cut` says the walk stopped at its bound (reported
    /// only when the walk ran out rather than the page filling up).
    pub(super) fn finish(mut self, scan_cut: bool) -> Listing {
        self.listing.scanned_limit_hit = !self.done && scan_cut;
        self.listing
    }
}

/// `dir` must be a directory inside the scope.
fn check_dir(scope: &Scope, dir: &Path) -> Result<(), FileError> {
    let fd = scope.open(dir, OFlags::PATH, Mode::empty())?;
    let meta = File::from(fd)
        .metadata()
        .map_err(|e| FileError::io(dir, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(not_a_dir(dir, meta.is_file()))
    }
}

/// What to do instead of listing something that is not a directory.
pub(super) fn not_a_dir(dir: &Path, is_file: bool) -> FileError {
    if is_file {
        FileError::Invalid(format!(
            "{} is a file, not a directory; use action=stat or action=read",
            dir.display()
        ))
    } else {
        FileError::Invalid(format!(
            "{} is not a directory; use action=stat",
            dir.display()
        ))
    }
}

/// The walk over `dir` that `list` and `grep` share: symlinks are never
/// followed, and `gitignore` turns on `.gitignore` (without needing a git
/// repository), `.ignore` and git's exclude files. Confined, ignore files are
/// read only from inside the tree (not from its parents or the user's global
/// git config).
pub(super) fn walker(scope: &Scope, dir: &Path, hidden: bool, gitignore: bool) -> WalkBuilder {
    let mut walk = WalkBuilder::new(dir);
    let outside_ok = !scope.is_confined();
    walk.follow_links(false)
        .hidden(!hidden)
        .ignore(gitignore)
        .git_ignore(gitignore)
        .git_exclude(gitignore)
        .git_global(gitignore && outside_ok)
        .parents(gitignore && outside_ok)
        .require_git(false);
    walk
}

/// A walk filter for `globs`: files they leave out are skipped, directories
/// they exclude are not descended. It comes on top of the ignore rules
/// instead of overriding them (as `WalkBuilder::overrides` would): `*.rs`
/// with gitignore on still leaves out ignored `.rs` files.
pub(super) fn glob_filter(globs: Override) -> impl Fn(&DirEntry) -> bool + Send + Sync + 'static {
    move |e| {
        let is_dir = e.file_type().is_some_and(|t| t.is_dir());
        !globs.matched(e.path(), is_dir).is_ignore()
    }
}

/// Globs relative to `dir`, with `.gitignore` syntax; `!` excludes.
pub(super) fn overrides(dir: &Path, globs: &[String]) -> Result<Override, FileError> {
    let mut b = OverrideBuilder::new(dir);
    for g in globs {
        b.add(g).map_err(|e| {
            FileError::Invalid(format!("invalid glob {g:?}: {e}; globs look like **/*.rs"))
        })?;
    }
    b.build()
        .map_err(|e| FileError::Invalid(format!("invalid globs: {e}")))
}

/// With an including glob, only directories that match it are listed.
pub(super) fn lists_dirs(globs: &Override, path: &Path) -> bool {
    globs.num_whitelists() == 0 || globs.matched(path, true).is_whitelist()
}

/// The entry at `path` (not following a symlink), or `None` if it is gone or
/// now resolves outside the scope.
fn stat(scope: &Scope, dir: &Path, path: &Path) -> Option<Entry> {
    let fd = scope
        .open(path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
        .ok()?;
    let meta = File::from(fd).metadata().ok()?;
    let t = meta.file_type();
    let kind = if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    Some(Entry {
        path: path.strip_prefix(dir).ok()?.to_string_lossy().into_owned(),
        kind,
        size: meta.len(),
        mtime: meta.mtime(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    use std::path::PathBuf;

    fn opts() -> ListOptions {
        ListOptions {
            depth: 0,
            glob: None,
            hidden: false,
            gitignore: false,
            offset: 0,
            limit: 1000,
        }
    }

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, body) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
    }

    /// A tree with dotfiles, ignore files, a file named like an option and a
    /// symlink to a directory.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        write(
            &root,
            &[
                ("Cargo.toml", "[package]\n"),
                ("-delete", "not an option\n"),
                (".env", "SECRET=1\n"),
                (".gitignore", "target/\n*.log\n"),
                ("build.log", "log\n"),
                ("src/main.rs", "fn main() {}\n"),
                ("src/lib/mod.rs", "\n"),
                ("src/lib/notes.txt", "\n"),
                ("target/debug/out", "bin\n"),
                (".hidden/inner.rs", "\n"),
            ],
        );
        symlink("src", root.join("link")).unwrap();
        (t, root)
    }

    fn paths(l: &Listing) -> Vec<&str> {
        l.entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn check(root: &Path, o: ListOptions, expected: &[&str]) {
        let scope = Scope::unconfined(root.to_owned());
        let l = list(&scope, root, &o, usize::MAX).unwrap();
        assert_eq!(paths(&l), expected, "{o:?}");
        assert_eq!(l.next_offset, None, "{o:?}");
        assert!(!l.truncated && !l.scanned_limit_hit, "{o:?}");
    }

    #[test]
    fn filters_by_depth_glob_hidden_and_gitignore() {
        let (_t, root) = tree();
        let glob = |g: &str| Some(g.to_owned());
        #[rustfmt::skip]
        let cases: &[(ListOptions, &[&str])] = &[
            (ListOptions { depth: 1, ..opts() },
             &["-delete", "Cargo.toml", "build.log", "link", "src", "target"]),
            (ListOptions { depth: 1, hidden: true, ..opts() },
             &["-delete", ".env", ".gitignore", ".hidden", "Cargo.toml", "build.log", "link",
               "src", "target"]),
            (ListOptions { depth: 1, gitignore: true, ..opts() },
             &["-delete", "Cargo.toml", "link", "src"]),
            (ListOptions { depth: 2, ..opts() },
             &["-delete", "Cargo.toml", "build.log", "link", "src", "src/lib", "src/main.rs",
               "target", "target/debug"]),
            (ListOptions { gitignore: true, ..opts() },
             &["-delete", "Cargo.toml", "link", "src", "src/lib", "src/lib/mod.rs",
               "src/lib/notes.txt", "src/main.rs"]),
            (ListOptions { glob: glob("*.rs"), ..opts() }, &["src/lib/mod.rs", "src/main.rs"]),
            (ListOptions { glob: glob("**/*.rs"), hidden: true, ..opts() },
             &[".hidden/inner.rs", "src/lib/mod.rs", "src/main.rs"]),
            (ListOptions { glob: glob("*.rs"), depth: 2, ..opts() }, &["src/main.rs"]),
            (ListOptions { glob: glob("src/*.rs"), ..opts() }, &["src/main.rs"]),
            (ListOptions { glob: glob("src"), ..opts() }, &["src"]),
            (ListOptions { glob: glob("!*.txt"), gitignore: true, ..opts() },
             &["-delete", "Cargo.toml", "link", "src", "src/lib", "src/lib/mod.rs",
               "src/main.rs"]),
            (ListOptions { glob: glob("!src"), depth: 2, ..opts() },
             &["-delete", "Cargo.toml", "build.log", "link", "target", "target/debug"]),
            // A glob narrows what the ignore rules let through; it does not
            // bring ignored files back.
            (ListOptions { glob: glob("*.log"), gitignore: true, ..opts() }, &[]),
            (ListOptions { glob: glob("*.log"), ..opts() }, &["build.log"]),
            (ListOptions { glob: glob("-delete"), ..opts() }, &["-delete"]),
        ];
        for (o, expected) in cases {
            check(&root, o.clone(), expected);
        }
    }

    #[test]
    fn entries_report_kind_size_mode_and_mtime_without_following_links() {
        let (_t, root) = tree();
        fs::set_permissions(root.join("Cargo.toml"), fs::Permissions::from_mode(0o640)).unwrap();
        let scope = Scope::unconfined(root.clone());
        let l = list(
            &scope,
            &root,
            &ListOptions { depth: 1, ..opts() },
            usize::MAX,
        )
        .unwrap();
        let got: Vec<(&str, &str, u64, &str)> = l
            .entries
            .iter()
            .filter(|e| e.kind != "dir")
            .map(|e| (e.path.as_str(), e.kind, e.size, e.mode.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("-delete", "file", 14, "0644"),
                ("Cargo.toml", "file", 10, "0640"),
                ("build.log", "file", 4, "0644"),
                ("link", "symlink", 3, "0777"),
            ]
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(l.entries.iter().all(|e| (now - e.mtime).abs() < 600));
        assert_eq!(l.dir, root.display().to_string());
    }

    /// Read every page of `o` and return the paths in order.
    fn all_pages(scope: &Scope, root: &Path, o: &ListOptions, budget: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut o = o.clone();
        for _ in 0..1000 {
            let l = list(scope, root, &o, budget).unwrap();
            assert!(!l.entries.is_empty() || l.next_offset.is_none());
            out.extend(l.entries.iter().map(|e| e.path.clone()));
            match l.next_offset {
                Some(next) => {
                    assert_eq!(next, o.offset + l.entries.len(), "pages are contiguous");
                    o.offset = next;
                }
                None => return out,
            }
        }
        panic!("paging did not end");
    }

    fn many() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        for d in ["a", "b", "b/c", "d"] {
            fs::create_dir_all(root.join(d)).unwrap();
            for i in 0..7 {
                fs::write(root.join(d).join(format!("f{i}-{}", "x".repeat(i * 5))), "").unwrap();
            }
        }
        (t, root)
    }

    #[test]
    fn pages_reassemble_the_full_listing() {
        let (_t, root) = many();
        let scope = Scope::unconfined(root.clone());
        let full: Vec<String> = list(&scope, &root, &opts(), usize::MAX)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(full.len(), 4 + 4 * 7);
        assert_eq!(full[..3], ["a", "a/f0-", "a/f1-xxxxx"]);
        for limit in [1, 2, 3, 5, 8, 31, 32, 33] {
            let o = ListOptions { limit, ..opts() };
            assert_eq!(
                all_pages(&scope, &root, &o, usize::MAX),
                full,
                "limit {limit}"
            );
        }
        let l = list(
            &scope,
            &root,
            &ListOptions {
                offset: 30,
                limit: 5,
                ..opts()
            },
            1 << 20,
        );
        let l = l.unwrap();
        assert_eq!((l.entries.len(), l.next_offset), (2, None));
        let l = list(
            &scope,
            &root,
            &ListOptions {
                offset: 99,
                ..opts()
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!((l.entries.len(), l.next_offset), (0, None));
    }

    #[test]
    fn budget_cuts_a_page_and_says_where_to_go_on() {
        let (_t, root) = many();
        let scope = Scope::unconfined(root.clone());
        let full = all_pages(&scope, &root, &opts(), usize::MAX);
        // "a" + 7 files under it cost 1 + 37 + 5 * (5 + 5 * 0..7) ... just
        // check that a small budget gives a short page that says so.
        let l = list(&scope, &root, &opts(), 200).unwrap();
        assert!(l.truncated);
        assert!(l.entries.len() > 1 && l.entries.len() < full.len());
        let cost: usize = l
            .entries
            .iter()
            .map(|e| e.path.len() + ENTRY_OVERHEAD)
            .sum();
        assert!(cost <= 200, "{cost}");
        assert_eq!(l.next_offset, Some(l.entries.len()));
        for budget in [0, 50, 200, 1000] {
            assert_eq!(
                all_pages(&scope, &root, &opts(), budget),
                full,
                "budget {budget}"
            );
        }
        // A budget too small for anything still returns one entry.
        let l = list(&scope, &root, &opts(), 0).unwrap();
        assert_eq!(
            (l.entries.len(), l.next_offset, l.truncated),
            (1, Some(1), true)
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let (_t, root) = many();
        let scope = Scope::unconfined(root.clone());
        let o = ListOptions {
            glob: Some("d/*".into()),
            ..opts()
        };
        let l = list_scanning(&scope, &root, &o, usize::MAX, 10).unwrap();
        assert!(l.scanned_limit_hit);
        assert_eq!((l.entries.len(), l.next_offset), (0, None));
        let l = list_scanning(&scope, &root, &o, usize::MAX, 100).unwrap();
        assert!(!l.scanned_limit_hit);
        assert_eq!(l.entries.len(), 7);
    }

    #[test]
    fn only_directories_can_be_listed() {
        let (_t, root) = tree();
        let scope = Scope::unconfined(root.clone());
        let err = list(&scope, &root.join("Cargo.toml"), &opts(), 100).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a file, not a directory; use action=stat or action=read"),
            "{err}"
        );
        let err = list(&scope, &root.join("missing"), &opts(), 100).unwrap_err();
        assert!(matches!(err, FileError::NotFound(_)), "{err}");
        // A hidden directory named explicitly is listed even with hidden off.
        let l = list(&scope, &root.join(".hidden"), &opts(), 100).unwrap();
        assert_eq!(paths(&l), ["inner.rs"]);
        // A symlink to a directory, named explicitly, is followed.
        let l = list(
            &scope,
            &root.join("link"),
            &ListOptions { depth: 1, ..opts() },
            1000,
        );
        assert_eq!(paths(&l.unwrap()), ["lib", "main.rs"]);
    }

    #[test]
    fn confined_listing_never_shows_what_is_outside() {
        let t = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(t.path()).unwrap();
        let root = base.join("root");
        write(&base, &[("outside/secret", "s\n"), ("root/sub/in", "i\n")]);
        symlink(base.join("outside"), root.join("out")).unwrap();
        symlink("../../outside", root.join("sub/up")).unwrap();
        let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
        let l = list(&scope, &root, &opts(), usize::MAX).unwrap();
        let got: Vec<(&str, &str)> = l
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("out", "symlink"),
                ("sub", "dir"),
                ("sub/in", "file"),
                ("sub/up", "symlink")
            ]
        );
        for dir in [
            root.join("out"),
            root.join("sub/up"),
            root.join("sub/../.."),
            base.clone(),
        ] {
            let err = list(&scope, &dir, &opts(), 100).unwrap_err();
            assert!(
                matches!(err, FileError::Outside { .. }),
                "{}: {err}",
                dir.display()
            );
        }
    }
}
