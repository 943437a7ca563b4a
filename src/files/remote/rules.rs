//! `.gitignore` rules on an SSH host, read over SFTP and matched as the
//! `ignore` crate matches them for the local walk: `.ignore` and
//! `.gitignore` of every directory from the filesystem root down to the one
//! being walked (the nearest match wins; `.ignore` over `.gitignore`), git's
//! `.git/info/exclude`, and the user's global excludes file. Like the local
//! walk it needs no git repository (`require_git(false)`), and so, like it,
//! lets rules above a repository's top reach into it.

use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::ssh::sftp::{DirEntry, OpenOptions};

use super::{RemoteFiles, s};

/// Most bytes of one ignore file that are read.
const MAX_IGNORE_FILE: usize = 1 << 20;

/// The rules in force in the directory being walked.
pub(super) struct Rules {
    /// From the filesystem root down to that directory.
    levels: Vec<Level>,
    global: Gitignore,
}

struct Level {
    ignore: Gitignore,
    gitignore: Gitignore,
    exclude: Gitignore,
}

impl Rules {
    /// The rules of `root`'s parents and the user's global excludes; `root`
    /// itself comes with [`Rules::enter`].
    pub(super) async fn load(fs: &RemoteFiles, root: &Path) -> Rules {
        let mut levels = Vec::new();
        let mut parents: Vec<&Path> = root.ancestors().skip(1).collect();
        parents.reverse();
        for dir in parents {
            let git = dir.join(".git");
            let (ignore, gitignore, git) = tokio::join!(
                read_rules(fs, dir, ".ignore"),
                read_rules(fs, dir, ".gitignore"),
                fs.lstat_opt(&git),
            );
            let git = git.ok().flatten();
            let exclude = match git {
                Some(a) if a.is_dir() => read_rules(fs, dir, ".git/info/exclude").await,
                _ => None,
            };
            levels.push(Level {
                ignore: ignore.unwrap_or_else(Gitignore::empty),
                gitignore: gitignore.unwrap_or_else(Gitignore::empty),
                exclude: exclude.unwrap_or_else(Gitignore::empty),
            });
        }
        Rules {
            levels,
            global: global(fs).await,
        }
    }

    /// Take in the rules of directory `dir`, whose entries are `entries`
    /// (so only ignore files that exist are fetched).
    pub(super) async fn enter(&mut self, fs: &RemoteFiles, dir: &Path, entries: &[DirEntry]) {
        let has = |name: &str| entries.iter().find(|e| e.name == name).map(|e| e.attrs);
        let fetch = |name: &'static str| async move {
            match has(name) {
                Some(_) => read_rules(fs, dir, name).await,
                None => None,
            }
        };
        let (ignore, gitignore) = tokio::join!(fetch(".ignore"), fetch(".gitignore"));
        let exclude = match has(".git") {
            Some(a) if a.is_dir() => read_rules(fs, dir, ".git/info/exclude").await,
            _ => None,
        };
        self.levels.push(Level {
            ignore: ignore.unwrap_or_else(Gitignore::empty),
            gitignore: gitignore.unwrap_or_else(Gitignore::empty),
            exclude: exclude.unwrap_or_else(Gitignore::empty),
        });
    }

    /// Leave the directory entered last.
    pub(super) fn leave(&mut self) {
        self.levels.pop();
    }

    /// Whether `path` (absolute) is ignored, whitelisted or neither.
    pub(super) fn matched(&self, path: &Path, is_dir: bool) -> Match<()> {
        let (mut ignore, mut gitignore, mut exclude) = (Match::None, Match::None, Match::None);
        for level in self.levels.iter().rev() {
            if ignore.is_none() {
                ignore = level.ignore.matched(path, is_dir).map(|_| ());
            }
            if gitignore.is_none() {
                gitignore = level.gitignore.matched(path, is_dir).map(|_| ());
            }
            if exclude.is_none() {
                exclude = level.exclude.matched(path, is_dir).map(|_| ());
            }
        }
        let global = self.global.matched(path, is_dir).map(|_| ());
        ignore.or(gitignore).or(exclude).or(global)
    }
}

/// The ignore file `dir/name` as rules rooted at `dir`, if it can be read.
async fn read_rules(fs: &RemoteFiles, dir: &Path, name: &str) -> Option<Gitignore> {
    let path = dir.join(name);
    let text = read_small(fs, &path).await?;
    let mut b = GitignoreBuilder::new(dir);
    add_lines(&mut b, &path, &text);
    b.build().ok()
}

fn add_lines(b: &mut GitignoreBuilder, from: &Path, text: &str) {
    let text = text.trim_start_matches('\u{feff}');
    for line in text.lines() {
        // A bad line is skipped; the others still count (as locally).
        let _ = b.add_line(Some(from.to_owned()), line);
    }
}

/// The start of a small file as text, or `None` if it cannot be read.
async fn read_small(fs: &RemoteFiles, path: &Path) -> Option<String> {
    let file = fs
        .sftp
        .open(s(path).ok()?, OpenOptions::read())
        .await
        .ok()?;
    let bytes = file.read_at(0, MAX_IGNORE_FILE).await;
    let _ = file.close().await;
    Some(String::from_utf8_lossy(&bytes.ok()?).into_owned())
}

/// The user's global excludes: git's `core.excludesFile` (from
/// `~/.gitconfig`, `~/.config/git/config` or `/etc/gitconfig`), else
/// `~/.config/git/ignore`.
async fn global(fs: &RemoteFiles) -> Gitignore {
    let home = fs.home();
    let mut path = None;
    for config in [
        home.join(".gitconfig"),
        home.join(".config/git/config"),
        PathBuf::from("/etc/gitconfig"),
    ] {
        if let Some(text) = read_small(fs, &config).await
            && let Some(p) = excludes_file(&text, home)
        {
            path = Some(p);
            break;
        }
    }
    let path = path.unwrap_or_else(|| home.join(".config/git/ignore"));
    let Some(text) = read_small(fs, &path).await else {
        return Gitignore::empty();
    };
    // Rooted nowhere, as the ignore crate roots the global file.
    let mut b = GitignoreBuilder::new("");
    add_lines(&mut b, &path, &text);
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

/// `core.excludesFile` of a git config text, with `~/` expanded.
pub(super) fn excludes_file(config: &str, home: &Path) -> Option<PathBuf> {
    let mut in_core = false;
    for line in config.lines() {
        let line = line.trim();
        if let Some(section) = line.strip_prefix('[') {
            let name = section.split([']', ' ', '"']).next().unwrap_or("");
            in_core = name.eq_ignore_ascii_case("core");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_core && key.trim().eq_ignore_ascii_case("excludesfile") {
            let value = value.trim().trim_matches('"');
            return Some(match value.strip_prefix("~/") {
                Some(rest) => home.join(rest),
                None => PathBuf::from(value),
            });
        }
    }
    None
}
