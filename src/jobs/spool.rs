//! The output spool: a job's merged stdout+stderr as numbered segment files,
//! addressed by absolute byte offset, plus a sparse line index.
//!
//! Layout in the job directory:
//! - `out.NNNNNN`: segment N holds bytes `[N*S, (N+1)*S)` of the output.
//! - `spool.meta`: the segment size `S`, written before segment 1 exists
//!   (while there is only segment 0, `S` does not matter).
//! - `lines.idx`: little-endian `u64` newline counts before each multiple of
//!   [`INDEX_STEP`] (entry k is for offset `(k+1) * INDEX_STEP`), created with
//!   its first entry.
//!
//! Everything, the directory included, is created lazily: a job that prints
//! nothing has no files, and one that prints a little has one.
//!
//! The per-job cap keeps the first segments (head) and the most recent ones
//! (tail) and deletes whole segments in between, so the dropped range is exact
//! and is simply the gap in segment numbers. Reads cost the same at any offset
//! and never hold more than the requested page in memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Distance between line-index entries. Segment sizes are multiples of it.
pub const INDEX_STEP: u64 = 64 * 1024;

const META: &str = "spool.meta";
const INDEX: &str = "lines.idx";
/// The segment size of a spool without `spool.meta`: it has only segment 0.
const ONE_SEGMENT: u64 = u64::MAX;

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("out.{n:06}"))
}

fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Round a configured segment size to a valid one and derive (head, tail)
/// segment counts from the cap.
pub fn layout(segment_size: u64, cap: u64) -> (u64, u64, u64) {
    let seg = (segment_size.max(INDEX_STEP) / INDEX_STEP) * INDEX_STEP;
    let total = (cap / seg).max(2);
    let head = total / 2;
    (seg, head, total - head)
}

/// Appends output; used only by the supervisor.
pub struct SpoolWriter {
    dir: PathBuf,
    seg: u64,
    head: u64,
    tail: u64,
    file: Option<File>,
    index: Option<File>,
    total: u64,
    lines: u64,
}

impl SpoolWriter {
    /// A writer for `dir`. The directory and files are created with the first
    /// output, so a job that prints nothing costs no file operations.
    pub fn new(dir: &Path, segment_size: u64, cap: u64) -> SpoolWriter {
        let (seg, head, tail) = layout(segment_size, cap);
        SpoolWriter {
            dir: dir.to_owned(),
            seg,
            head,
            tail,
            file: None,
            index: None,
            total: 0,
            lines: 0,
        }
    }

