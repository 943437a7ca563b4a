//! Turns raw terminal output (from a job run under `tty`) into the plain text a
//! person would read: escape sequences removed, `\r\n` as `\n`, a line
//! rewritten with `\r` (progress bars) collapsed to its last state, and
//! backspaces applied. Streaming and bounded: at most one pending line.

const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    Esc,
    /// CSI: parameters until a final byte in 0x40..=0x7e.
    Csi,
    /// OSC/DCS/APC/PM/SOS: until BEL or ESC \.
    Str,
    StrEsc,
    /// ESC with intermediate bytes, until a final byte.
    EscInter,
}

/// Streaming renderer; feed bytes, collect plain text.
#[derive(Debug)]
pub struct TtyRender {
    state: State,
    line: Vec<u8>,
    cr: bool,
    /// Part of the current line already emitted by [`TtyRender::flush_partial`].
    emitted_partial: bool,
}

impl Default for TtyRender {
    fn default() -> Self {
        TtyRender {
            state: State::Text,
            line: Vec::new(),
            cr: false,
            emitted_partial: false,
        }
    }
}

impl TtyRender {
    /// Process `input`, appending finished text to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            match self.state {
                State::Text => self.text(b, out),
                State::Esc => {
                    self.state = match b {
                        b'[' => State::Csi,
                        b']' | b'P' | b'_' | b'^' | b'X' => State::Str,
                        0x20..=0x2f => State::EscInter,
                        _ => State::Text,
                    }
                }
                State::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.state = State::Text;
                    }
                }
                State::Str => match b {
                    0x07 => self.state = State::Text,
                    0x1b => self.state = State::StrEsc,
                    _ => {}
                },
                State::StrEsc => self.state = if b == b'\\' { State::Text } else { State::Str },
                State::EscInter => {
                    if (0x30..=0x7e).contains(&b) {
                        self.state = State::Text;
                    }
                }
            }
        }
    }

    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.cr && b != b'\n' && b != b'\r' {
            // A bare carriage return: the line is being redrawn.
            self.cr = false;
            self.line.clear();
            if self.emitted_partial {
                out.push(b'\n');
                self.emitted_partial = false;
            }
        }
        match b {
            0x1b => self.state = State::Esc,
            b'\n' => {
                self.cr = false;
                out.extend_from_slice(&self.line);
                out.push(b'\n');
                self.line.clear();
                self.emitted_partial = false;
            }
            b'\r' => self.cr = true,
            0x08 => {
                self.line.pop();
            }
            b'\t' => self.line.push(b),
            0x00..=0x1f | 0x7f => {}
            _ => {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    out.extend_from_slice(&self.line);
                    self.line.clear();
                    self.emitted_partial = true;
                }
            }
        }
    }

    /// Emit the pending partial line (a prompt without newline, say), so
    /// readers see it. Called after output goes quiet and at the end.
    pub fn flush_partial(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            out.extend_from_slice(&self.line);
            self.line.clear();
            self.emitted_partial = true;
        }
    }

    pub fn has_partial(&self) -> bool {
        !self.line.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(input: &[u8]) -> String {
        let mut r = TtyRender::default();
        let mut out = Vec::new();
        r.feed(input, &mut out);
        r.flush_partial(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_what_a_person_sees() {
        for (input, expected) in [
            (&b"hi\r\n"[..], "hi\n"),
            (b"\x1b[31mred\x1b[0m plain\r\n", "red plain\n"),
            (b"10%\r50%\r100%\r\ndone\r\n", "100%\ndone\n"),
            (b"\x1b]0;title\x07ok\n", "ok\n"),
            (b"abc\x08\x08X\n", "aX\n"),
            (b"\x1b(Bq\n", "q\n"),
            (b"Password: ", "Password: "),
        ] {
            assert_eq!(render(input), expected, "{input:?}");
        }
    }

    #[test]
    fn redraw_after_flushed_partial_starts_a_new_line() {
        let mut r = TtyRender::default();
        let mut out = Vec::new();
        r.feed(b"40%", &mut out);
        r.flush_partial(&mut out);
        r.feed(b"\r90%\r\n", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "40%\n90%\n");
    }
}
