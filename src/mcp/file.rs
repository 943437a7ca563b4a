//! The file tools, split by what they can do so annotations (and later,
//! scopes) can tell them apart: `file` only reads (`read`, `list`, `grep`,
//! `stat`; read-only), `file_write` changes things (`write`, `append`, `edit`,
//! `delete`, `move`, `copy`; destructive). The work runs in `files/`: on a
//! blocking thread for this machine, over SFTP (`files::remote`) for an SSH
//! host; this file parses, budgets and renders, the same for both.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{define_input_tool, tool_error};
use crate::config::JobsConfig;
use crate::files::grep::{Case, GrepOptions};

use crate::files::list::ListOptions;
use crate::files::read::ReadRange;
use crate::files::remote::{RemoteFiles, RemoteHosts, session_gone};
use crate::files::{FileError, Files, grep, list, ops, read, write};
use crate::host::Host;

/// What `file` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadAction {
    /// A page of a file by lines (numbered), or bytes as base64.
    Read,
    /// Directory entries, recursively to `depth`, paginated.
    List,
    /// Regex search over a file or a tree.
    Grep,
    /// Type, size, mode, owner, times, link target, optional sha256.
    Stat,
}

/// Parameters of `file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileParams {
    pub(crate) action: ReadAction,
    /// Absolute path (relative paths start at the server user's home).
    pub(crate) path: String,
    /// Machine; default "local".
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// read: first line, 1-based (default 1). list/grep: first entry or match of the page, 0-based.
    #[serde(default)]
    pub(crate) offset: Option<u64>,
    /// read: lines (default 2000). list: entries (default 500). grep: matches (default 100).
    #[serde(default)]
    pub(crate) limit: Option<u64>,
    /// read: "text" (default) or "base64" for raw bytes from `byte_offset`.
    #[serde(default)]
    pub(crate) encoding: Option<Encoding>,
    /// read with base64: first byte (default 0).
    #[serde(default)]
    pub(crate) byte_offset: Option<u64>,
    /// read with base64: bytes to return (default: what fits the budget).
    #[serde(default)]
    pub(crate) byte_length: Option<u64>,
    /// list: levels to descend (default 1 = the directory's own entries; 0 = all).
    #[serde(default)]
    pub(crate) depth: Option<usize>,
    /// list: only entries whose path relative to `path` matches this glob (e.g. "**/*.rs").
    #[serde(default)]
    pub(crate) glob: Option<String>,
    /// list/grep: include dotfiles (default false).
    #[serde(default)]
    pub(crate) hidden: Option<bool>,
    /// list/grep: skip what .gitignore/.ignore exclude (default: false for list, true for grep).
    #[serde(default)]
    pub(crate) gitignore: Option<bool>,
    /// grep: the regex (Rust syntax) — or literal text with `fixed`.
    #[serde(default)]
    pub(crate) pattern: Option<String>,
    /// grep: treat `pattern` as literal text.
    #[serde(default)]
    pub(crate) fixed: Option<bool>,
    /// grep: "smart" (default: insensitive unless the pattern has a capital), "sensitive" or "insensitive".
    #[serde(default)]
    pub(crate) case: Option<CaseParam>,
    /// grep: match whole words only.
    #[serde(default)]
    pub(crate) word: Option<bool>,
    /// grep: file globs to include, "!glob" to exclude (e.g. ["*.rs", "!target/**"]).
    #[serde(default)]
    pub(crate) globs: Option<Vec<String>>,
    /// grep: lines of context before and after each match (max 10).
    #[serde(default)]
    pub(crate) context: Option<usize>,
    /// stat: also compute the sha256 of a regular file.
    #[serde(default)]
    pub(crate) sha256: Option<bool>,
    /// Response budget in bytes (default 16384, max 262144).
    #[serde(default)]
    pub(crate) max_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CaseParam {
    Smart,
    Sensitive,
    Insensitive,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Encoding {
    Text,
    Base64,
}

/// What `file_write` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WriteAction {
    /// Replace the whole file atomically (created if missing).
    Write,
    /// Add to the end (created if missing).
    Append,
    /// Exact-string replacements, all applied or none.
    Edit,
    /// Remove a file, symlink, or (with `recursive`) a directory.
    Delete,
    /// Rename to `to`.
    Move,
    /// Copy to `to` (directories with `recursive`).
    Copy,
}