    /// Write `spool.meta` atomically, so a reader never sees a half-written size.
    fn write_meta(&self) -> io::Result<()> {
        let tmp = self.dir.join(".spool.meta.tmp");
        create_private(&tmp)?.write_all(self.seg.to_string().as_bytes())?;
        std::fs::rename(&tmp, self.dir.join(META))
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Count of complete lines plus a final partial one.
    pub fn lines(&self, last_byte_newline: bool) -> u64 {
        self.lines + u64::from(self.total > 0 && !last_byte_newline)
    }

    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let in_seg = self.total % self.seg;
            if in_seg == 0 || self.file.is_none() {
                self.open_segment(self.total / self.seg)?;
            }
            let room = (self.seg - in_seg) as usize;
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.index_lines(now)?;
            if let Some(f) = self.file.as_mut() {
                f.write_all(now)?;
            }
            self.total += now.len() as u64;
            buf = rest;
        }
        Ok(())
    }

    /// Count newlines in `chunk` (which starts at `self.total`) and append an
    /// index entry for each `INDEX_STEP` boundary it crosses.
    fn index_lines(&mut self, chunk: &[u8]) -> io::Result<()> {
        let start = self.total;
        let end = start + chunk.len() as u64;
        let mut pos = start;
        let mut boundary = (start / INDEX_STEP + 1) * INDEX_STEP;
        while boundary <= end {
            let part = &chunk[(pos - start) as usize..(boundary - start) as usize];
            self.lines += memchr::memchr_iter(b'\n', part).count() as u64;
            let index = match self.index.as_mut() {
                Some(f) => f,
                None => self.index.insert(create_private(&self.dir.join(INDEX))?),
            };
            index.write_all(&self.lines.to_le_bytes())?;
            pos = boundary;
            boundary += INDEX_STEP;
        }
        self.lines += memchr::memchr_iter(b'\n', &chunk[(pos - start) as usize..]).count() as u64;
        Ok(())
    }

    fn open_segment(&mut self, n: u64) -> io::Result<()> {
        match n {
            0 => crate::fsutil::create_private_dir(&self.dir)?,
            1 => self.write_meta()?,
            _ => {}
        }
        self.file = Some(create_private(&segment_path(&self.dir, n))?);
        // Past the cap: drop the oldest tail segment, keeping the head intact.
        if n >= self.head + self.tail {
            let victim = n - self.tail;
            if victim >= self.head {
                match std::fs::remove_file(segment_path(&self.dir, victim)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A range of bytes the cap removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub from: u64,
    pub to: u64,
}

/// Reads a spool written by [`SpoolWriter`], possibly while it grows.
#[derive(Debug)]
pub struct SpoolReader {
    dir: PathBuf,
    seg: u64,
    /// Total bytes written.
    len: u64,
    dropped: Option<Dropped>,
}

impl SpoolReader {
    /// Open the spool in `dir`, taking a snapshot of its current length.
    /// A missing directory reads as empty: the supervisor creates it with the
    /// first output (whether a spool was deleted is the job row's business).
    pub fn open(dir: &Path) -> io::Result<SpoolReader> {
        let mut seg = read_meta(dir)?;
        let mut present = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(SpoolReader {
                    dir: dir.to_owned(),
                    seg: ONE_SEGMENT,
                    len: 0,
                    dropped: None,
                });
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix("out."))
                .and_then(|s| s.parse::<u64>().ok())
            {
                present.push(n);
            }
        }
        present.sort_unstable();
        if seg.is_none() && present.last().is_some_and(|&n| n > 0) {
            // Segment 1 appeared after we looked for the size it comes with.
            seg = read_meta(dir)?;
        }
        let seg = seg.unwrap_or(ONE_SEGMENT);
        let len = match present.last() {
            Some(&last) => last * seg + std::fs::metadata(segment_path(dir, last))?.len(),
            None => 0,
        };
        // The cap deletes one contiguous run of segments.
        let dropped = present
            .windows(2)
            .find(|w| w[1] > w[0] + 1)
            .map(|w| Dropped {
                from: (w[0] + 1) * seg,
                to: w[1] * seg,
            });
        Ok(SpoolReader {
            dir: dir.to_owned(),
            seg,
            len,
            dropped,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dropped(&self) -> Option<Dropped> {
        self.dropped
    }

    /// Read up to `max` bytes starting at `offset`, stopping at the end or at
    /// the start of a dropped range. An offset inside a dropped range reads nothing.
    pub fn read(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut end = self.len.min(offset.saturating_add(max as u64));
        if let Some(d) = self.dropped {
            if offset >= d.from && offset < d.to {
                return Ok(Vec::new());
            }
            if offset < d.from {
                end = end.min(d.from);
            }
        }
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let n = pos / self.seg;
            let within = pos % self.seg;
            let want = (self.seg - within).min(end - pos) as usize;
            let file = File::open(segment_path(&self.dir, n))?;
            let start = out.len();
            out.resize(start + want, 0);
            let got = crate::fsutil::read_full_at(&file, &mut out[start..], within)?;
            out.truncate(start + got);
            if got < want {
                break;
            }
            pos += want as u64;
        }
        Ok(out)
    }

    /// Number of newlines before `offset` (offset must not be inside a dropped range).
    pub fn newlines_before(&self, offset: u64) -> io::Result<u64> {
        let k = offset / INDEX_STEP;
        let mut base = 0;
        if k > 0 {
            let entry = File::open(self.dir.join(INDEX)).and_then(|mut idx| {
                let mut b = [0u8; 8];
                idx.seek(SeekFrom::Start((k - 1) * 8))?;
                idx.read_exact(&mut b).map(|()| u64::from_le_bytes(b))
            });
            match entry {
                Ok(n) => base = n,
                // The writer has not written this entry yet: count from the start.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::NotFound
                    ) =>
                {
                    return self.count_newlines(0, offset);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(base + self.count_newlines(k * INDEX_STEP, offset)?)
    }

    fn count_newlines(&self, from: u64, to: u64) -> io::Result<u64> {
        let mut n = 0;
        let mut pos = from;
        while pos < to {
            let chunk = self.read(pos, (to - pos).min(1 << 20) as usize)?;
            if chunk.is_empty() {
                break;
            }
            n += memchr::memchr_iter(b'\n', &chunk).count() as u64;
            pos += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Total lines: newlines plus a trailing partial line.
    pub fn total_lines(&self) -> io::Result<u64> {
        if self.len == 0 {
            return Ok(0);
        }
        let nl = self.newlines_before(self.len)?;
        let last = self.read(self.len - 1, 1)?;
        Ok(nl + u64::from(last.first() != Some(&b'\n')))
    }
}

/// The segment size from `spool.meta`, or `None` while there is none.
fn read_meta(dir: &Path) -> io::Result<Option<u64>> {
    match std::fs::read_to_string(dir.join(META)) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt spool.meta")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(w: &mut SpoolWriter, total: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut i = 0u64;
        while all.len() < total {
            let line = format!("line {i}\n");
            all.extend_from_slice(line.as_bytes());
            i += 1;
        }
        all.truncate(total);
        for chunk in all.chunks(7777) {
            w.write(chunk).unwrap();
        }
        all
    }

    #[test]
    fn reads_back_exactly_with_line_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path(), INDEX_STEP, 1 << 30);
        let all = fill(&mut w, 1_000_003);
        let r = SpoolReader::open(dir.path()).unwrap();
        assert_eq!(r.len(), all.len() as u64);
        assert_eq!(r.dropped(), None);
        assert_eq!(r.read(0, usize::MAX).unwrap(), all);
        for off in [0u64, 1, 65535, 65536, 65537, 500_000, 1_000_003] {
            let expect = all[..off as usize].iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(r.newlines_before(off).unwrap(), expect, "offset {off}");
        }
        let lines = all.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        assert_eq!(r.total_lines().unwrap(), lines);
        assert_eq!(w.lines(false), lines);
    }

    #[test]
    fn files_appear_only_when_output_needs_them() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("job");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        // Nothing written: no directory, and it reads as empty.
        let mut w = SpoolWriter::new(&dir, INDEX_STEP, 1 << 30);
        assert!(!dir.exists());
        let r = SpoolReader::open(&dir).unwrap();
        assert_eq!((r.len(), r.total_lines().unwrap()), (0, 0));
        // A little output: one segment file and nothing else.
        w.write(b"hi\nthere").unwrap();
        assert_eq!(names(), ["out.000000"]);
        let r = SpoolReader::open(&dir).unwrap();
        assert_eq!(r.read(0, 100).unwrap(), b"hi\nthere");
        assert_eq!(r.total_lines().unwrap(), 2);
        // Past the first index step: the index; past the first segment: the size.
        let big = vec![b'x'; INDEX_STEP as usize];
        w.write(&big).unwrap();
        assert_eq!(
            names(),
            ["lines.idx", "out.000000", "out.000001", "spool.meta"]
        );
        let r = SpoolReader::open(&dir).unwrap();
        assert_eq!(r.len(), 8 + INDEX_STEP);
        assert_eq!(r.read(INDEX_STEP - 1, 3).unwrap(), b"xxx");
        assert_eq!(r.newlines_before(r.len()).unwrap(), 1);
    }

    #[test]
    fn cap_keeps_head_and_tail_and_reports_exact_gap() {
        let dir = tempfile::tempdir().unwrap();
        // 4 segments of 64 KiB: 2 head, 2 tail.
        let mut w = SpoolWriter::new(dir.path(), INDEX_STEP, 4 * INDEX_STEP);
        let all = fill(&mut w, 10 * INDEX_STEP as usize + 100);
        let r = SpoolReader::open(dir.path()).unwrap();
        assert_eq!(r.len(), all.len() as u64);
        let d = r.dropped().unwrap();
        assert_eq!((d.from, d.to), (2 * INDEX_STEP, 9 * INDEX_STEP));
        assert_eq!(
            r.read(0, usize::MAX).unwrap(),
            &all[..d.from as usize],
            "head stops at the gap"
        );
        assert!(r.read(d.from + 5, 10).unwrap().is_empty());
        assert_eq!(r.read(d.to, usize::MAX).unwrap(), &all[d.to as usize..]);
        let expect = all[..d.to as usize].iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(
            r.newlines_before(d.to).unwrap(),
            expect,
            "index survives the drop"
        );
    }
}
