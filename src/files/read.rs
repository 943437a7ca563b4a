//! `file action=read`: a page of a file by line range, numbered, within a byte
//! budget; or raw bytes as base64 by byte range. Never reads a whole file:
//! pages are found through a sparse per-file line index (a checkpoint every
//! [`STEP`] lines, kept for recently read files and checked against size and
//! mtime), so a page deep in a large file costs one seek once indexed.
//! Only regular files are read: devices and FIFOs never end or block.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustix::fs::{Mode, OFlags};
use serde::Serialize;

use super::{FileError, Scope, kind_of};

/// Lines between index checkpoints.
pub(super) const STEP: u64 = 4096;
/// Files whose index is kept.
const CACHED_FILES: usize = 32;
/// How long one call may spend indexing; a later call continues from there.
pub(super) const INDEX_TIME: Duration = Duration::from_millis(1500);
/// A NUL in this many leading bytes makes a file binary.
pub(super) const SNIFF: usize = 8192;
/// Bytes read at a time.
pub(super) const CHUNK: usize = 256 * 1024;

/// What to read.
#[derive(Debug, Clone)]
pub enum ReadRange {
    /// Lines `offset..offset+limit` (1-based), numbered.
    Lines { offset: u64, limit: u64 },
    /// Raw bytes, base64-encoded; `length` defaults to what fits the budget.
    Bytes { offset: u64, length: Option<u64> },
}

/// A page of a file.
#[derive(Debug, Clone, Serialize)]
pub struct ReadResult {
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// `text` or `base64`.
    pub encoding: &'static str,
    /// The page: numbered lines (`  N\tline`) or base64 bytes.
    pub content: String,
    /// First line shown (text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u64>,
    /// Last line shown (text); absent when no line was shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u64>,
    /// Lines in the file, once known (the end was reached or indexed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_lines: Option<u64>,
    /// Pass as `offset` to read on; absent at the end of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
    /// A line too long for the budget, shown cut; read it whole as bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_line: Option<CutLine>,
    /// First byte shown (base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
    /// Pass as `byte_offset` to read on (base64); absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_byte_offset: Option<u64>,
}

impl ReadResult {
    /// A text result for `path` that shows nothing yet.
    pub(super) fn empty(path: &Path, size: u64) -> ReadResult {
        ReadResult {
            path: path.display().to_string(),
            size,
            encoding: "text",
            content: String::new(),
            start_line: None,
            end_line: None,
            total_lines: None,
            next_offset: None,
            cut_line: None,
            byte_offset: None,
            next_byte_offset: None,
        }
    }

    /// Show `bytes`, read from `offset`, as base64.
    pub(super) fn set_bytes(&mut self, offset: u64, bytes: &[u8]) {
        self.encoding = "base64";
        self.content = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.byte_offset = Some(offset);
        let end = offset + bytes.len() as u64;
        self.next_byte_offset = (end < self.size).then_some(end);
    }
}

/// How many bytes from `offset` a base64 page shows: `length` if given, at
/// most what fits `budget` once encoded, never past the end.
pub(super) fn bytes_wanted(budget: usize, offset: u64, length: Option<u64>, size: u64) -> u64 {
    let max = (budget / 4 * 3).max(3) as u64;
    length
        .unwrap_or(max)
        .min(max)
        .min(size.saturating_sub(offset))
}

/// Where a line that was cut lives, so its bytes can be fetched.
#[derive(Debug, Clone, Serialize)]
pub struct CutLine {
    pub line: u64,
    pub byte_offset: u64,
    pub shown_bytes: u64,
}

/// Line indexes of recently read files.
#[derive(Default)]
pub struct LineIndexes {
    files: Mutex<HashMap<(u64, u64), Index>>,
}

#[derive(Clone)]
pub(super) struct Index {
    size: u64,
    mtime_ns: i128,
    /// `starts[k]` is the byte offset of line `1 + k * STEP`.
    pub(super) starts: Vec<u64>,
    /// Lines in the file, once the scan reached its end.
    pub(super) total: Option<u64>,
    used: Instant,
}

impl LineIndexes {
    pub(super) fn get(&self, key: (u64, u64), size: u64, mtime_ns: i128) -> Index {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        match files.get(&key) {
            Some(ix) if ix.size == size && ix.mtime_ns == mtime_ns => ix.clone(),
            _ => Index {
                size,
                mtime_ns,
                starts: vec![0],
                total: None,
                used: Instant::now(),
            },
        }
    }

    pub(super) fn put(&self, key: (u64, u64), mut ix: Index) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        ix.used = Instant::now();
        files.insert(key, ix);
        while files.len() > CACHED_FILES {
            let Some(oldest) = files.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| *k) else {
                break;
            };
            files.remove(&oldest);
        }
    }
}

