//! `file action=grep`: regex search over one file or a whole tree with
//! ripgrep's libraries, paginated by match in (path, line) order.
//!
//! A tree is searched in two passes. The first walks it on several threads
//! and only counts matching lines per file, keeping the counts of just the
//! files that can hold the first `offset + limit` matches. The second
//! searches those few files again, one after another, to collect the page's
//! lines with their context. So memory does not grow with the number of
//! matches or with file sizes (the searcher reads through a fixed buffer),
//! and pages are stable even though the walk order is not.
//!
//! It must not: take the pattern or a file name as anything but data (no
//! process is spawned), follow symlinks inside the tree, open a file except
//! through [`Scope::open`] (so a symlink swapped in mid-walk cannot lead out
//! of the roots), or return binary files' contents.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use ignore::{DirEntry, ParallelVisitor, ParallelVisitorBuilder, WalkState};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::list::{glob_filter, overrides, walker};
use super::{FileError, Scope};

/// Most context lines on each side of a match.
pub const MAX_CONTEXT: usize = 10;
/// Longest line text returned, in bytes (longer lines end with "…").
pub const MAX_LINE: usize = 500;
/// Longest line a searcher buffers; a file with a longer line is skipped.
const HEAP_LIMIT: usize = 8 << 20;
/// Most walker and search threads.
const MAX_THREADS: usize = 4;
/// Approximate serialized size of a match and of a context line besides
/// their texts, for the budget.
const MATCH_OVERHEAD: usize = 48;
const LINE_OVERHEAD: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    Sensitive,
    Insensitive,
    /// Insensitive unless the pattern has an uppercase letter.
    #[default]
    Smart,
}

#[derive(Debug, Clone)]
pub struct GrepOptions {
    /// A regex (Rust syntax), or literal text with `fixed`.
    pub pattern: String,
    pub fixed: bool,
    pub case: Case,
    /// Match whole words only.
    pub word: bool,
    /// Files to search, `.gitignore` syntax relative to the searched
    /// directory; a leading `!` excludes. Ignored when a file is searched.
    pub globs: Vec<String>,
    pub hidden: bool,
    pub gitignore: bool,
    /// Lines before and after each match (at most [`MAX_CONTEXT`]).
    pub context: usize,
    pub offset: usize,
    /// Matches per page.
    pub limit: usize,
}

