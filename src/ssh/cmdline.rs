//! Building the command string of an SSH `exec` request.
//!
//! sshd hands that string to the remote user's login shell (`$SHELL -c`),
//! which may be bash, dash, zsh, fish or csh, each quoting differently. So
//! the string is always `exec /bin/sh -c '<script>'` where `<script>` holds
//! no quote, newline, `!`, `$`-expansion of ours or doubled backslash that any
//! of those shells would read specially: every byte outside `[A-Za-z0-9_./]`
//! of every value we pass is written as a `printf` octal escape, and `/bin/sh`
//! turns it back into the exact bytes. Agent text is therefore always data —
//! an argument, a directory, an environment value — never shell syntax of the
//! outer shell, and never an option of `ssh`.

use std::fmt::Write as _;

/// The largest exec request we send: sshd hands the whole string to the
/// login shell as one argument, and Linux refuses a single argument over
/// 128 KiB (`MAX_ARG_STRLEN`).
pub const MAX_EXEC: usize = 120 * 1024;

/// A POSIX `sh` script under construction; values go in through
/// [`Script::set`] and friends, never as text.
#[derive(Debug, Default, Clone)]
pub struct Script {
    body: String,
}

/// A command that does not fit in one exec request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the command is too long to send over SSH ({len} bytes encoded, at most {MAX_EXEC}); \
     write it to a script file on the host with the file tool and run that instead"
)]
pub struct TooLong {
    pub len: usize,
}

/// `printf` format text that reproduces `bytes` exactly, with a trailing `X`
/// sentinel so command substitution keeps trailing newlines. `-` is escaped
/// too: a format starting with it would be read as a `printf` option.
fn encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out.push('X');
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// Appends literal script text. Only for constant text written in this
    /// crate: it must not contain `'`, `!`, a newline or `\\`.
    pub fn raw(&mut self, text: &str) -> &mut Script {
        debug_assert!(
            !text.contains(['\'', '!', '\n', '\\']),
            "script text {text:?} would be read by the login shell"
        );
        self.body.push_str(text);
        self.body.push_str("; ");
        self
    }

    /// Sets shell variable `name` (a constant identifier) to `value`'s exact
    /// bytes. A value that no shell reads specially inside double quotes is
    /// written as it is; any other goes through `printf` (a subshell on the
    /// host, about a millisecond).
    pub fn set(&mut self, name: &str, value: &[u8]) -> &mut Script {
        debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let verbatim = value
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && !b"$`\"\\'!".contains(&b));
        if verbatim {
            let text = std::str::from_utf8(value).unwrap_or_default();
            let _ = write!(self.body, "{name}=\"{text}\"; ");
            return self;
        }
        let _ = write!(self.body, "{name}=$(printf \"");
        encode(value, &mut self.body);
        let _ = write!(self.body, "\"); {name}=${{{name}%X}}; ");
        self
    }

    /// Appends `value` as the next positional parameter (`"$@"`).
    pub fn arg(&mut self, value: &[u8]) -> &mut Script {
        self.set("a_", value);
        self.body.push_str("set -- \"$@\" \"$a_\"; ");
        self
    }

    /// Exports `key` (checked: `[A-Za-z_][A-Za-z0-9_]*`) with `value`.
    pub fn export(&mut self, key: &str, value: &[u8]) -> Result<&mut Script, String> {
        if !valid_env_name(key) {
            return Err(format!(
                "env variable {key:?} cannot be set on an SSH host: names there must be \
                 letters, digits and '_', not starting with a digit"
            ));
        }
        self.set("v_", value);
        let _ = write!(self.body, "export {key}=\"$v_\"; ");
        Ok(self)
    }

    /// The exec request string, or [`TooLong`].
    pub fn finish(&self) -> Result<String, TooLong> {
        let s = format!("exec /bin/sh -c 'set --; {}'", self.body);
        if s.len() > MAX_EXEC {
            return Err(TooLong { len: s.len() });
        }
        Ok(s)
    }
}

/// The exec string that runs `argv` (no shell involved in the arguments) on
/// the remote host: `argv[0]` is looked up on the remote `PATH`.
pub fn argv<S: AsRef<[u8]>>(argv: &[S]) -> Result<String, TooLong> {
    let mut s = Script::new();
    for a in argv {
        s.arg(a.as_ref());
    }
    s.raw("exec \"$@\"");
    s.finish()
}

/// A variable name a POSIX shell can export: letters, digits and `_`, not
/// starting with a digit.
pub fn valid_env_name(key: &str) -> bool {
    key.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `exec_string` the way sshd does: `$SHELL -c STRING`.
    fn run_in(shell: &str, exec_string: &str) -> Option<Vec<u8>> {
        if !std::path::Path::new(shell).exists() {
            return None;
        }
        let out = Command::new(shell)
            .arg("-c")
            .arg(exec_string)
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        Some(out.stdout)
    }

    const HOSTILE: [&str; 14] = [
        "plain",
        "with space",
        "it's",
        "\"double\"",
        "$(touch /tmp/mcpsh-pwned)",
        "`id`",
        "a\\b\\\\c",
        "line1\nline2\n\n",
        "!event",
        "%s%d%%",
        "-n",
        "--",
        "; rm -rf /",
        "ünïcödé ☃",
    ];

    #[test]
    fn arguments_arrive_byte_for_byte_through_every_login_shell() {
        let mut ran = 0;
        for shell in [
            "/bin/sh",
            "/bin/bash",
            "/bin/dash",
            "/usr/bin/zsh",
            "/usr/bin/fish",
            "/bin/csh",
        ] {
            for value in HOSTILE {
                let cmd = argv(&["printf", "%s", value]).unwrap();
                if let Some(out) = run_in(shell, &cmd) {
                    assert_eq!(out, value.as_bytes(), "{shell} with {value:?}");
                    ran += 1;
                }
            }
        }
        assert!(ran >= HOSTILE.len() * 2, "at least sh and bash ran");
        assert!(!std::path::Path::new("/tmp/mcpsh-pwned").exists());
    }

    #[test]
    fn env_and_variables_hold_exact_bytes() {
        let mut s = Script::new();
        for (i, v) in HOSTILE.iter().enumerate() {
            s.export(&format!("V{i}"), v.as_bytes()).unwrap();
        }
        let print: String = (0..HOSTILE.len()).map(|i| format!(" \"$V{i}\"")).collect();
        s.arg(b"sh")
            .arg(b"-c")
            .arg(format!("printf '%s|'{print}").as_bytes());
        s.raw("exec \"$@\"");
        let out = run_in("/bin/sh", &s.finish().unwrap()).unwrap();
        let want: String = HOSTILE.iter().map(|v| format!("{v}|")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn bad_env_names_and_oversized_commands_are_refused() {
        let mut s = Script::new();
        for bad in ["", "1A", "A-B", "A=B", "A B", "$(x)"] {
            assert!(s.export(bad, b"v").is_err(), "{bad:?}");
        }
        let big = "x\u{1}".repeat(MAX_EXEC / 4);
        assert!(matches!(argv(&[big.as_str()]), Err(TooLong { .. })));
    }

    #[test]
    fn the_exec_string_has_nothing_a_login_shell_reads() {
        for value in HOSTILE {
            let cmd = argv(&[value]).unwrap();
            let inner = cmd
                .strip_prefix("exec /bin/sh -c '")
                .and_then(|s| s.strip_suffix('\''))
                .unwrap();
            assert!(!inner.contains(['\'', '\n', '!']), "{cmd}");
            assert!(!inner.contains("\\\\"), "{cmd}");
        }
    }
}