/// Parameters of `file_write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWriteParams {
    pub(crate) action: WriteAction,
    /// Absolute path (relative paths start at the server user's home).
    pub(crate) path: String,
    /// Machine; default "local".
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// write/append: the content.
    #[serde(default)]
    pub(crate) content: Option<String>,
    /// write/append: "text" (default) or "base64" when `content` is base64 of raw bytes.
    #[serde(default)]
    pub(crate) encoding: Option<Encoding>,
    /// write/edit: only if the file's current sha256 is this (from stat or an earlier write).
    #[serde(default)]
    pub(crate) if_hash: Option<String>,
    /// write/append: create missing parent directories (default true).
    #[serde(default)]
    pub(crate) create_parents: Option<bool>,
    /// edit: replacements applied in order, all or none.
    #[serde(default)]
    pub(crate) edits: Option<Vec<EditParam>>,
    /// move/copy: the target path.
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// move/copy: replace an existing target (default false).
    #[serde(default)]
    pub(crate) overwrite: Option<bool>,
    /// delete/copy: include a directory and everything in it.
    #[serde(default)]
    pub(crate) recursive: Option<bool>,
}

/// One replacement of `edit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditParam {
    /// Exact text to find, whitespace included.
    pub(crate) old: String,
    /// Replacement text.
    pub(crate) new: String,
    /// Occurrences that must exist (all are replaced); default exactly 1.
    #[serde(default)]
    pub(crate) count: Option<usize>,
}

pub(crate) fn read_tool() -> Tool {
    define_input_tool::<FileParams>(
        "file",
        "Read files without changing anything. action=read: numbered lines from `offset` (1-based) within a byte \
         budget, with next_offset to continue (binary files: encoding=base64 with byte_offset); action=list: \
         directory entries (depth, glob, hidden, gitignore), paginated; action=grep: regex search over a file or \
         tree (ripgrep's engine; globs, context, case), paginated; action=stat: type, size, mode, owner, times, \
         link target, optional sha256. Devices and FIFOs are refused rather than read.",
        ToolAnnotations::new()
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    )
}

pub(crate) fn write_tool() -> Tool {
    define_input_tool::<FileWriteParams>(
        "file_write",
        "Change files. action=write: replace the content atomically (temp file + rename; mode kept; parents \
         created; if_hash = expected current sha256); append; edit: exact-string replacements, each unique or \
         with an expected count, applied all or none — when one matches nothing the closest text is shown, never \
         applied; delete (directories need recursive=true); move and copy to `to` (never over an existing target \
         unless overwrite=true).",
        ToolAnnotations::new()
            .read_only(false)
            .destructive(true)
            .idempotent(false)
            .open_world(false),
    )
}

/// What a `file` call does, checked, before it meets a host.
enum ReadOp {
    Read(ReadRange),
    List(ListOptions),
    Grep(GrepOptions),
    Stat(bool),
}

fn read_op(p: FileParams) -> Result<ReadOp, FileError> {
    Ok(match p.action {
        ReadAction::Read => ReadOp::Read(match p.encoding {
            Some(Encoding::Base64) => ReadRange::Bytes {
                offset: p.byte_offset.unwrap_or(0),
                length: p.byte_length,
            },
            _ => ReadRange::Lines {
                offset: p.offset.unwrap_or(1),
                limit: p.limit.unwrap_or(2000),
            },
        }),
        ReadAction::List => ReadOp::List(ListOptions {
            depth: p.depth.unwrap_or(1),
            glob: p.glob,
            hidden: p.hidden.unwrap_or(false),
            gitignore: p.gitignore.unwrap_or(false),
            offset: p.offset.unwrap_or(0) as usize,
            limit: p.limit.unwrap_or(500).clamp(1, 10_000) as usize,
        }),
        ReadAction::Grep => {
            let Some(pattern) = p.pattern.filter(|s| !s.is_empty()) else {
                return Err(FileError::Invalid("grep needs a pattern".into()));
            };
            let defaults = GrepOptions::new(pattern);
            ReadOp::Grep(GrepOptions {
                fixed: p.fixed.unwrap_or(defaults.fixed),
                case: match p.case {
                    None => defaults.case,
                    Some(CaseParam::Smart) => Case::Smart,
                    Some(CaseParam::Sensitive) => Case::Sensitive,
                    Some(CaseParam::Insensitive) => Case::Insensitive,
                },
                word: p.word.unwrap_or(defaults.word),
                globs: p.globs.unwrap_or_default(),
                hidden: p.hidden.unwrap_or(defaults.hidden),
                gitignore: p.gitignore.unwrap_or(defaults.gitignore),
                context: p.context.unwrap_or(0).min(10),
                offset: p.offset.unwrap_or(0) as usize,
                limit: p
                    .limit
                    .map_or(defaults.limit, |l| l.clamp(1, 10_000) as usize),
                ..defaults
            })
        }
        ReadAction::Stat => ReadOp::Stat(p.sha256.unwrap_or(false)),
    })
}

