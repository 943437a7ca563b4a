//! The `session` tool: persistent terminal sessions, local or over SSH.

use std::collections::BTreeMap;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;

use super::render::{bytes, duration};
use super::{define_input_tool, shell_annotations, tool_error};
use crate::auth::Principal;
use crate::host::Host;
use crate::jobs::keys::{KEY_NAMES, KeyAction, key};
use crate::sessions::proto::{ExecResult, Info, ReadResult, Request, Response, Text};
use crate::sessions::{OpenRequest, Sessions};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Open,
    Exec,
    Write,
    Read,
    Resize,
    Close,
    List,
}

/// Parameters of `session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionParams {
    /// open: reuse the named session if alive, else start it; exec: run one command in its shell and wait like bash; write: type text/keys; read: new output (or the screen) with long-poll; resize; close; list.
    pub(crate) action: Action,
    /// Session name (default "main"); names are per host.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Host: "local" (default) or an SSH host from the hosts tool.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// exec: the command line (multi-line allowed; runs as one command).
    #[serde(default)]
    pub(crate) cmd: Option<String>,
    /// exec: seconds to wait before returning `running` (default 10, max 50); read: seconds to wait for new output when there is none (default 0).
    #[serde(default)]
    pub(crate) wait: Option<f64>,
    /// write: text to type (a newline or keys=["enter"] submits a line).
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// write: named keys sent after `text`: enter, tab, escape, backspace, up, down, left, right, ctrl-c, ctrl-d, ctrl-z, ...
    #[serde(default)]
    pub(crate) keys: Option<Vec<String>>,
    /// read: the rendered screen (what a person sees) instead of the new text.
    #[serde(default)]
    pub(crate) screen: Option<bool>,
    /// read: page the transcript from this byte offset (a `next` value) instead of reading what is new.
    #[serde(default)]
    pub(crate) from: Option<u64>,
    /// open: working directory (default the home directory).
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    /// open: environment variables for the shell.
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// open: shell program (default bash; exec needs bash).
    #[serde(default)]
    pub(crate) shell: Option<String>,
    /// open/resize: terminal columns.
    #[serde(default)]
    pub(crate) cols: Option<u16>,
    /// open/resize: terminal rows.
    #[serde(default)]
    pub(crate) rows: Option<u16>,
    /// exec/read: output budget in bytes (default 16384).
    #[serde(default)]
    pub(crate) max_output: Option<usize>,
}

pub(crate) fn tool() -> Tool {
    define_input_tool::<SessionParams>(
        "session",
        "Persistent interactive terminals (a real shell on a pseudo-terminal), local or on an SSH host. \
         action=open starts (or reuses) the session `name`; action=exec runs one command in it — cd, exported \
         variables and activated virtualenvs carry over — and returns its output, exact exit code and the \
         shell's cwd, or `running`/`waiting_for_input` after `wait` seconds; action=write types `text` and \
         `keys` (answer prompts, drive REPLs, ctrl-c); action=read returns new output (or screen=true for the \
         rendered screen) and can wait; action=list shows sessions with idle time, pending output and whether \
         a command runs. A person can watch with `mcpsh attach NAME`.",
        shell_annotations(),
    )
}

pub(crate) async fn call(
    sessions: &Sessions,
    ssh: Option<&crate::ssh::Pool>,
    principal: &Principal,
    max_wait: f64,
    p: SessionParams,
) -> CallToolResult {
    match run(sessions, ssh, principal, max_wait, p).await {
        Ok(r) => r,
        Err(e) => tool_error(e),
    }
}

