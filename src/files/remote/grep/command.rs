//! The commands a search runs on the host, as argvs: the program and its
//! options, then `-e PATTERN --` and the paths. Exec requests are bounded
//! (see [`EXEC_LEN`]), so paths go in batches, and since every argument
//! costs the host a subshell to decode (`ssh::cmdline` writes each as a
//! `$(printf …)`), many paths travel as one newline-separated argument.

use crate::files::FileError;
use crate::files::grep::Case;
use crate::ssh::cmdline::MAX_EXEC;

use super::{Search, Searcher};

/// Bytes of an exec request kept for the script around the arguments.
const ARGV_SLACK: usize = 4 * 1024;
/// The longest exec request a batch makes. sshd hands the request to the
/// login shell as one argument (`$SHELL -c REQUEST`), and Linux refuses an
/// argument over 128 KiB (`MAX_ARG_STRLEN`), below `MAX_EXEC`.
const EXEC_LEN: usize = if MAX_EXEC < 120 * 1024 {
    MAX_EXEC
} else {
    120 * 1024
};

/// Runs `"$@"` followed by the lines of `$1` as more arguments.
pub(in crate::files::remote) const SPLIT: &str = "l=$1; shift; set -f; IFS='\n'; exec \"$@\" $l";

impl Search<'_> {
    /// The program and the options that say what matches.
    pub(super) fn base(&self) -> Vec<String> {
        let o = self.opts;
        let mut a: Vec<&str> = match self.searcher {
            Searcher::Rg => vec!["rg", "--no-config", "--no-messages"],
            Searcher::Grep => vec!["grep", "--no-messages", "--null", "-H", "-I"],
        };
        match (self.searcher, o.case) {
            (Searcher::Rg, Case::Sensitive) => a.push("-s"),
            (Searcher::Rg, Case::Smart) => a.push("-S"),
            (_, Case::Insensitive) => a.push("-i"),
            // grep: sensitive unless told; smart case is decided here.
            (Searcher::Grep, Case::Sensitive) => {}
            (Searcher::Grep, Case::Smart) => {
                if !o.pattern.chars().any(char::is_uppercase) {
                    a.push("-i");
                }
            }
        }
        match (self.searcher, o.fixed) {
            (_, true) => a.push("-F"),
            (Searcher::Grep, false) => a.push("-E"),
            (Searcher::Rg, false) => {}
        }
        if o.word {
            a.push("-w");
        }
        a.into_iter().map(String::from).collect()
    }

    /// `-e PATTERN --`, then the paths: the end of every command.
    pub(super) fn finish(
        &self,
        mut argv: Vec<String>,
        paths: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        argv.push("-e".into());
        argv.push(self.opts.pattern.clone());
        argv.push("--".into());
        argv.extend(paths);
        argv
    }

    /// `-e PATTERN --`, then many paths. Each argument of an exec request
    /// costs the host a subshell to decode (see `ssh::cmdline`), so the
    /// paths travel as one newline-separated argument that a constant script
    /// splits (no globbing); a path holding a newline goes on its own.
    pub(super) fn finish_many(&self, argv: Vec<String>, paths: Vec<String>) -> Vec<String> {
        let (plain, odd): (Vec<String>, Vec<String>) =
            paths.into_iter().partition(|p| !p.contains('\n'));
        let mut out = ["sh", "-c", SPLIT, "sh"].map(String::from).to_vec();
        out.push(plain.join("\n"));
        out.extend(self.finish(argv, odd));
        out
    }

    /// An empty batch, with the room the command's other arguments leave.
    pub(super) fn batch(&self) -> Result<Batch, FileError> {
        let mut fixed = self.base();
        fixed.extend(
            [
                "sh",
                "-c",
                SPLIT,
                "sh",
                "--json",
                "--max-count=1000000000",
                "--context=10",
                "-e",
                "--",
            ]
            .map(String::from),
        );
        let used = fixed.iter().map(|a| encoded_len(a)).sum::<usize>()
            + encoded_len(&self.opts.pattern)
            + ARGV_SLACK;
        match EXEC_LEN.checked_sub(used) {
            Some(room) if room > 32 * 1024 => Ok(Batch {
                paths: Vec::new(),
                bytes: 0,
                room,
            }),
            _ => Err(FileError::Invalid(format!(
                "the pattern is too long to send to the host ({} bytes); search for a shorter one",
                self.opts.pattern.len()
            ))),
        }
    }
}

/// Paths for one command, within one exec request.
pub(super) struct Batch {
    pub(super) paths: Vec<String>,
    pub(super) bytes: usize,
    /// What the paths may take.
    room: usize,
}

impl Batch {
    pub(super) fn push(&mut self, path: String) {
        self.bytes += match path.contains('\n') {
            true => encoded_len(&path),
            // A line of the one list argument.
            false => encoded_len(&path) - ARG_OVERHEAD + 4,
        };
        self.paths.push(path);
    }

    pub(super) fn over(&self) -> bool {
        self.bytes > self.room
    }

    /// No room for another path, however long (`PATH_MAX` bytes, each
    /// escaped).
    pub(super) fn full(&self) -> bool {
        self.bytes + 4 * 4096 + ARG_OVERHEAD > self.room
    }
}

/// What an argument costs in an exec request (see `ssh::cmdline`: bytes
/// outside `[A-Za-z0-9_./]` become four-byte octal escapes), plus the
/// script around it.
fn encoded_len(arg: &str) -> usize {
    let escaped = arg
        .bytes()
        .filter(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/')))
        .count();
    arg.len() + 3 * escaped + ARG_OVERHEAD
}

/// The script around one argument in an exec request (at most).
const ARG_OVERHEAD: usize = 64;