type Rendered = (String, serde_json::Value);

fn rendered_read(r: &read::ReadResult) -> Rendered {
    (render_read(r), json(r))
}
fn rendered_list(l: &list::Listing) -> Rendered {
    (render_list(l), json(l))
}
fn rendered_grep(g: &grep::GrepResult) -> Rendered {
    (render_grep(g), json(g))
}
fn rendered_stat(s: &ops::StatResult) -> Rendered {
    (render_json(s), json(s))
}

/// The file engines a call may reach: this machine's, and SSH hosts'.
pub(crate) struct FileHosts<'a> {
    pub(crate) local: &'a Arc<Files>,
    pub(crate) ssh: Option<&'a crate::ssh::Pool>,
    pub(crate) remote: Option<&'a RemoteHosts>,
}

impl FileHosts<'_> {
    /// The host a call names; `None` for this machine.
    fn remote(&self, host: Option<&str>) -> Result<Option<(&RemoteHosts, String)>, String> {
        match Host::resolve(host, self.ssh).map_err(|e| e.to_string())? {
            Host::Local => Ok(None),
            Host::Ssh(name) => match self.remote {
                Some(r) => Ok(Some((r, name))),
                None => Err(format!(
                    "{name}: SSH hosts are not available in this server"
                )),
            },
        }
    }
}

pub(crate) async fn call_read(
    hosts: FileHosts<'_>,
    cfg: &JobsConfig,
    p: FileParams,
) -> CallToolResult {
    let remote = match hosts.remote(p.host.as_deref()) {
        Ok(r) => r,
        Err(e) => return tool_error(e),
    };
    let budget = p
        .max_bytes
        .unwrap_or(cfg.default_max_output)
        .clamp(1024, cfg.max_output_limit);
    let path = p.path.clone();
    let op = match read_op(p) {
        Ok(op) => op,
        Err(e) => return tool_error(e.to_string()),
    };
    if let Some((engines, name)) = remote {
        return answer(on_host(engines, &name, &path, Op::Read(&op, budget)).await);
    }
    let files = hosts.local.clone();
    run(move || {
        let path = files.scope.absolute(&path)?;
        Ok(match op {
            ReadOp::Read(range) => rendered_read(&read::read(
                &files.scope,
                &files.indexes,
                &path,
                &range,
                budget,
            )?),
            ReadOp::List(o) => rendered_list(&list::list(&files.scope, &path, &o, budget)?),
            ReadOp::Grep(o) => rendered_grep(&grep::grep(&files.scope, &path, &o, budget)?),
            ReadOp::Stat(sha) => rendered_stat(&ops::stat(&files.scope, &path, sha)?),
        })
    })
    .await
}

/// What a `file_write` call does, checked, before it meets a host.
enum WriteOp {
    Write {
        content: Vec<u8>,
        if_hash: Option<String>,
        parents: bool,
    },
    Append {
        content: Vec<u8>,
        parents: bool,
    },
    Edit {
        edits: Vec<write::Edit>,
        if_hash: Option<String>,
    },
    Delete {
        recursive: bool,
    },
    Move {
        to: String,
        overwrite: bool,
    },
    Copy {
        to: String,
        overwrite: bool,
        recursive: bool,
    },
}

