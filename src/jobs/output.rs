//! Views of a spool sized for a model's context: a head+tail excerpt, a page
//! from a cursor, the last N lines, and a grep. Every view is cut at line
//! boundaries where it can be, stays within its byte budget, and says exactly
//! which bytes it left out. Memory use is bounded by the budget, never by the
//! size of the output.

use std::io;

use super::spool::{Dropped, SpoolReader};

/// A head+tail excerpt of the whole output.
#[derive(Debug, Clone, PartialEq)]
pub struct Excerpt {
    pub head: String,
    pub tail: String,
    pub omitted: Option<Omitted>,
}

/// Bytes `[from, to)` not shown, with the lines they cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Omitted {
    pub from: u64,
    pub to: u64,
    pub first_line: u64,
    pub last_line: u64,
    /// Part of the range the output cap removed for good.
    pub dropped: Option<Dropped>,
}

/// A contiguous page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub text: String,
    /// Offset of the first byte shown.
    pub start: u64,
    /// Cursor for the next page.
    pub next: u64,
    /// 1-based line number of the first line shown.
    pub first_line: u64,
    /// Set when the cursor pointed into a range the cap removed.
    pub skipped: Option<Dropped>,
}

/// Matching lines from a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct GrepPage {
    /// `line-number: text` per match.
    pub text: String,
    pub matches: usize,
    pub start: u64,
    /// Where the scan stopped; continue from here.
    pub next: u64,
}