/// Read a page of `path` within `budget` bytes of content.
pub fn read(
    scope: &Scope,
    indexes: &LineIndexes,
    path: &Path,
    range: &ReadRange,
    budget: usize,
) -> Result<ReadResult, FileError> {
    // Non-blocking, so a FIFO without a writer cannot hang the open.
    let fd = scope.open(path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, e))?;
    check_readable(path, kind_of(st.st_mode))?;
    let file = File::from(fd);
    let size = st.st_size as u64;
    let mut result = ReadResult::empty(path, size);
    match *range {
        ReadRange::Bytes { offset, length } => {
            let mut buf = vec![0u8; bytes_wanted(budget, offset, length, size) as usize];
            let got = crate::fsutil::read_full_at(&file, &mut buf, offset)
                .map_err(|e| FileError::io(path, e))?;
            buf.truncate(got);
            result.set_bytes(offset, &buf);
            Ok(result)
        }
        ReadRange::Lines { offset, limit } => {
            let mut head = vec![0u8; SNIFF.min(size as usize)];
            let got = crate::fsutil::read_full_at(&file, &mut head, 0)
                .map_err(|e| FileError::io(path, e))?;
            if memchr::memchr(0, &head[..got]).is_some() {
                return Err(binary(path, size));
            }
            let key = (st.st_dev, st.st_ino);
            let mtime_ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
            let mut ix = indexes.get(key, size, mtime_ns);
            let first = offset.max(1);
            let found = seek_line(&file, &mut ix, first);
            indexes.put(key, ix.clone());
            let (line, at) = found.map_err(|e| match e {
                Seek::Io(e) => FileError::io(path, e),
                Seek::Slow { line, byte } => slow(path, line, byte, size),
            })?;
            if line < first {
                // The file has fewer lines than asked for.
                result.total_lines = ix.total;
                result.start_line = Some(first);
                return Ok(result);
            }
            page(&file, path, &mut result, line, at, limit.max(1), budget)?;
            if result.next_offset.is_none() && ix.total.is_none() {
                // This page reached the end, so the count is known now.
                ix.total = Some(result.end_line.unwrap_or(line - 1));
                indexes.put(key, ix.clone());
            }
            result.total_lines = ix.total;
            Ok(result)
        }
    }
}

/// Only regular files are read: a directory is listed, and devices and
/// FIFOs may never end or may block.
pub(super) fn check_readable(path: &Path, kind: &str) -> Result<(), FileError> {
    match kind {
        "file" => Ok(()),
        "dir" => Err(FileError::Invalid(format!(
            "{} is a directory; list it with file action=list",
            path.display()
        ))),
        other => Err(FileError::Invalid(format!(
            "{} is a {other}, not a regular file: reading it may never end or may block, so \
             file action=read refuses it; sample it with bash (e.g. head -c 4096 FILE | od -c) if you must",
            path.display()
        ))),
    }
}

/// Indexing stopped for this call at `line` (byte `byte` of `size`).
pub(super) fn slow(path: &Path, line: u64, byte: u64, size: u64) -> FileError {
    FileError::Invalid(format!(
        "{} is large: indexed up to line {line} (byte {byte} of {size}) so far; \
         call again to continue, or read bytes with encoding=base64 byte_offset",
        path.display()
    ))
}

enum Seek {
    Io(std::io::Error),
    /// Gave up for now at this line (the index keeps the progress).
    Slow {
        line: u64,
        byte: u64,
    },
}

/// Find where line `target` starts: (target, byte) or, past the end, the
/// number of the line after the last one and the file size.
fn seek_line(file: &File, ix: &mut Index, target: u64) -> Result<(u64, u64), Seek> {
    let k = ((target - 1) / STEP) as usize;
    let known = k.min(ix.starts.len() - 1);
    let mut line = 1 + known as u64 * STEP;
    let mut pos = ix.starts[known];
    if line == target {
        return Ok((line, pos));
    }
    let deadline = Instant::now() + INDEX_TIME;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let got = crate::fsutil::read_full_at(file, &mut buf, pos).map_err(Seek::Io)?;
        if got == 0 {
            // The end: a final line without a newline still counts.
            let total = if pos > 0 && last_byte(file, pos).map_err(Seek::Io)? != b'\n' {
                line
            } else {
                line - 1
            };
            ix.total = Some(total);
            return Ok((total + 1, pos));
        }
        for nl in memchr::memchr_iter(b'\n', &buf[..got]) {
            line += 1;
            let start = pos + nl as u64 + 1;
            if (line - 1).is_multiple_of(STEP) && (line - 1) / STEP == ix.starts.len() as u64 {
                ix.starts.push(start);
            }
            if line == target {
                if start == ix.size && ix.total.is_none() {
                    ix.total = Some(line - 1);
                }
                return Ok((line, start));
            }
        }
        pos += got as u64;
        if Instant::now() > deadline {
            return Err(Seek::Slow { line, byte: pos });
        }
    }
}