fn write_op(p: FileWriteParams) -> Result<WriteOp, FileError> {
    let content = || -> Result<Vec<u8>, FileError> {
        let c = p.content.clone().ok_or_else(|| {
            FileError::Invalid("this action needs content (pass \"\" for an empty file)".into())
        })?;
        match p.encoding {
            Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .map_err(|e| FileError::Invalid(format!("content is not valid base64: {e}"))),
            _ => Ok(c.into_bytes()),
        }
    };
    let to = || -> Result<String, FileError> {
        p.to.clone()
            .ok_or_else(|| FileError::Invalid("this action needs `to`, the target path".into()))
    };
    let parents = p.create_parents.unwrap_or(true);
    let overwrite = p.overwrite.unwrap_or(false);
    let recursive = p.recursive.unwrap_or(false);
    Ok(match p.action {
        WriteAction::Write => WriteOp::Write {
            content: content()?,
            if_hash: p.if_hash.clone(),
            parents,
        },
        WriteAction::Append => WriteOp::Append {
            content: content()?,
            parents,
        },
        WriteAction::Edit => WriteOp::Edit {
            edits: p
                .edits
                .unwrap_or_default()
                .into_iter()
                .map(|e| write::Edit {
                    old: e.old,
                    new: e.new,
                    count: e.count,
                })
                .collect(),
            if_hash: p.if_hash,
        },
        WriteAction::Delete => WriteOp::Delete { recursive },
        WriteAction::Move => WriteOp::Move {
            to: to()?,
            overwrite,
        },
        WriteAction::Copy => WriteOp::Copy {
            to: to()?,
            overwrite,
            recursive,
        },
    })
}

pub(crate) async fn call_write(hosts: FileHosts<'_>, p: FileWriteParams) -> CallToolResult {
    let remote = match hosts.remote(p.host.as_deref()) {
        Ok(r) => r,
        Err(e) => return tool_error(e),
    };
    let path = p.path.clone();
    let op = match write_op(p) {
        Ok(op) => op,
        Err(e) => return tool_error(e.to_string()),
    };
    if let Some((engines, name)) = remote {
        return answer(on_host(engines, &name, &path, Op::Write(&op)).await);
    }
    let files = hosts.local.clone();
    run(move || {
        let scope = &files.scope;
        let path = scope.absolute(&path)?;
        Ok(match op {
            WriteOp::Write {
                content,
                if_hash,
                parents,
            } => summary(&write::write(
                scope,
                &path,
                &content,
                if_hash.as_deref(),
                parents,
            )?),
            WriteOp::Append { content, parents } => {
                summary(&write::append(scope, &path, &content, parents)?)
            }
            WriteOp::Edit { edits, if_hash } => {
                summary(&write::edit(scope, &path, &edits, if_hash.as_deref())?)
            }
            WriteOp::Delete { recursive } => summary(&ops::delete(scope, &path, recursive)?),
            WriteOp::Move { to, overwrite } => summary(&ops::rename(
                scope,
                &path,
                &scope.absolute(&to)?,
                overwrite,
            )?),
            WriteOp::Copy {
                to,
                overwrite,
                recursive,
            } => summary(&ops::copy(
                scope,
                &path,
                &scope.absolute(&to)?,
                overwrite,
                recursive,
            )?),
        })
    })
    .await
}

/// A file operation for an SSH host.
#[derive(Clone, Copy)]
enum Op<'a> {
    Read(&'a ReadOp, usize),
    Write(&'a WriteOp),
}

/// Runs `op` on `path` with the engine of SSH host `name`, once more on a
/// new session when the first failed because the session or its connection
/// was gone.
async fn on_host(
    engines: &RemoteHosts,
    name: &str,
    path: &str,
    op: Op<'_>,
) -> Result<Rendered, FileError> {
    let run = async |rf: &RemoteFiles| match op {
        Op::Read(r, budget) => read_remote(rf, path, r, budget).await,
        Op::Write(w) => write_remote(rf, path, w).await,
    };
    let rf = engines.get(name).await?;
    let first = run(&rf).await;
    match first {
        Err(e) if session_gone(&e) => {
            engines.forget(name, &rf).await;
            let rf = engines.get(name).await?;
            run(&rf).await
        }
        other => other,
    }
}

async fn read_remote(
    rf: &RemoteFiles,
    path: &str,
    op: &ReadOp,
    budget: usize,
) -> Result<Rendered, FileError> {
    let path = rf.absolute(path)?;
    Ok(match op {
        ReadOp::Read(range) => rendered_read(&rf.read(&path, range, budget).await?),
        ReadOp::List(o) => rendered_list(&rf.list(&path, o, budget).await?),
        ReadOp::Grep(o) => rendered_grep(&rf.grep(&path, o, budget).await?),
        ReadOp::Stat(sha) => rendered_stat(&rf.stat(&path, *sha).await?),
    })
}

async fn write_remote(rf: &RemoteFiles, path: &str, op: &WriteOp) -> Result<Rendered, FileError> {
    let path = rf.absolute(path)?;
    Ok(match op {
        WriteOp::Write {
            content,
            if_hash,
            parents,
        } => summary(
            &rf.write(&path, content, if_hash.as_deref(), *parents)
                .await?,
        ),
        WriteOp::Append { content, parents } => {
            summary(&rf.append(&path, content, *parents).await?)
        }
        WriteOp::Edit { edits, if_hash } => {
            summary(&rf.edit(&path, edits, if_hash.as_deref()).await?)
        }
        WriteOp::Delete { recursive } => summary(&rf.delete(&path, *recursive).await?),
        WriteOp::Move { to, overwrite } => {
            summary(&rf.rename(&path, &rf.absolute(to)?, *overwrite).await?)
        }
        WriteOp::Copy {
            to,
            overwrite,
            recursive,
        } => summary(
            &rf.copy(&path, &rf.absolute(to)?, *overwrite, *recursive)
                .await?,
        ),
    })
}

/// A file result (or error) as a tool result.
fn answer(result: Result<Rendered, FileError>) -> CallToolResult {
    match result {
        Ok((text, structured)) => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(structured);
            r
        }
        Err(e) => tool_error(e.to_string()),
    }
}

