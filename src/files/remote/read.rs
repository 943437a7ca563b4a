//! `file action=read` on an SSH host: the local engine's pages (numbered
//! lines within a byte budget, a line too long for it cut and located,
//! base64 byte ranges, binary files refused), read over SFTP in windows of
//! pipelined requests. Deep pages come from the same sparse line index; SFTP
//! gives mtimes in whole seconds, so an index is also checked against the
//! file itself (a checkpoint must follow a newline) before it is trusted.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Instant;

use crate::files::FileError;
use crate::files::kind_of;
use crate::files::read::{
    CHUNK, INDEX_TIME, Index, ReadRange, ReadResult, SNIFF, STEP, Step, binary, bytes_wanted,
    check_readable, page_step, slow,
};
use crate::ssh::sftp::{File, OpenOptions};

use super::{RemoteFiles, s};

/// Bytes fetched per round trip while scanning for lines.
const SCAN: usize = 1 << 20;

pub(super) async fn read(
    fs: &RemoteFiles,
    path: &Path,
    range: &ReadRange,
    budget: usize,
) -> Result<ReadResult, FileError> {
    // Checked before opening: opening a FIFO would block the SFTP server
    // (a swap between the two is a window SFTP leaves open).
    let st = fs
        .sftp
        .stat(s(path)?)
        .await
        .map_err(|e| FileError::io(path, e))?;
    check_readable(path, kind_of(st.mode))?;
    let file = fs
        .sftp
        .open(s(path)?, OpenOptions::read())
        .await
        .map_err(|e| FileError::io(path, e))?;
    let result = read_open(fs, &file, path, st.size, st.mtime, range, budget).await;
    let closed = file.close().await.map_err(|e| FileError::io(path, e));
    let result = result?;
    closed?;
    Ok(result)
}

async fn read_open(
    fs: &RemoteFiles,
    file: &File,
    path: &Path,
    size: u64,
    mtime: i64,
    range: &ReadRange,
    budget: usize,
) -> Result<ReadResult, FileError> {
    let io = |e| FileError::io(path, e);
    let mut result = ReadResult::empty(path, size);
    match *range {
        ReadRange::Bytes { offset, length } => {
            let want = bytes_wanted(budget, offset, length, size) as usize;
            let buf = file.read_at(offset, want).await.map_err(io)?;
            result.set_bytes(offset, &buf);
            Ok(result)
        }
        ReadRange::Lines { offset, limit } => {
            let head = file
                .read_at(0, SNIFF.min(size as usize))
                .await
                .map_err(io)?;
            if memchr::memchr(0, &head).is_some() {
                return Err(binary(path, size));
            }
            let key = (path_key(path), 0);
            let mtime_ns = i128::from(mtime) * 1_000_000_000;
            let mut ix = fs.indexes.get(key, size, mtime_ns);
            let first = offset.max(1);
            let found = seek_line(file, &mut ix, first, size).await;
            fs.indexes.put(key, ix.clone());
            let (line, at) = found.map_err(|e| match e {
                Seek::Io(e) => io(e),
                Seek::Slow { line, byte } => slow(path, line, byte, size),
            })?;
            if line < first {
                // The file has fewer lines than asked for.
                result.total_lines = ix.total;
                result.start_line = Some(first);
                return Ok(result);
            }
            page(file, path, &mut result, line, at, limit.max(1), budget).await?;
            if result.next_offset.is_none() && ix.total.is_none() {
                // This page reached the end, so the count is known now.
                ix.total = Some(result.end_line.unwrap_or(line - 1));
                fs.indexes.put(key, ix.clone());
            }
            result.total_lines = ix.total;
            Ok(result)
        }
    }
}