impl GrepOptions {
    /// A search for `pattern` as the tool does it by default: a regex, smart
    /// case, ignore files honoured, no context, the first 100 matches.
    pub fn new(pattern: impl Into<String>) -> GrepOptions {
        GrepOptions {
            pattern: pattern.into(),
            fixed: false,
            case: Case::Smart,
            word: false,
            globs: Vec::new(),
            hidden: false,
            gitignore: true,
            context: 0,
            offset: 0,
            limit: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub line: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrepMatch {
    /// Relative to the searched directory, or the file's name when a file
    /// was searched.
    pub path: String,
    pub line: u64,
    pub text: String,
    pub before: Vec<Line>,
    pub after: Vec<Line>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrepResult {
    pub root: String,
    pub matches: Vec<GrepMatch>,
    /// Matching lines in all files.
    pub total_matches: u64,
    pub files_with_matches: u64,
    pub files_searched: u64,
    /// Files and directories not searched: binary, unreadable, or with a
    /// line longer than 8 MiB.
    pub skipped: u64,
    /// Where the next page starts, when there are more matches.
    pub next_offset: Option<usize>,
    /// The page stopped early because of the byte budget.
    pub truncated: bool,
    /// How this search differs from the usual one (on an SSH host without
    /// ripgrep, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Search `path` (absolute; a file or a directory) and return matches
/// `[offset, offset + limit)` in (path, line) order, within about `budget`
/// bytes (at least one match, so paging always advances).
pub fn grep(
    scope: &Scope,
    path: &Path,
    opts: &GrepOptions,
    budget: usize,
) -> Result<GrepResult, FileError> {
    let matcher = matcher(opts)?;
    let fd = scope.open(path, OFlags::PATH, Mode::empty())?;
    let meta = File::from(fd)
        .metadata()
        .map_err(|e| FileError::io(path, e))?;
    let mut page = Page::new(path, opts, budget);
    if meta.is_dir() {
        search_tree(scope, path, opts, &matcher, &mut page)?;
    } else if meta.is_file() {
        search_file(scope, path, &matcher, &mut page)?;
    } else {
        return Err(FileError::Invalid(format!(
            "{} is neither a regular file nor a directory",
            path.display()
        )));
    }
    Ok(page.finish())
}

/// Count the matches in every file of the tree at `dir`, then collect the
/// page from the files that hold it.
fn search_tree(
    scope: &Scope,
    dir: &Path,
    opts: &GrepOptions,
    matcher: &RegexMatcher,
    page: &mut Page,
) -> Result<(), FileError> {
    let tally = count_tree(scope, dir, opts, matcher, page.end)?;
    let r = &mut page.result;
    (r.total_matches, r.files_with_matches) = (tally.matches, tally.files_with_matches);
    (r.files_searched, r.skipped) = (tally.files_searched, tally.skipped);
    let mut searcher = searcher(page.context, true);
    let mut start = 0;
    for (rel, count) in tally.counts {
        let first = start;
        start += count;
        if start <= page.offset {
            continue;
        }
        if first >= page.end {
            break;
        }
        let skip = page.offset.saturating_sub(first);
        let mut sink = Collect::new(&rel.to_string_lossy(), skip, page.end - first, page);
        // A file that changed since it was counted gives what it has now; one
        // that became unreadable or binary gives nothing.
        let Ok(file) = open_in_tree(scope, &dir.join(&rel)) else {
            continue;
        };
        if searcher.search_file(matcher, &file, &mut sink).is_ok()
            && !sink.binary
            && page.add(sink.matches, first + skip, sink.unstored.map(|i| first + i))
        {
            break;
        }
    }
    Ok(())
}

/// Search one file named explicitly (a symlink is followed, within the
/// scope), counting all its matches.
fn search_file(
    scope: &Scope,
    path: &Path,
    matcher: &RegexMatcher,
    page: &mut Page,
) -> Result<(), FileError> {
    let name = path.file_name().unwrap_or(path.as_os_str());
    let mut sink = Collect::new(&name.to_string_lossy(), page.offset, page.end, page);
    sink.count_all = true;
    let file = scope.open(path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
    searcher(page.context, true)
        .search_file(matcher, &File::from(file), &mut sink)
        .map_err(|e| FileError::io(path, e))?;
    let r = &mut page.result;
    if sink.binary {
        r.skipped = 1;
        return Ok(());
    }
    r.files_searched = 1;
    r.total_matches = sink.count;
    r.files_with_matches = u64::from(sink.count > 0);
    page.add(sink.matches, page.offset, sink.unstored);
    Ok(())
}

pub(super) fn matcher(opts: &GrepOptions) -> Result<RegexMatcher, FileError> {
    RegexMatcherBuilder::new()
        .case_insensitive(opts.case == Case::Insensitive)
        .case_smart(opts.case == Case::Smart)
        .fixed_strings(opts.fixed)
        .word(opts.word)
        // Matches never span lines, which lets the searcher look for
        // candidates in whole buffers rather than line by line.
        .line_terminator(Some(b'\n'))
        .ban_byte(Some(b'\0'))
        .build(&opts.pattern)
        .map_err(|e| {
            FileError::Invalid(format!(
                "invalid regex: {e}\npass fixed=true to search for the literal text"
            ))
        })
}

/// A searcher reading through a bounded buffer (no memory maps: they need
/// `unsafe` and would count whole files towards RSS) that gives up on a file
/// at its first NUL byte.
fn searcher(context: usize, line_numbers: bool) -> Searcher {
    SearcherBuilder::new()
        .line_number(line_numbers)
        .binary_detection(BinaryDetection::quit(b'\0'))
        .before_context(context)
        .after_context(context)
        .heap_limit(Some(HEAP_LIMIT))
        .build()
}

/// Open a file found by the walk: never through a symlink in its last
/// component, and beneath the roots when confined; `NONBLOCK` so a FIFO
/// swapped in cannot hang the search.
fn open_in_tree(scope: &Scope, path: &Path) -> Result<File, FileError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    Ok(File::from(scope.open(path, flags, Mode::empty())?))
}

// ---------------------------------------------------------------------------
// First pass: count matches per file on several threads.

/// What the counting pass found.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Matching lines per file (relative path), only for the files that can
    /// hold one of the first `keep` matches in path order.
    pub(super) counts: BTreeMap<PathBuf, u64>,
    /// Sum of `counts`.
    kept: u64,
    keep: u64,
    pub(super) matches: u64,
    pub(super) files_with_matches: u64,
    pub(super) files_searched: u64,
    pub(super) skipped: u64,
}

impl Tally {
    /// A tally keeping the files that hold the first `keep` matches.
    pub(super) fn new(keep: u64) -> Tally {
        Tally {
            keep,
            ..Tally::default()
        }
    }

    /// Record `count` (> 0) matches in `rel`, then forget the files that can
    /// no longer hold one of the first `keep` matches: those whose first
    /// match comes at or after position `keep`.
    pub(super) fn add(&mut self, rel: &Path, count: u64) {
        self.matches += count;
        self.files_with_matches += 1;
        if self.kept >= self.keep
            && self
                .counts
                .last_key_value()
                .is_some_and(|(last, _)| rel > last.as_path())
        {
            return;
        }
        self.counts.insert(rel.to_owned(), count);
        self.kept += count;
        while let Some(entry) = self.counts.last_entry() {
            if self.kept - entry.get() < self.keep {
                break;
            }
            self.kept -= entry.remove();
        }
    }

    fn merge_counters(&mut self, other: &Tally) {
        self.files_searched += other.files_searched;
        self.skipped += other.skipped;
    }
}

fn count_tree(
    scope: &Scope,
    dir: &Path,
    opts: &GrepOptions,
    matcher: &RegexMatcher,
    keep: u64,
) -> Result<Tally, FileError> {
    let globs = overrides(dir, &opts.globs)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let tally = Mutex::new(Tally::new(keep));
    let mut walk = walker(scope, dir, opts.hidden, opts.gitignore);
    if !globs.is_empty() {
        walk.filter_entry(glob_filter(globs));
    }
    walk.threads(threads).build_parallel().visit(&mut Counters {
        scope,
        dir,
        matcher,
        tally: &tally,
    });
    Ok(tally.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Makes one [`Counter`] per walker thread.
struct Counters<'a> {
    scope: &'a Scope,
    dir: &'a Path,
    matcher: &'a RegexMatcher,
    tally: &'a Mutex<Tally>,
}

impl<'a> ParallelVisitorBuilder<'a> for Counters<'a> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 'a> {
        Box::new(Counter {
            scope: self.scope,
            dir: self.dir,
            matcher: self.matcher.clone(),
            // Counting needs neither context nor line numbers.
            searcher: searcher(0, false),
            tally: self.tally,
            local: Tally::default(),
        })
    }
}

struct Counter<'a> {
    scope: &'a Scope,
    dir: &'a Path,
    matcher: RegexMatcher,
    searcher: Searcher,
    tally: &'a Mutex<Tally>,
    /// This thread's file counters, merged when the walk ends.
    local: Tally,
}

impl Counter<'_> {
    /// Matching lines in the file at `path`, or `None` if it was skipped.
    fn count(&mut self, entry: &DirEntry) -> Option<u64> {
        let file = open_in_tree(self.scope, entry.path()).ok()?;
        let mut sink = Count::default();
        self.searcher
            .search_file(&self.matcher, &file, &mut sink)
            .ok()?;
        (!sink.binary).then_some(sink.count)
    }
}

impl ParallelVisitor for Counter<'_> {
    fn visit(&mut self, entry: Result<DirEntry, ignore::Error>) -> WalkState {
        let Ok(entry) = entry else {
            self.local.skipped += 1;
            return WalkState::Continue;
        };
        // Directories are walked, symlinks are not followed, and a FIFO or a
        // device is never opened.
        if !entry.file_type().is_some_and(|t| t.is_file()) || !self.scope.contains(entry.path()) {
            return WalkState::Continue;
        }
        match self.count(&entry) {
            None => self.local.skipped += 1,
            Some(count) => {
                self.local.files_searched += 1;
                if count > 0
                    && let Ok(rel) = entry.path().strip_prefix(self.dir)
                {
                    let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
                    tally.add(rel, count);
                }
            }
        }
        WalkState::Continue
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        tally.merge_counters(&self.local);
    }
}

/// Counts matching lines; gives up on binary data.
#[derive(Default)]
struct Count {
    count: u64,
    binary: bool,
}

impl Sink for Count {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, _: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.count += 1;
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

// ---------------------------------------------------------------------------
// Second pass: collect one file's share of the page, with context.

/// Collects a file's matches number `skip..end` (0-based within the file)
/// with their context lines, storing no more than the page's remaining
/// budget; counts every match it sees.
pub(super) struct Collect {
    path: String,
    skip: u64,
    end: u64,
    context: u64,
    /// Keep counting to the end of the file (a single file was searched).
    count_all: bool,
    count: u64,
    binary: bool,
    /// The last `context` lines seen, for the next match's `before`.
    recent: VecDeque<Line>,
    pub(super) matches: Vec<GrepMatch>,
    /// The page is empty so far: the first match is stored whatever it costs.
    first_of_page: bool,
    budget: usize,
    used: usize,
    /// Index of the first match in the window not stored for lack of budget.
    pub(super) unstored: Option<u64>,
}

impl Collect {
    pub(super) fn new(path: &str, skip: u64, end: u64, page: &Page) -> Collect {
        Collect {
            path: path.to_owned(),
            skip,
            end,
            context: page.context as u64,
            count_all: false,
            count: 0,
            binary: false,
            recent: VecDeque::with_capacity(page.context),
            matches: Vec::new(),
            first_of_page: page.result.matches.is_empty(),
            budget: page.budget.saturating_sub(page.used),
            used: 0,
            unstored: None,
        }
    }

