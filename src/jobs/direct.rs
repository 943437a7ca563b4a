//! The direct-exec fast path: a command line that is only plain words (no
//! quoting, expansion, redirection, operators or shell-only builtins) means
//! exactly the same when run without a shell, so it is exec'd directly and
//! skips bash's start-up (about a millisecond per command). GNU make does the
//! same for recipe lines. Anything else, or a program that cannot be found or
//! is not a binary or `#!` script, goes through `bash -c` as usual.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Words that only mean something to a shell (keywords and builtins with no
/// equivalent program, or whose program behaves differently).
const SHELL_ONLY: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// Characters a word may contain to mean the same to bash and to execve.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ',' | '+' | '@' | ':' | '%')
}

/// A command to exec without a shell: the resolved program and the words
/// as typed (the first is passed as `argv[0]`, as bash would).
#[derive(Debug, PartialEq)]
pub(super) struct Direct {
    pub(super) program: PathBuf,
    pub(super) words: Vec<String>,
}

/// The words of `cmd` when it is only plain words (the same to a shell and
/// to execve) and its program is not a shell-only word; else `None`.
pub(super) fn plain_words(cmd: &str) -> Option<Vec<&str>> {
    let words: Vec<&str> = cmd.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let (&first, rest) = words.split_first()?;
    // `=` is allowed after the program name only (before it, it would be an assignment).
    if !first.chars().all(plain) || !rest.iter().all(|w| w.chars().all(|c| plain(c) || c == '=')) {
        return None;
    }
    if SHELL_ONLY.contains(&first) {
        return None;
    }
    Some(words)
}

/// The program and words to exec directly for `cmd`, or `None` when it needs
/// a shell. `path` is the job's `PATH`; relative names resolve against `cwd`.
pub(super) fn direct(cmd: &str, path: Option<&str>, cwd: &Path) -> Option<Direct> {
    let words = plain_words(cmd)?;
    let program = resolve(words[0], path, cwd)?;
    Some(Direct {
        program,
        words: words.iter().map(|w| (*w).to_owned()).collect(),
    })
}

/// Find `name` as bash would (a name with `/` is a path, else search `PATH`),
/// accepting only an executable regular file that is an ELF binary or a `#!`
/// script (bash would run other files itself, as shell scripts).
fn resolve(name: &str, path: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        return runnable(&cwd.join(name));
    }
    path?.split(':').find_map(|dir| {
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        runnable(&dir.join(name))
    })
}

fn runnable(p: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return None;
    }
    let mut magic = [0u8; 4];
    let n = std::io::Read::read(&mut std::fs::File::open(p).ok()?, &mut magic).ok()?;
    (magic[..n].starts_with(b"\x7fELF") || magic[..n].starts_with(b"#!")).then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cmd: &str, expected: Option<&[&str]>) {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let got = direct(cmd, Some(&path), Path::new("/"));
        let got_names: Option<Vec<String>> = got.map(|d| {
            // The program's directory depends on the machine; it must be the word's file.
            assert_eq!(
                d.program.file_name().unwrap().to_str(),
                Some(d.words[0].as_str())
            );
            d.words
        });
        let expected: Option<Vec<String>> =
            expected.map(|e| e.iter().map(|s| s.to_string()).collect());
        assert_eq!(got_names, expected, "{cmd:?}");
    }

    #[test]
    fn only_plain_words_skip_the_shell() {
        check("true", Some(&["true"]));
        check("false", Some(&["false"]));
        check("  ls   -la /tmp ", Some(&["ls", "-la", "/tmp"]));
        check("env FOO=bar", Some(&["env", "FOO=bar"]));
        check("echo 50%", Some(&["echo", "50%"]));
        for needs_shell in [
            "",
            "FOO=1 env",
            "echo $HOME",
            "echo 'a b'",
            "echo \"x\"",
            "ls *.rs",
            "ls ~",
            "a | b",
            "a; b",
            "a && b",
            "echo hi > f",
            "cat < f",
            "sleep 1 &",
            "echo {a,b}",
            "echo a\\ b",
            "(true)",
            "echo `id`",
            "echo # c",
            "echo hi\nls",
            "cd /tmp",
            "pwd",
            "kill 1",
            "exit 3",
            "read x",
            "no-such-program-here",
            "./missing.sh",
            "/etc/passwd",
        ] {
            check(needs_shell, None);
        }
    }

    #[test]
    fn scripts_without_a_shebang_go_through_bash() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, body, runs_direct) in [
            ("a.sh", "echo hi\n", false),
            ("b.sh", "#!/bin/sh\necho hi\n", true),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                direct(&format!("./{name}"), None, dir.path()).is_some(),
                runs_direct,
                "{name}"
            );
        }
    }
}
