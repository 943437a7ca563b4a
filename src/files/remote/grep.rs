//! `file action=grep` on an SSH host, run by a program there: ripgrep when
//! the host has it (the same regex engine and ignore rules as the local
//! engine), else grep. Like the local engine it works in two passes, and
//! shares its page logic ([`Tally`], [`Collect`], [`Page`]): the first pass
//! counts matching lines per file (`rg --count` over the tree; or the walk
//! of [`super::list`] with `grep -c` over batches of its files), the second
//! fetches only the files that hold the page (`rg --json` / `grep -n`, with
//! `--max-count`), so pages are stable and sorted by (path, line).
//!
//! Agent text is only ever an argv element: the pattern follows `-e`, paths
//! follow `--`, globs are `--glob=…` single arguments, and no shell reads
//! any of it. A user's ripgrep config file is not read (`--no-config`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::FileError;
use crate::files::grep::{Collect, GrepOptions, GrepResult, Page, Tally, matcher};
use crate::files::list::overrides;
use crate::files::read::SNIFF;
use crate::ssh::sftp::OpenOptions;

use super::list::{Walk, WalkOptions};
use super::{ExecOutput, RemoteFiles, s};

#[cfg(test)]
pub(super) use command::SPLIT;

mod command;
mod parse;

/// Output kept from a counting command, and from a page's command.
const COUNT_CAP: usize = 16 << 20;
const PAGE_CAP: usize = 16 << 20;
/// How long one search command may run.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The program that searches on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Searcher {
    Rg,
    Grep,
}

const GREP_NOTE: &str = "ripgrep (rg) is not installed on this host, so grep searched: the \
    pattern was read as a POSIX extended regex (no \\d or \\w shorthands, lookaround or lazy \
    repetition), and a file counts as binary where grep finds a NUL byte. Install ripgrep on the \
    host for the same results as on local.";

pub(super) async fn grep(
    fs: &RemoteFiles,
    path: &Path,
    opts: &GrepOptions,
    budget: usize,
) -> Result<GrepResult, FileError> {
    // The pattern must be valid as the local engine reads it; this also
    // gives the same message for a bad one.
    matcher(opts)?;
    let st = fs
        .sftp
        .stat(s(path)?)
        .await
        .map_err(|e| FileError::io(path, e))?;
    let searcher = *fs
        .searcher
        .get_or_try_init(|| detect(fs))
        .await
        .map_err(|e| FileError::io(path, e))?;
    let mut page = Page::new(path, opts, budget);
    let mut search = Search {
        fs,
        searcher,
        root: path,
        opts,
        note: (searcher == Searcher::Grep).then(|| GREP_NOTE.to_owned()),
    };
    if st.is_dir() {
        let tally = search.count_tree(page.end).await?;
        let r = &mut page.result;
        (r.total_matches, r.files_with_matches) = (tally.matches, tally.files_with_matches);
        (r.files_searched, r.skipped) = (tally.files_searched, tally.skipped);
        let files = tally
            .counts
            .into_iter()
            .map(|(rel, count)| (path.join(&rel), rel.to_string_lossy().into_owned(), count))
            .collect();
        search.collect(files, &mut page).await?;
    } else if st.is_file() {
        search.single(&mut page).await?;
    } else {
        return Err(FileError::Invalid(format!(
            "{} is neither a regular file nor a directory",
            path.display()
        )));
    }
    let mut result = page.finish();
    result.note = search.note;
    Ok(result)
}

/// Is ripgrep on the host's `PATH`?
async fn detect(fs: &RemoteFiles) -> std::io::Result<Searcher> {
    let argv = ["sh", "-c", "command -v rg"].map(String::from);
    let out = fs.exec.run(&argv, 4096).await?;
    Ok(match out.code {
        Some(0) if !out.stdout.is_empty() => Searcher::Rg,
        _ => Searcher::Grep,
    })
}

struct Search<'a> {
    fs: &'a RemoteFiles,
    searcher: Searcher,
    root: &'a Path,
    opts: &'a GrepOptions,
    note: Option<String>,
}