async fn run(
    sessions: &Sessions,
    ssh: Option<&crate::ssh::Pool>,
    principal: &Principal,
    max_wait: f64,
    p: SessionParams,
) -> Result<CallToolResult, String> {
    if p.action == Action::List {
        return list(sessions, principal).await;
    }
    let host = Host::resolve(p.host.as_deref(), ssh).map_err(|e| e.to_string())?;
    let name = p.name.clone().unwrap_or_else(|| "main".into());
    let budget = p.max_output.unwrap_or(16 << 10).clamp(256, 256 << 10);
    let wait_ms = |default: f64| -> Result<u64, String> {
        let w = p.wait.unwrap_or(default);
        if !w.is_finite() || w < 0.0 {
            return Err("wait must be a number of seconds ≥ 0".into());
        }
        Ok((w.min(max_wait) * 1000.0) as u64)
    };
    let req = match p.action {
        Action::Open => {
            let opened = sessions
                .open(OpenRequest {
                    host,
                    name,
                    cwd: p.cwd,
                    env: p.env.unwrap_or_default().into_iter().collect(),
                    shell: p.shell,
                    size: p.cols.zip(p.rows),
                })
                .await
                .map_err(|e| e.to_string())?;
            let verb = if opened.reused { "reused" } else { "opened" };
            let mut text = format!(
                "session {:?} {verb} (shell pid {}, {}x{})",
                opened.info.name, opened.info.shell_pid, opened.info.cols, opened.info.rows
            );
            if let Some(cwd) = &opened.info.cwd {
                text.push_str(&format!(", cwd {cwd}"));
            }
            let mut v = serde_json::to_value(&opened.info).unwrap_or_default();
            v["reused"] = opened.reused.into();
            v["transcript"] = opened.transcript.to_string_lossy().into_owned().into();
            return Ok(answer(text, v, false));
        }
        Action::Exec => Request::Exec {
            cmd: match p.cmd.clone().ok_or("exec needs `cmd`")? {
                c if c.len() > MAX_TYPED => {
                    return Err(format!(
                        "cmd is {} long, more than {} can be typed; write a script with file_write and exec it",
                        bytes(c.len() as u64),
                        bytes(MAX_TYPED as u64)
                    ));
                }
                c => c,
            },
            wait_ms: wait_ms(10.0)?,
            max_output: budget,
        },
        Action::Write => Request::Write {
            data: base64::engine::general_purpose::STANDARD.encode(typed_bytes(&p)?),
        },
        Action::Read => Request::Read {
            screen: p.screen.unwrap_or(false),
            wait_ms: wait_ms(0.0)?,
            max_output: budget,
            from: p.from,
        },
        Action::Resize => Request::Resize {
            cols: p.cols.ok_or("resize needs `cols` and `rows`")?,
            rows: p.rows.ok_or("resize needs `cols` and `rows`")?,
        },
        Action::Close => {
            let reason = sessions
                .close(&host, &name)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(answer(
                format!("session {name:?} closed"),
                serde_json::json!({"name": name, "closed": true, "reason": reason}),
                false,
            ));
        }
        Action::List => unreachable!("handled above"),
    };
    let resp = sessions
        .call(&host, &name, req)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match resp {
        Response::Exec(r) => exec_answer(&name, r),
        Response::Read(r) => read_answer(r),
        Response::Info(i) => answer(
            info_line(&i),
            serde_json::to_value(&i).unwrap_or_default(),
            false,
        ),
        Response::Ok => answer("ok".into(), serde_json::json!({"ok": true}), false),
        Response::Error { message } => return Err(message),
    })
}

/// Most bytes one `write` or `exec` may type.
const MAX_TYPED: usize = 256 << 10;

fn typed_bytes(p: &SessionParams) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if let Some(t) = &p.text {
        out.extend_from_slice(t.as_bytes());
    }
    for k in p.keys.iter().flatten() {
        match key(k, true) {
            Some(KeyAction::Bytes(b)) => out.extend(b),
            _ => return Err(format!("unknown key {k:?}; known keys: {KEY_NAMES}")),
        }
    }
    if out.is_empty() {
        return Err("nothing to write: give `text` and/or `keys`".into());
    }
    if out.len() > MAX_TYPED {
        return Err(format!(
            "{} is too much to type at once (at most {}); write a file with file_write and run it",
            bytes(out.len() as u64),
            bytes(MAX_TYPED as u64)
        ));
    }
    Ok(out)
}