    /// Matches seen so far in this file.
    pub(super) fn seen(&self) -> u64 {
        self.count
    }

    /// Take a matching line; whether the file's later lines are wanted.
    pub(super) fn on_match(&mut self, line: u64, bytes: &[u8]) -> bool {
        let index = self.count;
        if index >= self.skip && self.storing() {
            self.store(index, line, bytes);
        }
        self.count += 1;
        self.see(line, bytes);
        self.go_on(line)
    }

    /// Take a context line; whether the file's later lines are wanted.
    pub(super) fn on_context(&mut self, line: u64, bytes: &[u8]) -> bool {
        self.see(line, bytes);
        self.go_on(line)
    }

    /// Will more matches be stored?
    fn storing(&self) -> bool {
        self.count < self.end && self.unstored.is_none()
    }

    /// Does a stored match take `line` as context after it?
    fn wants_after(&self, line: u64) -> bool {
        self.matches
            .iter()
            .rev()
            .take_while(|m| line <= m.line + self.context)
            .any(|m| line > m.line)
    }

    /// Whether the searcher should go on after `line`.
    fn go_on(&self, line: u64) -> bool {
        self.count_all || self.storing() || self.wants_after(line + 1)
    }

    /// Record a line, matching or context: it is `after` for the stored
    /// matches shortly before it and may be `before` for the next one.
    fn see(&mut self, line: u64, bytes: &[u8]) {
        if self.context == 0 || !(self.storing() || self.wants_after(line)) {
            return;
        }
        let l = Line {
            line,
            text: text(bytes),
        };
        for m in self.matches.iter_mut().rev() {
            if line > m.line + self.context {
                break;
            }
            if line > m.line {
                self.used += l.text.len() + LINE_OVERHEAD;
                m.after.push(l.clone());
            }
        }
        if self.recent.len() as u64 == self.context {
            self.recent.pop_front();
        }
        self.recent.push_back(l);
    }