/// Largest prefix of `b` not ending inside a UTF-8 sequence.
fn utf8_end(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(3) {
        let c = b[n - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

/// Length of the longest prefix of `b` within `budget`, ending at a newline
/// when there is one.
fn head_cut(b: &[u8], budget: usize) -> usize {
    if b.len() <= budget {
        return b.len();
    }
    match memchr::memrchr(b'\n', &b[..budget]) {
        Some(i) => i + 1,
        None => utf8_end(&b[..budget]),
    }
}

/// Start of the longest suffix of `b` within `budget`, starting after a
/// newline when there is one.
fn tail_cut(b: &[u8], budget: usize) -> usize {
    if b.len() <= budget {
        return 0;
    }
    let from = b.len() - budget;
    match memchr::memchr(b'\n', &b[from..]) {
        Some(i) if from + i + 1 < b.len() => from + i + 1,
        _ => {
            let mut s = from;
            while s < b.len() && b[s] & 0xC0 == 0x80 {
                s += 1;
            }
            s
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The whole output if it fits `budget`, else its head and tail with the
/// exact omitted range.
pub fn excerpt(r: &SpoolReader, budget: usize) -> io::Result<Excerpt> {
    excerpt_range(r, 0, r.len(), budget)
}

/// [`excerpt`] of the bytes `[from, to)` only (a session command's output).
pub fn excerpt_range(r: &SpoolReader, from: u64, to: u64, budget: usize) -> io::Result<Excerpt> {
    let to = to.min(r.len());
    let from = from.min(to);
    let overlaps_drop = r.dropped().is_some_and(|d| d.from < to && d.to > from);
    if to - from <= budget as u64 && !overlaps_drop {
        let all = r.read(from, (to - from) as usize)?;
        return Ok(Excerpt {
            head: text(&all),
            tail: String::new(),
            omitted: None,
        });
    }
    let half = (budget / 2).max(1);
    let head_raw = r.read(from, half.min((to - from) as usize) + 1)?;
    let head_raw = &head_raw[..head_raw.len().min((to - from) as usize)];
    let head_len = head_cut(head_raw, half);
    let head_end = from + head_len as u64;
    let mut tail_start = to.saturating_sub((budget - head_len) as u64).max(head_end);
    if let Some(d) = r.dropped()
        && tail_start < d.to
        && tail_start >= d.from
    {
        tail_start = d.to.min(to);
    }
    let tail_raw = r.read(tail_start, (to - tail_start) as usize)?;
    let tail_budget = budget - head_len;
    let cut = tail_cut(&tail_raw, tail_budget);
    let tail_from = tail_start + cut as u64;
    let omitted = if tail_from > head_end {
        let first_line = r.newlines_before(head_end)? + 1;
        let last_line = r.newlines_before(tail_from)?;
        Some(Omitted {
            from: head_end,
            to: tail_from,
            first_line,
            last_line: last_line.max(first_line),
            dropped: r.dropped(),
        })
    } else {
        None
    };
    Ok(Excerpt {
        head: text(&head_raw[..head_len]),
        tail: text(&tail_raw[cut..]),
        omitted,
    })
}

/// Up to `budget` bytes from `cursor`, ending at a line boundary when possible.
pub fn page(r: &SpoolReader, cursor: u64, budget: usize) -> io::Result<Page> {
    let mut start = cursor.min(r.len());
    let mut skipped = None;
    if let Some(d) = r.dropped()
        && start >= d.from
        && start < d.to
    {
        skipped = Some(d);
        start = d.to;
    }
    let raw = r.read(start, budget + 1)?;
    let n = head_cut(&raw, budget);
    let first_line = r.newlines_before(start)? + 1;
    Ok(Page {
        text: text(&raw[..n]),
        start,
        next: start + n as u64,
        first_line,
        skipped,
    })
}

/// The last `lines` lines, within `budget`.
pub fn tail(r: &SpoolReader, lines: u64, budget: usize) -> io::Result<Page> {
    let len = r.len();
    let floor = r.dropped().map(|d| d.to).unwrap_or(0);
    let mut start = len;
    let mut seen = 0u64;
    // A final newline ends the last line rather than starting a new one.
    let mut skip_last_nl = true;
    'scan: while start > floor && (len - start) <= budget as u64 {
        let from = start.saturating_sub(64 * 1024).max(floor);
        let chunk = r.read(from, (start - from) as usize)?;
        for (i, &b) in chunk.iter().enumerate().rev() {
            if b == b'\n' {
                if skip_last_nl && from + i as u64 == len - 1 {
                    skip_last_nl = false;
                    continue;
                }
                seen += 1;
                if seen >= lines {
                    start = from + i as u64 + 1;
                    break 'scan;
                }
            }
            skip_last_nl = false;
        }
        start = from;
    }
    let raw = r.read(start, (len - start) as usize)?;
    let cut = tail_cut(&raw, budget);
    let start = start + cut as u64;
    let first_line = r.newlines_before(start)? + 1;
    Ok(Page {
        text: text(&raw[cut..]),
        start,
        next: len,
        first_line,
        skipped: None,
    })
}

/// Lines matching `re` from `cursor` on, scanning at most `scan_limit` bytes.
pub fn grep(
    r: &SpoolReader,
    cursor: u64,
    re: &regex::bytes::Regex,
    budget: usize,
    scan_limit: u64,
) -> io::Result<GrepPage> {
    let mut pos = cursor.min(r.len());
    if let Some(d) = r.dropped()
        && pos >= d.from
        && pos < d.to
    {
        pos = d.to;
    }
    let start = pos;
    let mut line_no = r.newlines_before(pos)? + 1;
    let mut out = String::new();
    let mut matches = 0;
    let end_scan = pos.saturating_add(scan_limit).min(r.len());
    while pos < end_scan {
        let chunk = r.read(pos, (end_scan - pos).min(1 << 20) as usize)?;
        if chunk.is_empty() {
            // Reached the start of a dropped range: jump over it.
            match r.dropped() {
                Some(d) if pos == d.from => {
                    line_no = r.newlines_before(d.to)? + 1;
                    pos = d.to;
                    continue;
                }
                _ => break,
            }
        }
        let mut consumed = 0;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let complete = line.ends_with(b"\n");
            // A partial line at the chunk end is re-read with the next chunk,
            // unless it is the very end of the output or longer than a chunk.
            if !complete && consumed > 0 && pos + (consumed + line.len()) as u64 != r.len() {
                break;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if re.is_match(body) {
                let entry = format!("{line_no}: {}\n", String::from_utf8_lossy(body));
                if out.len() + entry.len() > budget && matches > 0 {
                    return Ok(GrepPage {
                        text: out,
                        matches,
                        start,
                        next: pos + consumed as u64,
                    });
                }
                out.push_str(&entry);
                matches += 1;
            }
            consumed += line.len();
            if complete {
                line_no += 1;
            }
        }
        pos += consumed as u64;
    }
    Ok(GrepPage {
        text: out,
        matches,
        start,
        next: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::super::spool::{INDEX_STEP, SpoolWriter};
    use super::*;

    fn spool(data: &[u8], cap: u64) -> (tempfile::TempDir, SpoolReader) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(dir.path(), INDEX_STEP, cap);
        w.write(data).unwrap();
        let r = SpoolReader::open(dir.path()).unwrap();
        (dir, r)
    }

    fn numbers(n: u64) -> Vec<u8> {
        (1..=n)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn small_output_is_shown_whole() {
        let (_d, r) = spool(b"hi\n", 1 << 30);
        let e = excerpt(&r, 100).unwrap();
        assert_eq!(
            (e.head.as_str(), e.tail.as_str(), e.omitted),
            ("hi\n", "", None)
        );
    }

    #[test]
    fn excerpt_is_head_and_tail_at_line_boundaries_within_budget() {
        let data = numbers(100_000);
        let (_d, r) = spool(&data, 1 << 30);
        let e = excerpt(&r, 1000).unwrap();
        assert!(e.head.len() + e.tail.len() <= 1000);
        assert!(e.head.starts_with("1\n2\n") && e.head.ends_with('\n'));
        assert!(e.tail.ends_with("100000\n"));
        let o = e.omitted.unwrap();
        assert_eq!(o.from as usize, e.head.len());
        assert_eq!(o.to as usize, data.len() - e.tail.len());
        // Head + omitted + tail is exactly the output.
        let mut whole = e.head.clone().into_bytes();
        whole.extend_from_slice(&data[o.from as usize..o.to as usize]);
        whole.extend_from_slice(e.tail.as_bytes());
        assert_eq!(whole, data);
        let first_hidden: u64 = std::str::from_utf8(&data[o.from as usize..])
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(o.first_line, first_hidden);
    }

    #[test]
    fn pages_reassemble_the_output() {
        let data = numbers(50_000);
        let (_d, r) = spool(&data, 1 << 30);
        let mut cursor = 0;
        let mut got = Vec::new();
        let mut expect_line = 1;
        loop {
            let p = page(&r, cursor, 4096).unwrap();
            if p.text.is_empty() {
                break;
            }
            assert!(p.text.len() <= 4096 && p.text.ends_with('\n'));
            assert_eq!(p.first_line, expect_line);
            expect_line += p.text.matches('\n').count() as u64;
            got.extend_from_slice(p.text.as_bytes());
            cursor = p.next;
        }
        assert_eq!(got, data);
    }

    #[test]
    fn tail_and_grep() {
        let data = numbers(10_000);
        let (_d, r) = spool(&data, 1 << 30);
        let t = tail(&r, 3, 1000).unwrap();
        assert_eq!(t.text, "9998\n9999\n10000\n");
        assert_eq!(t.first_line, 9998);
        let (_d2, r2) = spool(b"a\nb\nno newline", 1 << 30);
        assert_eq!(tail(&r2, 2, 100).unwrap().text, "b\nno newline");
        let re = regex::bytes::Regex::new("^99[0-9]$").unwrap();
        let g = grep(&r, 0, &re, 10_000, u64::MAX).unwrap();
        assert_eq!(g.matches, 10);
        assert!(g.text.starts_with("990: 990\n"));
        assert_eq!(g.next, data.len() as u64);
        let small = grep(
            &r,
            0,
            &regex::bytes::Regex::new("5").unwrap(),
            100,
            u64::MAX,
        )
        .unwrap();
        assert!(small.text.len() <= 100 && small.next < data.len() as u64);
        let rest = grep(
            &r,
            small.next,
            &regex::bytes::Regex::new("5").unwrap(),
            1 << 20,
            u64::MAX,
        )
        .unwrap();
        let all = grep(
            &r,
            0,
            &regex::bytes::Regex::new("5").unwrap(),
            1 << 20,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(
            small.matches + rest.matches,
            all.matches,
            "paged grep loses nothing"
        );
    }

    #[test]
    fn dropped_middle_is_reported_and_skipped() {
        let data = numbers(200_000); // ~1.2 MB, cap 4 x 64 KiB
        let (_d, r) = spool(&data, 4 * INDEX_STEP);
        let d = r.dropped().unwrap();
        let e = excerpt(&r, 2000).unwrap();
        assert_eq!(e.omitted.unwrap().dropped, Some(d));
        assert!(e.tail.ends_with("200000\n"));
        let p = page(&r, d.from + 10, 100).unwrap();
        assert_eq!((p.skipped, p.start), (Some(d), d.to));
        assert_eq!(
            p.text.as_bytes(),
            &data[d.to as usize..d.to as usize + p.text.len()]
        );
    }

    #[test]
    fn cuts_never_split_utf8() {
        let data = "é".repeat(1000);
        let (_d, r) = spool(data.as_bytes(), 1 << 30);
        let p = page(&r, 0, 101).unwrap();
        assert_eq!(p.text.len(), 100);
        assert!(!p.text.contains('\u{FFFD}'));
    }
}