/// Run blocking file work off the runtime; failures become tool errors.
async fn run(f: impl FnOnce() -> Result<Rendered, FileError> + Send + 'static) -> CallToolResult {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => answer(result),
        Err(e) => tool_error(format!("the file operation failed unexpectedly: {e}")),
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn render_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn summary<T: Serialize>(v: &T) -> (String, serde_json::Value) {
    (serde_json::to_string(v).unwrap_or_default(), json(v))
}

fn render_read(r: &read::ReadResult) -> String {
    let mut out = r.content.clone();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let total = r
        .total_lines
        .map(|t| format!(" of {t}"))
        .unwrap_or_default();
    let _ = match (r.encoding, r.start_line, r.end_line) {
        ("base64", ..) => write!(
            out,
            "[{}: bytes {}..{} of {} as base64{}]",
            r.path,
            r.byte_offset.unwrap_or(0),
            r.next_byte_offset.unwrap_or(r.size),
            r.size,
            r.next_byte_offset
                .map(|n| format!("; next: byte_offset={n}"))
                .unwrap_or_default()
        ),
        (_, Some(s), Some(e)) => write!(
            out,
            "[{}: lines {s}-{e}{total}{}]",
            r.path,
            r.next_offset
                .map(|n| format!("; next: offset={n}"))
                .unwrap_or_else(|| "; end of file".into())
        ),
        (_, s, _) => write!(
            out,
            "[{}: no lines from {}{total}; end of file]",
            r.path,
            s.unwrap_or(1)
        ),
    };
    if let Some(c) = &r.cut_line {
        let _ = write!(
            out,
            "\n[line {} is longer than the budget and was cut after {} bytes; its bytes start at \
             byte_offset={} (encoding=base64)]",
            c.line, c.shown_bytes, c.byte_offset
        );
    }
    out
}

fn render_list(l: &list::Listing) -> String {
    let mut out = String::new();
    for e in &l.entries {
        let _ = writeln!(out, "{:<7} {} {:>10}  {}", e.kind, e.mode, e.size, e.path);
    }
    let _ = write!(out, "[{}: {} entries", l.dir, l.entries.len());
    if let Some(n) = l.next_offset {
        let _ = write!(out, "; more: offset={n}");
    }
    if l.scanned_limit_hit {
        out.push_str("; stopped after scanning 1,000,000 entries: narrow with depth or glob");
    }
    out.push(']');
    out
}

fn render_grep(g: &grep::GrepResult) -> String {
    let mut out = String::new();
    for m in &g.matches {
        for l in &m.before {
            let _ = writeln!(out, "{}-{}-{}", m.path, l.line, l.text);
        }
        let _ = writeln!(out, "{}:{}:{}", m.path, m.line, m.text);
        for l in &m.after {
            let _ = writeln!(out, "{}-{}-{}", m.path, l.line, l.text);
        }
    }
    let _ = write!(
        out,
        "[{} matches in {} of {} files searched under {}",
        g.total_matches, g.files_with_matches, g.files_searched, g.root
    );
    if let Some(n) = g.next_offset {
        let _ = write!(out, "; more: offset={n}");
    }
    out.push(']');
    if let Some(note) = &g.note {
        let _ = write!(out, "\n[{note}]");
    }
    out
}