/// What one line did to a page being built.
pub(crate) enum Step {
    /// It was added; the next line starts this many bytes further.
    Line(u64),
    /// It does not fit: the page is complete.
    Full,
    /// It alone is bigger than the page: its start was shown, cut; the
    /// caller skips the rest of it.
    Cut,
}

/// Adds the line at the start of `chunk` (line `line`, byte `at` of the
/// file) to the page `out` of `result`, within `budget`. Shared by the
/// local and the remote engine, which differ only in how they read.
pub(crate) fn page_step(
    out: &mut String,
    result: &mut ReadResult,
    path: &Path,
    line: u64,
    at: u64,
    chunk: &[u8],
    budget: usize,
) -> Result<Step, FileError> {
    let size = result.size;
    let (text, complete) = match memchr::memchr(b'\n', chunk) {
        Some(n) => (&chunk[..n], true),
        None if at + chunk.len() as u64 >= size => (chunk, true),
        None => (chunk, false),
    };
    if memchr::memchr(0, text).is_some() {
        return Err(binary(path, size));
    }
    // The bytes of the line, not of its lossy text (which may be longer).
    let raw_len = text.len() as u64;
    let text = String::from_utf8_lossy(text);
    let numbered = format!("{line:>6}\t{text}\n");
    if !complete || out.len() + numbered.len() > budget {
        if !out.is_empty() {
            return Ok(Step::Full);
        }
        // One line bigger than the whole budget: show its start.
        let room = budget.saturating_sub(8).max(1);
        let cut = floor_char_boundary(&text, room);
        out.push_str(&format!("{line:>6}\t{}…\n", &text[..cut]));
        result.cut_line = Some(CutLine {
            line,
            byte_offset: at,
            shown_bytes: cut as u64,
        });
        result.end_line = Some(line);
        return Ok(Step::Cut);
    }
    out.push_str(&numbered);
    result.end_line = Some(line);
    Ok(Step::Line(raw_len + 1))
}

/// Fill `result` with lines from `line` (starting at byte `at`).
fn page(
    file: &File,
    path: &Path,
    result: &mut ReadResult,
    mut line: u64,
    mut at: u64,
    limit: u64,
    budget: usize,
) -> Result<(), FileError> {
    let size = result.size;
    let end_line = line.saturating_add(limit);
    let mut out = String::new();
    let mut buf = vec![0u8; CHUNK.min(budget + 1024).max(4096)];
    result.start_line = Some(line);
    while line < end_line && at < size {
        let got =
            crate::fsutil::read_full_at(file, &mut buf, at).map_err(|e| FileError::io(path, e))?;
        if got == 0 {
            break;
        }
        let chunk = &buf[..got];
        match page_step(&mut out, result, path, line, at, chunk, budget)? {
            Step::Line(advance) => {
                at += advance;
                line += 1;
            }
            Step::Full => break,
            Step::Cut => {
                line += 1;
                // Skip the rest of the long line.
                at = match next_newline(file, at + got as u64)
                    .map_err(|e| FileError::io(path, e))?
                {
                    Some(p) => p + 1,
                    None => size,
                };
                break;
            }
        }
    }
    result.content = out;
    result.next_offset = (at < size).then_some(line);
    Ok(())
}

fn next_newline(file: &File, mut pos: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let got = crate::fsutil::read_full_at(file, &mut buf, pos)?;
        if got == 0 {
            return Ok(None);
        }
        if let Some(n) = memchr::memchr(b'\n', &buf[..got]) {
            return Ok(Some(pos + n as u64));
        }
        pos += got as u64;
    }
}

fn last_byte(file: &File, end: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, end - 1)?;
    Ok(b[0])
}

pub(super) fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