    /// Store match number `index` at `line`, if the budget allows.
    fn store(&mut self, index: u64, line: u64, bytes: &[u8]) {
        let first = self.first_of_page && self.matches.is_empty();
        if !first && self.used >= self.budget {
            self.unstored = Some(index);
            return;
        }
        let before = self
            .recent
            .iter()
            .filter(|l| l.line + self.context >= line && l.line < line)
            .cloned()
            .collect();
        let m = GrepMatch {
            path: self.path.clone(),
            line,
            text: text(bytes),
            before,
            after: Vec::new(),
        };
        self.used += cost(&m);
        self.matches.push(m);
    }
}

impl Sink for Collect {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        Ok(self.on_match(mat.line_number().unwrap_or(0), mat.bytes()))
    }

    fn context(&mut self, _: &Searcher, ctx: &SinkContext<'_>) -> Result<bool, io::Error> {
        Ok(self.on_context(ctx.line_number().unwrap_or(0), ctx.bytes()))
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// Approximate serialized size of a match.
fn cost(m: &GrepMatch) -> usize {
    let lines: usize = m
        .before
        .iter()
        .chain(&m.after)
        .map(|l| l.text.len() + LINE_OVERHEAD)
        .sum();
    MATCH_OVERHEAD + m.path.len() + m.text.len() + lines
}

/// A line's text without its terminator, lossily decoded, at most
/// [`MAX_LINE`] bytes plus "…".
fn text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE + 4)]).into_owned();
    if bytes.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The page being assembled.
pub(super) struct Page {
    pub(super) result: GrepResult,
    /// Match numbers `offset..end` make the page.
    pub(super) offset: u64,
    pub(super) end: u64,
    context: usize,
    budget: usize,
    used: usize,
}