/// The index key of a remote file: a hash of its path (the engine is per
/// host; size and mtime are checked on every use).
fn path_key(path: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

enum Seek {
    Io(std::io::Error),
    /// Gave up for now at this line (the index keeps the progress).
    Slow {
        line: u64,
        byte: u64,
    },
}

/// Find where line `target` starts, as the local engine's `seek_line` does:
/// (target, byte) or, past the end, the number of the line after the last
/// one and the file size.
async fn seek_line(
    file: &File,
    ix: &mut Index,
    target: u64,
    size: u64,
) -> Result<(u64, u64), Seek> {
    let k = ((target - 1) / STEP) as usize;
    let mut known = k.min(ix.starts.len() - 1);
    if known > 0 {
        // A checkpoint must start a line; if not, the file changed within
        // the mtime's second and the index is dropped.
        let at = ix.starts[known] - 1;
        let b = file.read_at(at, 1).await.map_err(Seek::Io)?;
        if b.first() != Some(&b'\n') {
            ix.starts.truncate(1);
            ix.total = None;
            known = 0;
        }
    }
    let mut line = 1 + known as u64 * STEP;
    let mut pos = ix.starts[known];
    if line == target {
        return Ok((line, pos));
    }
    let deadline = Instant::now() + INDEX_TIME;
    let mut last = None;
    loop {
        let buf = file.read_at(pos, SCAN).await.map_err(Seek::Io)?;
        if buf.is_empty() {
            // The end: a final line without a newline still counts.
            let total = match last {
                Some(b) if b != b'\n' => line,
                None if pos > 0 => {
                    let b = file.read_at(pos - 1, 1).await.map_err(Seek::Io)?;
                    if b.first() == Some(&b'\n') {
                        line - 1
                    } else {
                        line
                    }
                }
                _ => line - 1,
            };
            ix.total = Some(total);
            return Ok((total + 1, pos));
        }
        for nl in memchr::memchr_iter(b'\n', &buf) {
            line += 1;
            let start = pos + nl as u64 + 1;
            if (line - 1).is_multiple_of(STEP) && (line - 1) / STEP == ix.starts.len() as u64 {
                ix.starts.push(start);
            }
            if line == target {
                if start == size && ix.total.is_none() {
                    ix.total = Some(line - 1);
                }
                return Ok((line, start));
            }
        }
        last = buf.last().copied();
        pos += buf.len() as u64;
        if Instant::now() > deadline {
            return Err(Seek::Slow { line, byte: pos });
        }
    }
}

/// Fill `result` with lines from `line` (starting at byte `at`), exactly as
/// the local engine's `page` does: a line is cut when it is longer than a
/// read window or than the budget; bytes come from a buffer refilled per
/// window, not per line.
async fn page(
    file: &File,
    path: &Path,
    result: &mut ReadResult,
    mut line: u64,
    mut at: u64,
    limit: u64,
    budget: usize,
) -> Result<(), FileError> {
    let io = |e| FileError::io(path, e);
    let size = result.size;
    let end_line = line.saturating_add(limit);
    let window = CHUNK.min(budget + 1024).max(4096);
    let mut out = String::new();
    // Bytes of the file from `buf_at`.
    let (mut buf, mut buf_at) = (Vec::new(), at);
    result.start_line = Some(line);
    while line < end_line && at < size {
        let from = (at - buf_at) as usize;
        let buf_end = buf_at + buf.len() as u64;
        if memchr::memchr(b'\n', &buf[from..]).is_none()
            && buf.len() - from < window
            && buf_end < size
        {
            // Not a whole line nor a whole window yet: fetch the next ones.
            let more = file
                .read_at(buf_end, window.max(SCAN.min(budget * 2)))
                .await
                .map_err(io)?;
            if more.is_empty() {
                break;
            }
            buf.drain(..from);
            buf_at = at;
            buf.extend_from_slice(&more);
            continue;
        }
        let chunk = &buf[from..(from + window).min(buf.len())];
        match page_step(&mut out, result, path, line, at, chunk, budget)? {
            Step::Line(advance) => {
                at += advance;
                line += 1;
            }
            Step::Full => break,
            Step::Cut => {
                line += 1;
                // Skip the rest of the long line.
                at = match next_newline(file, at + chunk.len() as u64)
                    .await
                    .map_err(io)?
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

async fn next_newline(file: &File, mut pos: u64) -> std::io::Result<Option<u64>> {
    loop {
        let buf = file.read_at(pos, SCAN).await?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let Some(n) = memchr::memchr(b'\n', &buf) {
            return Ok(Some(pos + n as u64));
        }
        pos += buf.len() as u64;
    }
}