fn answer(text: String, value: serde_json::Value, is_error: bool) -> CallToolResult {
    let mut r = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    r.structured_content = Some(value);
    r
}

fn text_block(t: &Text) -> String {
    let mut s = t.head.clone();
    if t.omitted_bytes > 0 {
        if !s.ends_with('\n') && !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!(
            "[… {} omitted; the transcript file has everything …]\n",
            bytes(t.omitted_bytes)
        ));
        s.push_str(&t.tail);
    }
    s
}

fn exec_answer(name: &str, r: ExecResult) -> CallToolResult {
    let mut text = text_block(&r.output);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let took = duration(r.duration_ms);
    let line = match r.state.as_str() {
        "exited" => format!(
            "[exit {} · cwd {} · {took}]",
            r.exit_code.unwrap_or(-1),
            r.cwd.as_deref().unwrap_or("?")
        ),
        "waiting_for_input" => format!(
            "[command {} is waiting for input after {took}; screen:\n{}\n— answer with session action=write name={name:?} text=… keys=[\"enter\"], or stop it with keys=[\"ctrl-c\"]]",
            r.seq,
            r.screen.as_deref().unwrap_or("")
        ),
        "running" => format!(
            "[command {} still running after {took}; follow it with session action=read name={name:?} wait=30]",
            r.seq
        ),
        _ => "[the shell exited; open the session again to continue]".to_owned(),
    };
    text.push_str(&line);
    let is_error = r.state == "exited" && r.exit_code != Some(0) || r.state == "shell_exited";
    let v = serde_json::to_value(&r).unwrap_or_default();
    answer(text, v, is_error)
}

fn read_answer(r: ReadResult) -> CallToolResult {
    let mut text = match (&r.screen, &r.text) {
        (Some(screen), _) => screen.clone(),
        (None, Some(t)) => text_block(t),
        _ => String::new(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("[{}]", info_line(&r.info)));
    answer(text, serde_json::to_value(&r).unwrap_or_default(), false)
}

fn info_line(i: &Info) -> String {
    let mut parts = Vec::new();
    if let Some(why) = &i.exit_reason {
        parts.push(format!("ended: {why}"));
    } else if let Some(r) = &i.running {
        parts.push(format!(
            "command {} running for {}",
            r.seq,
            duration(r.for_ms)
        ));
    } else {
        parts.push("idle at the prompt".into());
    }
    if i.waiting_for_input {
        parts.push("waiting for input".into());
    }
    if let Some(l) = &i.last {
        parts.push(format!("last command {} exited {}", l.seq, l.exit_code));
    }
    if let Some(cwd) = &i.cwd {
        parts.push(format!("cwd {cwd}"));
    }
    parts.join(" · ")
}

async fn list(sessions: &Sessions, principal: &Principal) -> Result<CallToolResult, String> {
    let rows = sessions
        .list(|h| principal.require_host(h).is_ok())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut items = Vec::new();
    for l in &rows {
        let line = match &l.info {
            Some(i) => format!(
                "{} on {}: open {}, idle {}, {} pending · {}",
                l.row.name,
                l.row.host,
                duration((crate::store::now_ms() - i.started_ms).max(0) as u64),
                duration(i.idle_ms),
                bytes(i.pending_bytes),
                info_line(i)
            ),
            None => format!(
                "{} on {}: closed ({})",
                l.row.name,
                l.row.host,
                l.row.reason.as_deref().unwrap_or("?")
            ),
        };
        text.push_str(&line);
        text.push('\n');
        items.push(serde_json::json!({
            "name": l.row.name,
            "host": l.row.host,
            "open": l.info.is_some(),
            "created_ms": l.row.created_ms,
            "closed_ms": l.row.closed_ms,
            "exit_reason": l.row.reason,
            "state": l.info,
        }));
    }
    if text.is_empty() {
        text = "no sessions; open one with session action=open name=NAME".into();
    }
    Ok(answer(
        text,
        serde_json::json!({ "sessions": items }),
        false,
    ))
}