impl Page {
    pub(super) fn new(path: &Path, opts: &GrepOptions, budget: usize) -> Page {
        let offset = opts.offset as u64;
        Page {
            result: GrepResult {
                root: path.display().to_string(),
                matches: Vec::new(),
                total_matches: 0,
                files_with_matches: 0,
                files_searched: 0,
                skipped: 0,
                next_offset: None,
                truncated: false,
                note: None,
            },
            offset,
            end: offset.saturating_add(opts.limit.max(1) as u64),
            context: opts.context.min(MAX_CONTEXT),
            budget,
            used: 0,
        }
    }

    /// Append `matches`, the first of which is match number `first` of the
    /// whole search, while they fit the budget. Returns true when the page
    /// is cut (by the budget, or because the file had more matches than it
    /// could store: `unstored` is the number of the first one left out).
    pub(super) fn add(
        &mut self,
        matches: Vec<GrepMatch>,
        first: u64,
        unstored: Option<u64>,
    ) -> bool {
        for (i, m) in matches.into_iter().enumerate() {
            let c = cost(&m);
            if !self.result.matches.is_empty() && self.used + c > self.budget {
                return self.cut(first + i as u64);
            }
            self.used += c;
            self.result.matches.push(m);
        }
        match unstored {
            Some(next) => self.cut(next),
            None => false,
        }
    }

    fn cut(&mut self, next: u64) -> bool {
        self.result.truncated = true;
        self.result.next_offset = usize::try_from(next).ok();
        true
    }

    pub(super) fn finish(mut self) -> GrepResult {
        if !self.result.truncated && self.end < self.result.total_matches {
            self.result.next_offset = usize::try_from(self.end).ok();
        }
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn opts(pattern: &str) -> GrepOptions {
        GrepOptions {
            limit: 10_000,
            ..GrepOptions::new(pattern)
        }
    }

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (path, body) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
    }

