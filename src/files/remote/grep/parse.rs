//! Reading what the host's search program printed: per-file counts
//! (`PATH\0COUNT\n`, from `rg --count --null` or `grep -c --null`, then
//! ripgrep's `--stats`), and matching and context lines (`rg --json`, or
//! `grep -n --null`: `PATH\0LINE:TEXT` for a match, `PATH\0LINE-TEXT` for
//! context, `--` between groups). Output may have been cut short: only
//! whole records count.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use ignore::overrides::Override;

/// Per-file counts, in the order printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) files: Vec<(String, u64)>,
    /// Files searched, from ripgrep's `--stats`.
    pub(super) searched: Option<u64>,
}

pub(super) fn counts(out: &[u8]) -> Counts {
    let mut c = Counts::default();
    let mut rest = out;
    // A record is PATH NUL COUNT newline; the stats after them hold no NUL.
    while let Some(nul) = memchr::memchr(0, rest) {
        let Some(nl) = memchr::memchr(b'\n', &rest[nul..]).map(|n| nul + n) else {
            break;
        };
        let path = String::from_utf8_lossy(&rest[..nul]).into_owned();
        if let Some(n) = std::str::from_utf8(&rest[nul + 1..nl])
            .ok()
            .and_then(|n| n.trim().parse().ok())
        {
            c.files.push((path, n));
        }
        rest = &rest[nl + 1..];
    }
    c.searched = String::from_utf8_lossy(rest)
        .lines()
        .find_map(|l| l.trim().strip_suffix(" files searched")?.parse().ok());
    c
}

/// One line of a file, as the search printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    pub(super) line: u64,
    pub(super) is_match: bool,
    /// The line's bytes (a line end may follow).
    pub(super) text: Vec<u8>,
}

/// The lines printed for one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct FileLines {
    pub(super) events: Vec<Event>,
    /// Everything printed for the file is here.
    pub(super) ended: bool,
    /// The search found it binary.
    pub(super) binary: bool,
}

/// Whole lines of `out` (a last line without its newline was cut off).
fn whole_lines(out: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = memchr::memrchr(b'\n', out).map_or(0, |n| n + 1);
    out[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// `rg --json` output, by path.
pub(super) fn rg_json(out: &[u8]) -> HashMap<String, FileLines> {
    let mut files: HashMap<String, FileLines> = HashMap::new();
    for line in whole_lines(out) {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let data = &msg["data"];
        let Some(path) = data["path"]["text"].as_str() else {
            continue;
        };
        let file = files.entry(path.to_owned()).or_default();
        match msg["type"].as_str() {
            Some(kind @ ("match" | "context")) => {
                let lines = &data["lines"];
                let text = match (lines["text"].as_str(), lines["bytes"].as_str()) {
                    (Some(t), _) => t.as_bytes().to_vec(),
                    (None, Some(b)) => base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default(),
                    (None, None) => continue,
                };
                file.events.push(Event {
                    line: data["line_number"].as_u64().unwrap_or(0),
                    is_match: kind == "match",
                    text,
                });
            }
            Some("end") => {
                file.ended = true;
                file.binary = !data["binary_offset"].is_null();
            }
            _ => {}
        }
    }
    files
}

/// `grep -n --null` output, by path. Paths given to grep are absolute, so a
/// record never starts with `--`.
pub(super) fn grep_lines(out: &[u8]) -> HashMap<String, FileLines> {
    let mut files: HashMap<String, FileLines> = HashMap::new();
    let mut last: Option<String> = None;
    let mut rest = out;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b"--\n") {
            rest = r;
            continue;
        }
        let Some(nul) = memchr::memchr(0, rest) else {
            break;
        };
        let Some(nl) = memchr::memchr(b'\n', &rest[nul..]).map(|n| nul + n) else {
            break;
        };
        let path = String::from_utf8_lossy(&rest[..nul]).into_owned();
        let record = &rest[nul + 1..nl];
        rest = &rest[nl + 1..];
        let digits = record.iter().take_while(|b| b.is_ascii_digit()).count();
        let (Some(line), Some(&sep)) = (
            std::str::from_utf8(&record[..digits])
                .ok()
                .and_then(|d| d.parse().ok()),
            record.get(digits),
        ) else {
            continue;
        };
        if last.as_deref() != Some(path.as_str()) {
            if let Some(prev) = last.take().and_then(|p| files.get_mut(&p)) {
                prev.ended = true;
            }
            last = Some(path.clone());
        }
        files.entry(path).or_default().events.push(Event {
            line,
            is_match: sep == b':',
            text: record[digits + 1..].to_vec(),
        });
    }
    files
}

/// Whether the local engine's walk would search `rel` (a file under
/// `root`): no glob excludes it or a directory on the way to it.
pub(super) fn globs_pass(globs: &Override, root: &Path, rel: &Path) -> bool {
    let parts: Vec<_> = rel.components().collect();
    let mut path = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        if globs.matched(&path, i + 1 < parts.len()).is_ignore() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_then_stats() {
        let out = b"/r/a\x002\n/r/b\nc\x0010\n\n12 matches\n12 matched lines\n2 files contained matches\n7 files searched\n";
        assert_eq!(
            counts(out),
            Counts {
                files: vec![("/r/a".into(), 2), ("/r/b\nc".into(), 10)],
                searched: Some(7),
            }
        );
        // Cut off mid-record: the whole records only.
        assert_eq!(counts(b"/r/a\x002\n/r/b\x001").files, [("/r/a".into(), 2)]);
    }

    #[test]
    fn grep_records_and_separators() {
        let out = b"/r/x\x002-before\n/r/x\x003:hit: 1-2\n--\n/r/y\x001:-e\n/r/y\x002:cut";
        let files = grep_lines(out);
        let x = &files["/r/x"];
        assert!(x.ended);
        assert_eq!(
            x.events,
            [
                Event {
                    line: 2,
                    is_match: false,
                    text: b"before".to_vec()
                },
                Event {
                    line: 3,
                    is_match: true,
                    text: b"hit: 1-2".to_vec()
                },
            ]
        );
        let y = &files["/r/y"];
        assert!(!y.ended);
        assert_eq!(y.events.len(), 1);
        assert_eq!(y.events[0].text, b"-e");
    }

    #[test]
    fn rg_json_lines_bytes_and_ends() {
        let out = concat!(
            r#"{"type":"begin","data":{"path":{"text":"/r/a"}}}"#,
            "\n",
            r#"{"type":"match","data":{"path":{"text":"/r/a"},"lines":{"text":"hit\n"},"line_number":4}}"#,
            "\n",
            r#"{"type":"context","data":{"path":{"text":"/r/a"},"lines":{"bytes":"/wo="},"line_number":5}}"#,
            "\n",
            r#"{"type":"end","data":{"path":{"text":"/r/a"},"binary_offset":null}}"#,
            "\n",
            r#"{"type":"match","data":{"path":{"text":"/r/b"},"lines":{"text":"cut"#,
        );
        let files = rg_json(out.as_bytes());
        let a = &files["/r/a"];
        assert!(a.ended && !a.binary);
        assert_eq!(a.events.len(), 2);
        assert_eq!(a.events[1].text, [0xff, b'\n']);
        assert!(!files.contains_key("/r/b"));
    }
}