impl Search<'_> {
    async fn run(&self, argv: &[String], cap: usize) -> Result<ExecOutput, FileError> {
        let out = tokio::time::timeout(SEARCH_TIMEOUT, self.fs.exec.run(argv, cap))
            .await
            .map_err(|_| {
                FileError::Invalid(format!(
                    "the search under {} took longer than {} s and was stopped; narrow it with \
                     globs or a subdirectory",
                    self.root.display(),
                    SEARCH_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| FileError::io(self.root, e))?;
        // 0: matches, 1: none, 2: an error, perhaps for some files only.
        match out.code {
            Some(0 | 1) => Ok(out),
            Some(2) if !out.stdout.is_empty() => Ok(out),
            code => Err(FileError::Invalid(format!(
                "{} failed on the host ({}): {}",
                match self.searcher {
                    Searcher::Rg => "rg",
                    Searcher::Grep => "grep",
                },
                code.map_or("killed by a signal".to_owned(), |c| format!(
                    "exit code {c}"
                )),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    /// Count matching lines per file under the root, keeping the files
    /// that hold one of the first `keep` matches.
    async fn count_tree(&mut self, keep: u64) -> Result<Tally, FileError> {
        let mut tally = Tally::new(keep);
        let globs = overrides(self.root, &self.opts.globs)?;
        match self.searcher {
            Searcher::Rg => {
                let o = self.opts;
                let mut argv = self.base();
                argv.extend(["--count", "--null", "--stats"].map(String::from));
                if o.hidden {
                    argv.push("--hidden".into());
                }
                argv.push(match o.gitignore {
                    true => "--no-require-git".into(),
                    false => "--no-ignore".into(),
                });
                // ripgrep lets a matching glob bring back ignored or hidden
                // files; the local engine does not. Globs that only exclude
                // (or a search that ignores nothing) mean the same to both;
                // others are applied here instead, after the count.
                if globs.num_whitelists() == 0 || (o.hidden && !o.gitignore) {
                    argv.extend(o.globs.iter().map(|g| format!("--glob={g}")));
                }
                let root = s(self.root)?.to_owned();
                let argv = self.finish(argv, [root]);
                let out = self.run(&argv, COUNT_CAP).await?;
                let counts = parse::counts(&out.stdout);
                for (path, count) in counts.files {
                    let Ok(rel) = Path::new(&path).strip_prefix(self.root) else {
                        continue;
                    };
                    if count > 0 && parse::globs_pass(&globs, self.root, rel) {
                        tally.add(rel, count);
                    }
                }
                tally.files_searched = counts.searched.unwrap_or(tally.files_with_matches);
                if out.stdout_truncated {
                    self.partial();
                }
            }
            Searcher::Grep => {
                let mut walk = Walk::new(
                    self.fs,
                    self.root,
                    WalkOptions {
                        depth: None,
                        hidden: self.opts.hidden,
                        gitignore: self.opts.gitignore,
                        globs,
                        max_scanned: crate::files::list::MAX_SCANNED,
                    },
                )
                .await?;
                let mut batch = self.batch()?;
                loop {
                    let next = walk.next().await;
                    if let Some(f) = &next
                        && f.attrs.is_file()
                    {
                        batch.push(s(&f.path)?.to_owned());
                    }
                    if batch.full() || (next.is_none() && !batch.paths.is_empty()) {
                        let mut argv = self.base();
                        argv.push("-c".into());
                        let argv = self.finish_many(argv, std::mem::take(&mut batch.paths));
                        batch.bytes = 0;
                        let out = self.run(&argv, COUNT_CAP).await?;
                        for (path, count) in parse::counts(&out.stdout).files {
                            tally.files_searched += 1;
                            if let Ok(rel) = Path::new(&path).strip_prefix(self.root)
                                && count > 0
                            {
                                tally.add(rel, count);
                            }
                        }
                        if out.stdout_truncated {
                            self.partial();
                        }
                    }
                    if next.is_none() {
                        break;
                    }
                }
                tally.skipped = walk.unreadable;
            }
        }
        Ok(tally)
    }

    /// The search of one file named explicitly.
    async fn single(&mut self, page: &mut Page) -> Result<(), FileError> {
        let root = self.root;
        let name = root
            .file_name()
            .unwrap_or(root.as_os_str())
            .to_string_lossy()
            .into_owned();
        if self.looks_binary().await? {
            page.result.skipped = 1;
            return Ok(());
        }
        let mut argv = self.base();
        argv.push("-c".into());
        if self.searcher == Searcher::Rg {
            argv.push("--null".into());
            argv.push("--with-filename".into());
        }
        let argv = self.finish(argv, [s(root)?.to_owned()]);
        let out = self.run(&argv, COUNT_CAP).await?;
        let count = parse::counts(&out.stdout)
            .files
            .first()
            .map_or(0, |(_, c)| *c);
        let r = &mut page.result;
        r.files_searched = 1;
        r.total_matches = count;
        r.files_with_matches = u64::from(count > 0);
        if count > 0 {
            self.collect(vec![(root.to_owned(), name, count)], page)
                .await?;
        }
        Ok(())
    }

    /// A NUL in the first bytes makes a file binary, as for `read`.
    async fn looks_binary(&self) -> Result<bool, FileError> {
        let io = |e| FileError::io(self.root, e);
        let f = self
            .fs
            .sftp
            .open(s(self.root)?, OpenOptions::read())
            .await
            .map_err(io)?;
        let head = f.read_at(0, SNIFF).await;
        let _ = f.close().await;
        Ok(memchr::memchr(0, &head.map_err(io)?).is_some())
    }

    /// Fetch the page's matches from `files` ((path, name in results,
    /// matching lines), in path order), a batch of files per command.
    async fn collect(
        &mut self,
        files: Vec<(PathBuf, String, u64)>,
        page: &mut Page,
    ) -> Result<(), FileError> {
        // Where each file's matches start in the whole search.
        let mut start = 0;
        let mut wanted = Vec::new();
        for (path, name, count) in files {
            let first = start;
            start += count;
            if start <= page.offset {
                continue;
            }
            if first >= page.end {
                break;
            }
            wanted.push(Wanted {
                path: s(&path)?.to_owned(),
                name,
                first,
                count,
            });
        }
        let mut rest = wanted.as_slice();
        while !rest.is_empty() {
            let mut batch = self.batch()?;
            let n = rest
                .iter()
                .take_while(|w| {
                    batch.push(w.path.clone());
                    batch.paths.len() == 1 || !batch.over()
                })
                .count();
            let (now, later) = rest.split_at(n);
            rest = later;
            if self.collect_batch(now, page).await? {
                break;
            }
        }
        Ok(())
    }

    /// Returns true when the page is complete.
    async fn collect_batch(
        &mut self,
        files: &[Wanted],
        page: &mut Page,
    ) -> Result<bool, FileError> {
        // Enough matches of each file to reach the end of the page.
        let max = files
            .iter()
            .map(|w| w.count.min(page.end - w.first))
            .max()
            .unwrap_or(1);
        let mut argv = self.base();
        match self.searcher {
            Searcher::Rg => argv.push("--json".into()),
            Searcher::Grep => argv.push("-n".into()),
        }
        argv.push(format!("--max-count={max}"));
        let context = self.opts.context.min(crate::files::grep::MAX_CONTEXT);
        if context > 0 {
            argv.push(format!("--context={context}"));
        }
        let argv = self.finish_many(argv, files.iter().map(|w| w.path.clone()).collect());
        let out = self.run(&argv, PAGE_CAP).await?;
        let lines = match self.searcher {
            Searcher::Rg => parse::rg_json(&out.stdout),
            Searcher::Grep => parse::grep_lines(&out.stdout),
        };
        for w in files {
            let skip = page.offset.saturating_sub(w.first);
            let mut sink = Collect::new(&w.name, skip, page.end - w.first, page);
            let events = lines.get(&w.path);
            for e in events.map(|f| f.events.as_slice()).unwrap_or_default() {
                let go_on = match e.is_match {
                    true => sink.on_match(e.line, &e.text),
                    false => sink.on_context(e.line, &e.text),
                };
                if !go_on {
                    break;
                }
            }
            if events.is_some_and(|f| f.binary) {
                // Found to be binary since it was counted: as if it had no lines.
                continue;
            }
            // Output cut short may have left out this file's later matches.
            let whole = !out.stdout_truncated || events.is_some_and(|f| f.ended);
            let needed = w.count.min(page.end - w.first);
            let mut unstored = sink.unstored;
            if !whole && unstored.is_none() && sink.seen() < needed {
                if page.result.matches.is_empty() && sink.matches.is_empty() {
                    return Err(FileError::Invalid(format!(
                        "the lines around match {} in {} are too long to fetch from the host \
                         ({} MiB of output); search with a narrower pattern, or read the file",
                        page.offset,
                        w.path,
                        PAGE_CAP >> 20
                    )));
                }
                unstored = Some(sink.seen().max(skip));
            }
            if page.add(
                std::mem::take(&mut sink.matches),
                w.first + skip,
                unstored.map(|i| w.first + i),
            ) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn partial(&mut self) {
        let note = format!(
            "the host's search printed more than {} MiB of per-file counts, so the totals and \
             later pages are partial; narrow the search with globs or a subdirectory",
            COUNT_CAP >> 20
        );
        self.note = Some(match self.note.take() {
            Some(n) => format!("{n} Also, {note}"),
            None => note,
        });
    }
}

/// A file holding part of the page.
struct Wanted {
    path: String,
    name: String,
    /// Number of its first match in the whole search.
    first: u64,
    count: u64,
}
