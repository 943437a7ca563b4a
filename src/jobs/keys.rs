//! Named keys for `job write` (and terminal sessions): what each name sends to
//! a terminal, and what it means for a job whose stdin is a plain pipe.

/// What a key does for a given job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    Bytes(Vec<u8>),
    /// Close stdin (EOF) — ctrl-d on a pipe.
    Eof,
    /// Signal the job's process group — ctrl-c/ctrl-z/ctrl-\ on a pipe.
    Signal(i32),
}

/// The names `job write keys` accepts, for error messages and docs.
pub const KEY_NAMES: &str = "enter, tab, escape, backspace, space, up, down, left, right, home, end, \
    pageup, pagedown, delete, ctrl-a … ctrl-z (ctrl-c interrupt, ctrl-d EOF, ctrl-z suspend), ctrl-\\";

/// Translate a key name; `tty` says whether the job runs under a terminal.
pub fn key(name: &str, tty: bool) -> Option<KeyAction> {
    let n = name
        .trim()
        .to_ascii_lowercase()
        .replace(['_', '+', ' '], "-");
    let bytes = |b: &[u8]| Some(KeyAction::Bytes(b.to_vec()));
    match n.as_str() {
        "enter" | "return" => bytes(if tty { b"\r" } else { b"\n" }),
        "tab" => bytes(b"\t"),
        "esc" | "escape" => bytes(b"\x1b"),
        "backspace" => bytes(b"\x7f"),
        "space" => bytes(b" "),
        "up" => bytes(b"\x1b[A"),
        "down" => bytes(b"\x1b[B"),
        "right" => bytes(b"\x1b[C"),
        "left" => bytes(b"\x1b[D"),
        "home" => bytes(b"\x1b[H"),
        "end" => bytes(b"\x1b[F"),
        "pageup" | "page-up" => bytes(b"\x1b[5~"),
        "pagedown" | "page-down" => bytes(b"\x1b[6~"),
        "delete" | "del" => bytes(b"\x1b[3~"),
        "eof" if !tty => Some(KeyAction::Eof),
        "eof" => bytes(b"\x04"),
        _ => {
            let c = n.strip_prefix("ctrl-").or_else(|| n.strip_prefix("c-"))?;
            let ch = match c {
                "\\" | "backslash" => b'\\',
                _ if c.len() == 1 && c.as_bytes()[0].is_ascii_lowercase() => c.as_bytes()[0],
                _ => return None,
            };
            if !tty {
                match ch {
                    b'c' => return Some(KeyAction::Signal(libc::SIGINT)),
                    b'd' => return Some(KeyAction::Eof),
                    b'z' => return Some(KeyAction::Signal(libc::SIGTSTP)),
                    b'\\' => return Some(KeyAction::Signal(libc::SIGQUIT)),
                    _ => {}
                }
            }
            bytes(&[ch & 0x1f])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_per_terminal_kind() {
        for (name, tty, expected) in [
            ("enter", true, Some(KeyAction::Bytes(b"\r".to_vec()))),
            ("Enter", false, Some(KeyAction::Bytes(b"\n".to_vec()))),
            ("ctrl-c", true, Some(KeyAction::Bytes(vec![3]))),
            ("ctrl+c", false, Some(KeyAction::Signal(libc::SIGINT))),
            ("ctrl-d", false, Some(KeyAction::Eof)),
            ("ctrl-d", true, Some(KeyAction::Bytes(vec![4]))),
            ("up", true, Some(KeyAction::Bytes(b"\x1b[A".to_vec()))),
            ("ctrl-\\", true, Some(KeyAction::Bytes(vec![0x1c]))),
            ("hyper-x", true, None),
            ("ctrl-1", true, None),
        ] {
            assert_eq!(key(name, tty), expected, "{name} tty={tty}");
        }
    }
}
