//! The two halves of a session shell's integration protocol, as pure parsers.
//!
//! Before each prompt the shell's hook reports on a *side channel* (a pipe
//! the terminal never sees) `E\0END\0STATUS\0CWD\0NEXT\0`: the command's
//! end, its status and the cwd, with two tokens of fresh random digits —
//! END, drawn now, and NEXT, which the next command line's `PS0` will print
//! (`P\0PID\0` comes once at start). The hooks also print
//! `ESC ] 6973 ; TOKEN BEL` into the terminal: END right away, NEXT when a
//! command starts. Terminal output and the side channel travel separately,
//! so only these in-band marks place the events exactly.
//!
//! Truth (exit status, cwd, which token) comes only from the side channel;
//! a mark only counts when its token was announced there, once. Output
//! cannot guess an END token drawn after it was printed, so it can neither
//! end a command early nor change its status; a NEXT token is printed
//! before the command runs, so a copy printed by the command comes too late
//! to count.

/// Longest token accepted in an in-band mark.
const MAX_TOKEN: usize = 40;
/// The in-band mark's prefix: OSC 6973 (an unassigned number; terminals ignore it).
const PREFIX: &[u8] = b"\x1b]6973;";
/// Longest side-channel field (a cwd is at most PATH_MAX).
const MAX_FIELD: usize = 8192;

/// A piece of terminal output: plain bytes, or a mark with its token.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    Mark(String),
}

/// Splits terminal output into bytes and in-band marks, across reads.
#[derive(Debug, Default)]
pub struct MarkScanner {
    /// The start of a possible mark held back from the previous read.
    held: Vec<u8>,
}

impl MarkScanner {
    pub fn feed(&mut self, input: &[u8]) -> Vec<Piece> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        let mut out = Vec::new();
        let mut plain_from = 0;
        let mut i = 0;
        while let Some(off) = memchr::memchr(0x1b, &buf[i..]) {
            let at = i + off;
            match mark_at(&buf[at..]) {
                Match::Mark(token, len) => {
                    if at > plain_from {
                        out.push(Piece::Bytes(buf[plain_from..at].to_vec()));
                    }
                    out.push(Piece::Mark(token));
                    i = at + len;
                    plain_from = i;
                }
                Match::Partial => {
                    if at > plain_from {
                        out.push(Piece::Bytes(buf[plain_from..at].to_vec()));
                    }
                    self.held = buf[at..].to_vec();
                    return out;
                }
                Match::No => i = at + 1,
            }
        }
        if buf.len() > plain_from {
            out.push(Piece::Bytes(buf[plain_from..].to_vec()));
        }
        out
    }
}

enum Match {
    Mark(String, usize),
    Partial,
    No,
}

fn mark_at(b: &[u8]) -> Match {
    let n = b.len().min(PREFIX.len());
    if b[..n] != PREFIX[..n] {
        return Match::No;
    }
    if b.len() < PREFIX.len() {
        return Match::Partial;
    }
    let rest = &b[PREFIX.len()..];
    for (k, &c) in rest.iter().enumerate() {
        match c {
            b'0'..=b'9' if k < MAX_TOKEN => {}
            0x07 if k > 0 => {
                let token = String::from_utf8_lossy(&rest[..k]).into_owned();
                return Match::Mark(token, PREFIX.len() + k + 1);
            }
            _ => return Match::No,
        }
    }
    Match::Partial
}

/// An event reported on the side channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// A command line is about to run (announced by the previous `End`).
    Start { token: String },
    /// The shell's pid, once at start.
    Pid { pid: i32 },
    /// The shell is about to prompt: the last command's status, the cwd,
    /// and the token the next command's start mark will carry.
    End {
        token: String,
        status: i32,
        cwd: String,
        next: String,
    },
}

/// Parses NUL-separated side-channel records, across reads.
#[derive(Debug, Default)]
pub struct SideParser {
    field: Vec<u8>,
    fields: Vec<String>,
}

impl SideParser {
    pub fn feed(&mut self, input: &[u8]) -> Vec<Side> {
        let mut out = Vec::new();
        for &c in input {
            if c != 0 {
                if self.field.len() < MAX_FIELD {
                    self.field.push(c);
                }
                continue;
            }
            let f = String::from_utf8_lossy(&std::mem::take(&mut self.field)).into_owned();
            self.fields.push(f);
            let want = match self.fields[0].as_str() {
                "P" => 2,
                "E" => 5,
                _ => {
                    // Not a record start: resynchronise on the next field.
                    self.fields.clear();
                    continue;
                }
            };
            if self.fields.len() == want {
                let first = self.fields[0].clone();
                let mut f = std::mem::take(&mut self.fields).into_iter().skip(1);
                let token = f.next().unwrap_or_default();
                if first == "P" {
                    out.push(Side::Pid {
                        pid: token.parse().unwrap_or(0),
                    });
                } else {
                    let status = f.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let cwd = f.next().unwrap_or_default();
                    let next = f.next().unwrap_or_default();
                    out.push(Side::End {
                        token,
                        status,
                        cwd,
                        next,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &mut MarkScanner, chunks: &[&[u8]]) -> Vec<Piece> {
        let mut all: Vec<Piece> = Vec::new();
        for c in chunks {
            for p in s.feed(c) {
                match (all.last_mut(), p) {
                    (Some(Piece::Bytes(a)), Piece::Bytes(b)) => a.extend(b),
                    (_, p) => all.push(p),
                }
            }
        }
        all
    }

    #[test]
    fn marks_are_found_whole_and_split_across_reads() {
        let stream = b"ab\x1b]6973;123\x07cd\x1b[31mred\x1b]6973;9\x07";
        let want = vec![
            Piece::Bytes(b"ab".to_vec()),
            Piece::Mark("123".into()),
            Piece::Bytes(b"cd\x1b[31mred".to_vec()),
            Piece::Mark("9".into()),
        ];
        assert_eq!(collect(&mut MarkScanner::default(), &[stream]), want);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                collect(&mut MarkScanner::default(), &[a, b]),
                want,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn lookalikes_stay_output() {
        let mut s = MarkScanner::default();
        for odd in [
            &b"\x1b]6973;\x07"[..],
            b"\x1b]6973;12a\x07",
            b"\x1b]697;1\x07",
            b"\x1b]6973;1\x1b\\",
        ] {
            assert_eq!(collect(&mut s, &[odd]), vec![Piece::Bytes(odd.to_vec())]);
        }
    }

    #[test]
    fn side_records_parse_across_reads_and_resync() {
        let mut p = SideParser::default();
        let all =
            b"P\x00777\x00junk\x00E\x0042\x007\x00/tmp/a b\nc\x0043\x00E\x001\x000\x00/\x002\x00";
        let mut got = Vec::new();
        for c in all.chunks(3) {
            got.extend(p.feed(c));
        }
        let end = |token: &str, status, cwd: &str, next: &str| Side::End {
            token: token.into(),
            status,
            cwd: cwd.into(),
            next: next.into(),
        };
        assert_eq!(
            got,
            vec![
                Side::Pid { pid: 777 },
                end("42", 7, "/tmp/a b\nc", "43"),
                end("1", 0, "/", "2"),
            ]
        );
    }
}
