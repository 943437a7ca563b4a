//! `file action=list` on an SSH host, and the walk that `grep` uses when
//! the host has no ripgrep. The walk gives what the local one gives, in the
//! same order: depth first, by name at each level, symlinks listed and never
//! followed, dotfiles and ignored entries left out unless asked, globs
//! narrowing on top of the ignore rules, at most [`MAX_SCANNED`] entries
//! looked at. Each directory costs one SFTP `readdir` sequence; entries'
//! attributes come with it.

use std::path::{Path, PathBuf};

use ignore::overrides::Override;

use crate::files::FileError;
use crate::files::list::{
    Entry, ListOptions, Listing, MAX_SCANNED, Pager, Slot, lists_dirs, not_a_dir, overrides,
};
use crate::ssh::sftp::{Attrs, DirEntry};

use super::rules::Rules;
use super::{RemoteFiles, s};

pub(super) async fn list(
    fs: &RemoteFiles,
    dir: &Path,
    opts: &ListOptions,
    budget: usize,
) -> Result<Listing, FileError> {
    list_scanning(fs, dir, opts, budget, MAX_SCANNED).await
}

pub(super) async fn list_scanning(
    fs: &RemoteFiles,
    dir: &Path,
    opts: &ListOptions,
    budget: usize,
    max_scanned: usize,
) -> Result<Listing, FileError> {
    let globs = overrides(dir, opts.glob.as_slice())?;
    let mut walk = Walk::new(
        fs,
        dir,
        WalkOptions {
            depth: (opts.depth > 0).then_some(opts.depth),
            hidden: opts.hidden,
            gitignore: opts.gitignore,
            globs: globs.clone(),
            max_scanned,
        },
    )
    .await?;
    let mut page = Pager::new(dir, opts, budget);
    while let Some(found) = walk.next().await {
        if found.attrs.is_dir() && !lists_dirs(&globs, &found.path) {
            continue;
        }
        let at = match page.place() {
            Slot::Before => continue,
            Slot::After => break,
            Slot::On(at) => at,
        };
        if !page.push(at, entry(dir, &found)) {
            break;
        }
    }
    Ok(page.finish(walk.scanned > max_scanned || walk.cut))
}

fn entry(dir: &Path, found: &Found) -> Entry {
    let a = &found.attrs;
    let kind = if a.is_file() {
        "file"
    } else if a.is_dir() {
        "dir"
    } else if a.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    Entry {
        path: found
            .path
            .strip_prefix(dir)
            .unwrap_or(&found.path)
            .to_string_lossy()
            .into_owned(),
        kind,
        size: a.size,
        mtime: a.mtime,
        mode: format!("{:04o}", a.perm()),
    }
}

pub(super) struct WalkOptions {
    /// Deepest level listed (1: the directory's own entries); `None`: all.
    pub(super) depth: Option<usize>,
    pub(super) hidden: bool,
    pub(super) gitignore: bool,
    pub(super) globs: Override,
    pub(super) max_scanned: usize,
}

/// An entry the walk found.
pub(super) struct Found {
    /// Absolute.
    pub(super) path: PathBuf,
    /// `lstat` attributes.
    pub(super) attrs: Attrs,
}

/// A depth-first walk of a remote tree in name order.
pub(super) struct Walk<'a> {
    fs: &'a RemoteFiles,
    opts: WalkOptions,
    rules: Option<Rules>,
    /// The directories being walked, innermost last, each with the entries
    /// still to visit.
    stack: Vec<Frame>,
    /// Entries looked at (past the ignore rules, before the globs).
    pub(super) scanned: usize,
    /// Directories that could not be read (left out).
    pub(super) unreadable: u64,
    /// A directory had more entries than could still be looked at.
    pub(super) cut: bool,
}

struct Frame {
    dir: PathBuf,
    /// Depth of the entries (1 for the root's own).
    depth: usize,
    entries: std::vec::IntoIter<DirEntry>,
}

impl<'a> Walk<'a> {
    /// Start at `root`, which must be a directory (a symlink to one is
    /// followed) that can be read.
    pub(super) async fn new(
        fs: &'a RemoteFiles,
        root: &Path,
        opts: WalkOptions,
    ) -> Result<Walk<'a>, FileError> {
        let st = fs
            .sftp
            .stat(s(root)?)
            .await
            .map_err(|e| FileError::io(root, e))?;
        if !st.is_dir() {
            return Err(not_a_dir(root, st.is_file()));
        }
        let rules = match opts.gitignore {
            true => Some(Rules::load(fs, root).await),
            false => None,
        };
        let mut walk = Walk {
            fs,
            opts,
            rules,
            stack: Vec::new(),
            scanned: 0,
            unreadable: 0,
            cut: false,
        };
        let entries = walk.read(root).await?;
        walk.enter(root, 1, entries).await;
        Ok(walk)
    }

    /// The next entry, or `None` at the end.
    pub(super) async fn next(&mut self) -> Option<Found> {
        loop {
            let frame = self.stack.last_mut()?;
            let Some(e) = frame.entries.next() else {
                self.stack.pop();
                if let Some(r) = &mut self.rules {
                    r.leave();
                }
                continue;
            };
            let (path, depth) = (frame.dir.join(&e.name), frame.depth);
            let is_dir = e.attrs.is_dir();
            if !self.visible(&path, &e.name, is_dir) {
                continue;
            }
            // Past the ignore rules: this counts as looked at.
            self.scanned += 1;
            if self.scanned > self.opts.max_scanned
                || self.opts.globs.matched(&path, is_dir).is_ignore()
            {
                continue;
            }
            if is_dir && self.opts.depth.is_none_or(|max| depth < max) {
                match self.read(&path).await {
                    Ok(entries) => self.enter(&path, depth + 1, entries).await,
                    Err(_) => self.unreadable += 1,
                }
            }
            return Some(Found {
                path,
                attrs: e.attrs,
            });
        }
    }

    /// Not ignored, and not hidden unless asked (an entry the ignore rules
    /// whitelist shows even if hidden, as locally).
    fn visible(&self, path: &Path, name: &str, is_dir: bool) -> bool {
        let m = match &self.rules {
            Some(r) => r.matched(path, is_dir),
            None => ignore::Match::None,
        };
        if m.is_ignore() {
            return false;
        }
        self.opts.hidden || !m.is_none() || !name.starts_with('.')
    }

    /// The entries of `dir`, sorted by name, at most what may still be looked at.
    async fn read(&mut self, dir: &Path) -> Result<Vec<DirEntry>, FileError> {
        let room = self.opts.max_scanned.saturating_sub(self.scanned) + 1;
        let mut d = self
            .fs
            .sftp
            .read_dir(s(dir)?, room)
            .await
            .map_err(|e| FileError::io(dir, e))?;
        self.cut |= !d.complete;
        d.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(d.entries)
    }

    async fn enter(&mut self, dir: &Path, depth: usize, entries: Vec<DirEntry>) {
        if let Some(r) = &mut self.rules {
            r.enter(self.fs, dir, &entries).await;
        }
        self.stack.push(Frame {
            dir: dir.to_owned(),
            depth,
            entries: entries.into_iter(),
        });
    }
}