    fn tempdir() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        (t, root)
    }

    fn run(root: &Path, o: &GrepOptions) -> GrepResult {
        grep(&Scope::unconfined(root.to_owned()), root, o, usize::MAX).unwrap()
    }

    /// `path:line:text` of each match.
    fn hits(r: &GrepResult) -> Vec<String> {
        r.matches
            .iter()
            .map(|m| format!("{}:{}:{}", m.path, m.line, m.text))
            .collect()
    }

    #[test]
    fn patterns_and_file_names_are_only_data() {
        let (_t, root) = tempdir();
        write(
            &root,
            &[
                ("a.rs", "fn f() -> u8 {}\nno arrow\n"),
                ("-delete", "needle\n"),
                ("--help", "see --help for more\n"),
                ("notes", "cat -f/etc/shadow\n-f/etc/shadowX\n"),
            ],
        );
        for (pattern, expected) in [
            ("->", &["a.rs:1:fn f() -> u8 {}"][..]),
            ("--help", &["--help:1:see --help for more"]),
            ("-f/etc/shadow$", &["notes:1:cat -f/etc/shadow"]),
            ("needle", &["-delete:1:needle"]),
            ("-e", &[]),
        ] {
            let r = run(&root, &opts(pattern));
            assert_eq!(hits(&r), expected, "{pattern}");
            assert_eq!(r.files_searched, 4, "{pattern}");
        }
        // A file named like an option, searched by itself.
        let r = grep(
            &Scope::unconfined(root.clone()),
            &root.join("-delete"),
            &opts("."),
            usize::MAX,
        )
        .unwrap();
        assert_eq!(hits(&r), ["-delete:1:needle"]);
    }

    #[test]
    fn case_fixed_and_word_modes() {
        let (_t, root) = tempdir();
        write(&root, &[("f", "foo\nFOO\nFoo\nfoobar\na.c\nabc\n")]);
        let o = |pattern: &str, case: Case, fixed: bool, word: bool| GrepOptions {
            case,
            fixed,
            word,
            ..opts(pattern)
        };
        use Case::*;
        #[rustfmt::skip]
        let cases: &[(GrepOptions, &[u64])] = &[
            (o("foo", Smart, false, false), &[1, 2, 3, 4]),
            (o("Foo", Smart, false, false), &[3]),
            (o("foo", Sensitive, false, false), &[1, 4]),
            (o("FOO", Insensitive, false, false), &[1, 2, 3, 4]),
            (o("foo", Sensitive, false, true), &[1]),
            (o("a.c", Smart, false, false), &[5, 6]),
            (o("a.c", Smart, true, false), &[5]),
            (o("(", Smart, true, false), &[]),
        ];
        for (opts, lines) in cases {
            let r = run(&root, opts);
            let got: Vec<u64> = r.matches.iter().map(|m| m.line).collect();
            assert_eq!(got, *lines, "{opts:?}");
            assert_eq!(r.total_matches, lines.len() as u64);
        }
    }

    #[test]
    fn an_invalid_regex_says_how_to_search_literally() {
        let (_t, root) = tempdir();
        let err = grep(&Scope::unconfined(root.clone()), &root, &opts("f("), 100).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FileError::Invalid(_)), "{msg}");
        assert!(msg.contains("unclosed group"), "{msg}");
        assert!(
            msg.contains("pass fixed=true to search for the literal text"),
            "{msg}"
        );
    }

    #[test]
    fn context_lines_belong_to_each_match() {
        let (_t, root) = tempdir();
        let body: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        write(&root, &[("f", &body)]);
        let ctx = |m: &GrepMatch| {
            let nums = |v: &[Line]| v.iter().map(|l| l.line).collect::<Vec<_>>();
            (m.line, nums(&m.before), nums(&m.after))
        };
        for (pattern, context, expected) in [
            (
                "^line (1|5|7)$",
                2,
                vec![
                    (1, vec![], vec![2, 3]),
                    (5, vec![3, 4], vec![6, 7]),
                    (7, vec![5, 6], vec![8, 9]),
                ],
            ),
            ("^line 30$", 3, vec![(30, vec![27, 28, 29], vec![])]),
            // At most 10 lines each side.
            (
                "^line 15$",
                50,
                vec![(15, (5..15).collect(), (16..26).collect())],
            ),
            ("^line 15$", 0, vec![(15, vec![], vec![])]),
        ] {
            let r = run(
                &root,
                &GrepOptions {
                    context,
                    ..opts(pattern)
                },
            );
            let got: Vec<_> = r.matches.iter().map(ctx).collect();
            assert_eq!(got, expected, "{pattern} context {context}");
        }
        let r = run(
            &root,
            &GrepOptions {
                context: 1,
                ..opts("^line 5$")
            },
        );
        assert_eq!(
            r.matches[0].before,
            [Line {
                line: 4,
                text: "line 4".into()
            }]
        );
        assert_eq!(
            r.matches[0].after,
            [Line {
                line: 6,
                text: "line 6".into()
            }]
        );
    }

    #[test]
    fn long_lines_are_cut_and_line_ends_dropped() {
        let (_t, root) = tempdir();
        let long = format!("needle {}", "é".repeat(400));
        write(&root, &[("f", &format!("{long}\r\nneedle\r\n"))]);
        let r = run(&root, &opts("needle"));
        let t = &r.matches[0].text;
        assert!(
            t.ends_with('…') && t.len() <= MAX_LINE + '…'.len_utf8(),
            "{}",
            t.len()
        );
        assert!(long.starts_with(t.trim_end_matches('…')));
        assert_eq!(r.matches[1].text, "needle");
    }

    #[test]
    fn binary_files_are_skipped() {
        let (_t, root) = tempdir();
        let mut late = "needle\n".repeat(20_000).into_bytes();
        late.extend_from_slice(b"\0needle\n");
        write(&root, &[("text", "needle\n"), ("bin", "needle\0\n")]);
        fs::write(root.join("late-nul"), late).unwrap();
        let r = run(&root, &opts("needle"));
        assert_eq!(hits(&r), ["text:1:needle"]);
        assert_eq!((r.total_matches, r.files_with_matches), (1, 1));
        assert_eq!((r.files_searched, r.skipped), (1, 2));
        let r = grep(
            &Scope::unconfined(root.clone()),
            &root.join("bin"),
            &opts("needle"),
            100,
        );
        let r = r.unwrap();
        assert_eq!((r.matches.len(), r.total_matches, r.skipped), (0, 0, 1));
    }

    #[test]
    fn globs_hidden_and_gitignore_choose_the_files() {
        let (_t, root) = tempdir();
        write(
            &root,
            &[
                (".gitignore", "target/\n"),
                (".ignore", "*.gen.rs\n"),
                ("src/a.rs", "x\n"),
                ("src/b.gen.rs", "x\n"),
                ("src/c.txt", "x\n"),
                ("target/d.rs", "x\n"),
                (".hidden/e.rs", "x\n"),
            ],
        );
        let files = |o: GrepOptions| -> Vec<String> {
            run(&root, &o).matches.into_iter().map(|m| m.path).collect()
        };
        let globs = |g: &[&str]| g.iter().map(|s| s.to_string()).collect();
        #[rustfmt::skip]
        let cases: &[(GrepOptions, &[&str])] = &[
            (opts("x"), &["src/a.rs", "src/c.txt"]),
            (GrepOptions { gitignore: false, ..opts("x") },
             &["src/a.rs", "src/b.gen.rs", "src/c.txt", "target/d.rs"]),
            (GrepOptions { hidden: true, ..opts("x") },
             &[".hidden/e.rs", "src/a.rs", "src/c.txt"]),
            (GrepOptions { globs: globs(&["*.rs"]), ..opts("x") }, &["src/a.rs"]),
            (GrepOptions { globs: globs(&["*.rs"]), gitignore: false, ..opts("x") },
             &["src/a.rs", "src/b.gen.rs", "target/d.rs"]),
            (GrepOptions { globs: globs(&["*.rs", "!target/**"]), gitignore: false, ..opts("x") },
             &["src/a.rs", "src/b.gen.rs"]),
            (GrepOptions { globs: globs(&["!*.txt"]), ..opts("x") }, &["src/a.rs"]),
        ];
        for (o, expected) in cases {
            assert_eq!(files(o.clone()), *expected, "{o:?}");
        }
        let err = grep(
            &Scope::unconfined(root.clone()),
            &root,
            &GrepOptions {
                globs: globs(&["a{b"]),
                ..opts("x")
            },
            100,
        );
        assert!(matches!(err, Err(FileError::Invalid(m)) if m.contains("invalid glob")));
    }

    /// A tree of files with many matches each; the full sorted list of
    /// matches computed independently of `grep`.
    fn many() -> (tempfile::TempDir, PathBuf, Vec<String>) {
        let (t, root) = tempdir();
        let mut expected = Vec::new();
        for (d, n) in [("a", 3), ("a/b", 5), ("a.b", 2), ("c", 40)] {
            for f in 0..n {
                let rel = format!("{d}/f{f:02}");
                let mut body = String::new();
                for line in 1..=(f % 7 + 3) {
                    if (line + f) % 3 == 0 {
                        body.push_str("other\n");
                    } else {
                        body.push_str(&format!("hit {rel} {line}\n"));
                        expected.push((PathBuf::from(&rel), line));
                    }
                }
                write(&root, &[(&rel, &body)]);
            }
        }
        // Path order: component by component ("a/b/.." before "a.b/..").
        expected.sort();
        let expected = expected
            .into_iter()
            .map(|(p, l)| format!("{}:{l}:hit {} {l}", p.display(), p.display()))
            .collect();
        (t, root, expected)
    }

    /// All pages of `o`, checking that each page continues the last.
    fn all_pages(root: &Path, o: &GrepOptions, budget: usize) -> (Vec<GrepMatch>, usize) {
        let scope = Scope::unconfined(root.to_owned());
        let mut o = o.clone();
        let mut out = Vec::new();
        for pages in 1..10_000 {
            let r = grep(&scope, root, &o, budget).unwrap();
            out.extend(r.matches.iter().cloned());
            match r.next_offset {
                Some(next) => {
                    assert_eq!(next, o.offset + r.matches.len());
                    o.offset = next;
                }
                None => return (out, pages),
            }
        }
        panic!("paging did not end");
    }

    #[test]
    fn pages_reassemble_the_sorted_full_list() {
        let (_t, root, expected) = many();
        let full = run(&root, &opts("^hit"));
        assert_eq!(hits(&full), expected);
        assert_eq!(full.total_matches as usize, expected.len());
        assert_eq!((full.files_searched, full.files_with_matches), (50, 50));
        assert_eq!(full.next_offset, None);
        for limit in [1, 2, 7, 50, expected.len() - 1] {
            let (got, pages) = all_pages(
                &root,
                &GrepOptions {
                    limit,
                    ..opts("^hit")
                },
                1 << 20,
            );
            let got = GrepResult {
                matches: got,
                ..full.clone()
            };
            assert_eq!(hits(&got), expected, "limit {limit}");
            assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
        }
        // A page in the middle knows the totals.
        let r = run(
            &root,
            &GrepOptions {
                offset: 10,
                limit: 5,
                ..opts("^hit")
            },
        );
        assert_eq!(hits(&r), expected[10..15]);
        assert_eq!(
            (r.total_matches as usize, r.next_offset),
            (expected.len(), Some(15))
        );
        let r = run(
            &root,
            &GrepOptions {
                offset: 10_000,
                ..opts("^hit")
            },
        );
        assert_eq!((r.matches.len(), r.next_offset), (0, None));
    }

    #[test]
    fn budget_cuts_pages_and_paging_goes_on_exactly() {
        let (_t, root, expected) = many();
        let full = run(
            &root,
            &GrepOptions {
                context: 2,
                ..opts("^hit")
            },
        )
        .matches;
        for budget in [0, 100, 300, 1000, 5000] {
            let o = GrepOptions {
                context: 2,
                limit: 40,
                ..opts("^hit")
            };
            let (got, _) = all_pages(&root, &o, budget);
            assert_eq!(got, full, "budget {budget}");
            let first = grep(&Scope::unconfined(root.clone()), &root, &o, budget).unwrap();
            let cost: usize = first.matches.iter().map(cost).sum();
            assert!(first.truncated, "budget {budget}");
            assert!(
                first.matches.len() == 1 || cost <= budget,
                "budget {budget}: {cost}"
            );
        }
        assert_eq!(full.len(), expected.len());
        // A single file's page is cut the same way.
        let file = root.join("c/f06");
        let scope = Scope::unconfined(root.clone());
        let r = grep(&scope, &file, &opts("^hit"), 0).unwrap();
        assert_eq!(
            (r.matches.len(), r.next_offset, r.truncated),
            (1, Some(1), true)
        );
        assert_eq!((r.total_matches, r.files_searched), (6, 1));
        assert_eq!(r.matches[0].path, "f06");
    }

    #[test]
    fn confined_search_never_reads_outside() {
        let (_t, base) = tempdir();
        let root = base.join("root");
        write(
            &base,
            &[
                ("outside/secret", "needle out\n"),
                ("root/in", "needle in\n"),
            ],
        );
        symlink(base.join("outside"), root.join("dir-link")).unwrap();
        symlink(base.join("outside/secret"), root.join("file-link")).unwrap();
        symlink("in", root.join("inner-link")).unwrap();
        let scope = Scope::confined(std::slice::from_ref(&root)).unwrap();
        let r = grep(&scope, &root, &opts("needle"), usize::MAX).unwrap();
        assert_eq!(hits(&r), ["in:1:needle in"]);
        assert_eq!(r.files_searched, 1);
        for path in [
            root.join("file-link"),
            root.join("dir-link"),
            root.join("../outside"),
        ] {
            let err = grep(&scope, &path, &opts("needle"), 100).unwrap_err();
            assert!(
                matches!(err, FileError::Outside { .. }),
                "{}: {err}",
                path.display()
            );
        }
        // Unconfined, a symlink named explicitly is followed; inside a tree never.
        let scope = Scope::unconfined(root.clone());
        let r = grep(&scope, &root.join("file-link"), &opts("needle"), 100).unwrap();
        assert_eq!(hits(&r), ["file-link:1:needle out"]);
        let r = grep(&scope, &root, &opts("needle"), 100).unwrap();
        assert_eq!(hits(&r), ["in:1:needle in"]);
    }

    proptest::proptest! {
        /// Whatever order files arrive in, the tally keeps exactly the files
        /// that hold one of the first `keep` matches.
        #[test]
        fn tally_keeps_the_files_the_page_needs(
            counts in proptest::collection::vec(1u64..5, 0..30),
            keep in 1u64..40,
            seed in 0usize..1000,
        ) {
            let files: Vec<(PathBuf, u64)> = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| (PathBuf::from(format!("f{i:02}")), c))
                .collect();
            let mut needed = BTreeMap::new();
            let mut start = 0;
            for (p, c) in &files {
                if start < keep {
                    needed.insert(p.clone(), *c);
                }
                start += c;
            }
            let mut tally = Tally { keep, ..Tally::default() };
            // Some arrival order: rotated, and reversed for odd seeds.
            let mut order: Vec<&(PathBuf, u64)> = files.iter().collect();
            order.rotate_left(seed % files.len().max(1));
            if seed % 2 == 1 {
                order.reverse();
            }
            for (p, c) in order {
                tally.add(p, *c);
            }
            proptest::prop_assert_eq!(&tally.counts, &needed);
            proptest::prop_assert_eq!(tally.matches, counts.iter().sum::<u64>());
        }
    }
}
