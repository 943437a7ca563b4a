//! What a session's shell runs before its first prompt, and how a command is
//! typed into it. The integration hooks are bash's own: `PROMPT_COMMAND`
//! (before each prompt: reports the end on the side channel) and `PS0`
//! (expanded after a command line is read, before it runs: prints the start
//! mark). See `marker.rs` for what they report and why it cannot be forged.

/// The descriptor the side channel is on in the shell. High enough to miss
/// the `exec 200>lock` idiom and bash's process substitutions (63 down).
pub const SIDE_FD: i32 = 237;

/// The start-up file of a session shell. `side` is how the hooks reach the
/// side channel: an inherited descriptor (`&237`) or a FIFO path to open.
pub fn rcfile(side: &Side) -> String {
    let open_side = match side {
        Side::Fd => String::new(),
        Side::Fifo(path) => format!(
            "exec {SIDE_FD}>{p} && rm -f -- {p} && rmdir -- {d} 2>/dev/null\n",
            p = quote(path),
            d = quote(path.rsplit_once('/').map_or(".", |(d, _)| d)),
        ),
    };
    format!(
        r#"# mcpsh session start-up: the user's own start-up files, then the hooks.
[ -r /etc/bash.bashrc ] && . /etc/bash.bashrc
[ -r "$HOME/.bashrc" ] && . "$HOME/.bashrc"
{open_side}printf 'P\0%s\0' "$$" >&{SIDE_FD}
__mcpsh_tok() {{ __mcpsh_t="${{SRANDOM:-$RANDOM$RANDOM}}${{SRANDOM:-$RANDOM$RANDOM}}$RANDOM"; }}
__mcpsh_post() {{
  local __mcpsh_rc=$? __mcpsh_end
  __mcpsh_tok; __mcpsh_end=$__mcpsh_t
  __mcpsh_tok; __mcpsh_next=$__mcpsh_t
  printf 'E\0%s\0%s\0%s\0%s\0' "$__mcpsh_end" "$__mcpsh_rc" "$PWD" "$__mcpsh_next" >&{SIDE_FD}
  printf '\033]6973;%s\007' "$__mcpsh_end" >&2
  return $__mcpsh_rc
}}
if [[ "$(declare -p PROMPT_COMMAND 2>/dev/null)" == "declare -a"* ]]; then
  PROMPT_COMMAND=(__mcpsh_post "${{PROMPT_COMMAND[@]}}")
else
  PROMPT_COMMAND="__mcpsh_post${{PROMPT_COMMAND:+; $PROMPT_COMMAND}}"
fi
# The start mark: expanded, not run, so a command line costs no fork.
PS0="${{PS0}}"'\e]6973;${{__mcpsh_next}}\a'
set +H
bind 'set enable-bracketed-paste on' 2>/dev/null
"#
    )
}

/// How the hooks reach the side channel.
pub enum Side {
    /// Already open on [`SIDE_FD`] (local sessions).
    Fd,
    /// A FIFO to open on [`SIDE_FD`], then remove with its directory (SSH).
    Fifo(String),
}

/// Single-quote `s` for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The bytes that make the shell run `cmd` as one command line: pasted (so
/// readline binds no key in it, a tab completes nothing), a multi-line
/// command grouped in `{ }` so it is one command with one status, then Enter.
pub fn typed(cmd: &str) -> Vec<u8> {
    let cmd = cmd.trim_end_matches(['\n', '\r']);
    let body = if cmd.contains('\n') {
        format!("{{ {cmd}\n}}")
    } else {
        cmd.to_owned()
    };
    // A paste may not carry its own end marker.
    let body = body.replace("\x1b[201~", "");
    let mut out = Vec::with_capacity(body.len() + 13);
    out.extend_from_slice(b"\x1b[200~");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"\x1b[201~\r");
    out
}

/// True when `shell` is bash, whose hooks make `exec` possible.
pub fn has_hooks(shell: &str) -> bool {
    std::path::Path::new(shell)
        .file_name()
        .is_some_and(|n| n == "bash")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_commands_are_one_group() {
        assert_eq!(typed("ls\n"), b"\x1b[200~ls\x1b[201~\r");
        assert_eq!(
            typed("cd /tmp\necho $PWD"),
            b"\x1b[200~{ cd /tmp\necho $PWD\n}\x1b[201~\r"
        );
        assert_eq!(typed("a\x1b[201~b"), b"\x1b[200~ab\x1b[201~\r");
    }

    #[test]
    fn fifo_paths_are_quoted() {
        let rc = rcfile(&Side::Fifo("/tmp/x'y/s".into()));
        assert!(rc.contains(
            r"exec 237>'/tmp/x'\''y/s' && rm -f -- '/tmp/x'\''y/s' && rmdir -- '/tmp/x'\''y'"
        ));
    }
}