pub(super) fn binary(path: &Path, size: u64) -> FileError {
    FileError::Invalid(format!(
        "{} looks binary (it contains NUL bytes; {size} bytes in all); read it with \
         encoding=base64 and byte_offset/byte_length, or stat it",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, limit: u64) -> ReadRange {
        ReadRange::Lines { offset, limit }
    }

    fn lines(r: &ReadResult) -> Vec<String> {
        r.content
            .lines()
            .map(|l| {
                l.split_once('\t')
                    .map(|(_, t)| t.to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn setup(content: &[u8]) -> (tempfile::TempDir, Scope, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, content).unwrap();
        let scope = Scope::unconfined(t.path().to_owned());
        (t, scope, p)
    }

    #[test]
    fn paging_by_lines_reassembles_the_file_exactly() {
        let text: String = (1..=20_000)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 37)))
            .collect();
        let (_t, scope, p) = setup(text.as_bytes());
        let ix = LineIndexes::default();
        let mut got = String::new();
        let mut offset = 1;
        let mut pages = 0;
        loop {
            let r = read(&scope, &ix, &p, &at(offset, 1000), 8192).unwrap();
            assert!(r.content.len() <= 8192, "page within budget");
            for l in lines(&r) {
                got.push_str(&l);
                got.push('\n');
            }
            pages += 1;
            match r.next_offset {
                Some(n) => {
                    assert_eq!(n, r.end_line.unwrap() + 1);
                    offset = n;
                }
                None => {
                    assert_eq!(r.total_lines, Some(20_000));
                    break;
                }
            }
        }
        assert_eq!(got, text);
        assert!(pages > 20);
        // Deep pages come from the index and number lines right.
        let r = read(&scope, &ix, &p, &at(12_345, 2), 8192).unwrap();
        assert_eq!(r.start_line, Some(12_345));
        assert!(
            r.content.starts_with(" 12345\tline 12345 "),
            "{}",
            r.content
        );
    }

    #[test]
    fn a_last_line_without_newline_and_past_the_end() {
        let (_t, scope, p) = setup(b"a\nb\nc");
        let ix = LineIndexes::default();
        let r = read(&scope, &ix, &p, &at(1, 10), 4096).unwrap();
        assert_eq!(lines(&r), ["a", "b", "c"]);
        assert_eq!(r.next_offset, None);
        let r = read(&scope, &ix, &p, &at(9, 10), 4096).unwrap();
        assert_eq!((r.content.as_str(), r.total_lines), ("", Some(3)));
    }

    #[test]
    fn a_line_longer_than_the_budget_is_cut_and_located() {
        let mut content = b"short\n".to_vec();
        content.extend(std::iter::repeat_n(b'y', 100_000));
        content.extend(b"\nafter\n");
        let (_t, scope, p) = setup(&content);
        let ix = LineIndexes::default();
        let r = read(&scope, &ix, &p, &at(2, 5), 1000).unwrap();
        let cut = r.cut_line.clone().unwrap();
        assert_eq!((cut.line, cut.byte_offset), (2, 6));
        assert!(r.content.len() <= 1000 + 16);
        assert_eq!(r.next_offset, Some(3));
        let r = read(&scope, &ix, &p, &at(3, 5), 1000).unwrap();
        assert_eq!(lines(&r), ["after"]);
    }

    #[test]
    fn binary_files_need_base64_and_byte_ranges_reassemble() {
        let content: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (_t, scope, p) = setup(&content);
        let ix = LineIndexes::default();
        let err = read(&scope, &ix, &p, &at(1, 10), 4096).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let mut got = Vec::new();
        let mut offset = 0;
        loop {
            let r = read(
                &scope,
                &ix,
                &p,
                &ReadRange::Bytes {
                    offset,
                    length: None,
                },
                4096,
            )
            .unwrap();
            assert!(r.content.len() <= 4096);
            got.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&r.content)
                    .unwrap(),
            );
            match r.next_byte_offset {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(got, content);
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let scope = Scope::unconfined(t.path().to_owned());
        let ix = LineIndexes::default();
        for p in [
            "/dev/zero",
            "/dev/urandom",
            fifo.to_str().unwrap(),
            t.path().to_str().unwrap(),
        ] {
            let started = Instant::now();
            let err = read(&scope, &ix, Path::new(p), &at(1, 10), 4096).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(matches!(err, FileError::Invalid(_)), "{p}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_does_not_shift_the_lines_after_it() {
        let (_t, scope, p) = setup(b"\xff\xfe bad\nnext\nlast\n");
        let ix = LineIndexes::default();
        let r = read(&scope, &ix, &p, &at(1, 10), 4096).unwrap();
        assert_eq!(lines(&r), ["\u{fffd}\u{fffd} bad", "next", "last"]);
        let r = read(&scope, &ix, &p, &at(1, 1), 4096).unwrap();
        assert_eq!(r.next_offset, Some(2));
        let r = read(&scope, &ix, &p, &at(2, 1), 4096).unwrap();
        assert_eq!(lines(&r), ["next"]);
    }

    #[test]
    fn a_changed_file_is_reindexed() {
        let (_t, scope, p) = setup(&"x\n".repeat(10_000).into_bytes());
        let ix = LineIndexes::default();
        let r = read(&scope, &ix, &p, &at(9_000, 1), 4096).unwrap();
        assert_eq!(r.start_line, Some(9_000));
        let new: String = (1..=12_000).map(|i| format!("new {i}\n")).collect();
        std::fs::write(&p, new).unwrap();
        let r = read(&scope, &ix, &p, &at(9_000, 1), 4096).unwrap();
        assert_eq!(lines(&r), ["new 9000"]);
        assert_eq!(r.start_line, Some(9_000));
    }
}
