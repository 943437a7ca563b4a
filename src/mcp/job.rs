//! The `job` tool: poll, list, kill and write to jobs.

use std::time::Duration;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::{RequestContext, RoleServer};
use serde::{Deserialize, Serialize};

use super::render::{self, JobResult, KillOut};
use super::{Progress, define_tool, shell_annotations, tool_error};
use crate::jobs::keys::{KEY_NAMES, KeyAction, key};
use crate::jobs::proto::{Event, Request};
use crate::jobs::{JobError, Jobs, output};
use crate::store::{JobFilter, JobStatus};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Poll,
    List,
    Kill,
    Write,
}

/// Parameters of `job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobParams {
    /// poll: read output and status; list: recent jobs; kill: end the whole process tree; write: type into an interactive/tty job.
    pub(crate) action: Action,
    /// Job id (poll, kill, write).
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// Host filter for list; default all.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// poll: byte offset to read from (a `next_cursor` or an omitted range's `from`). Without it, poll returns output new since the last poll.
    #[serde(default)]
    pub(crate) cursor: Option<u64>,
    /// poll: return only the last N lines.
    #[serde(default)]
    pub(crate) tail: Option<u64>,
    /// poll: only lines matching this regex, with line numbers (from `cursor`, default the start).
    #[serde(default)]
    pub(crate) grep: Option<String>,
    /// poll: seconds to wait for new output or the end (long-poll, max 50).
    #[serde(default)]
    pub(crate) wait: Option<f64>,
    /// poll: output budget in bytes (default 16384).
    #[serde(default)]
    pub(crate) max_output: Option<usize>,
    /// list: only jobs with this status (running, exited, killed, timed_out, failed, lost).
    #[serde(default)]
    pub(crate) status: Option<String>,
    /// list: page size (default 20, max 200).
    #[serde(default)]
    pub(crate) limit: Option<usize>,
    /// list: the `next_page` token of the previous page.
    #[serde(default)]
    pub(crate) page: Option<String>,
    /// write: text to send to stdin (use "\n" or keys=["enter"] to submit a line).
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// write: named keys sent after `text`: enter, tab, escape, backspace, up, down, left, right, ctrl-c, ctrl-d (EOF), ctrl-z, ...
    #[serde(default)]
    pub(crate) keys: Option<Vec<String>>,
}

/// One row of `job list`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobSummary {
    pub(crate) job: String,
    pub(crate) host: String,
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    /// The command (first 200 characters).
    pub(crate) cmd: String,
    pub(crate) started_ms: i64,
    pub(crate) duration_ms: u64,
    pub(crate) total_bytes: u64,
}

/// Result of the `job` tool: a job result (poll, kill, write) or a list.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobToolOutput {
    #[serde(flatten)]
    pub(crate) result: Option<JobResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jobs: Option<Vec<JobSummary>>,
    /// Pass as `page` for the next (older) page of the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_page: Option<String>,
}

pub(crate) fn tool() -> Tool {
    define_tool::<JobParams, JobToolOutput>(
        "job",
        "Follow and control jobs started by `bash`. action=poll reads output by `cursor` (or what is new \
         since the last poll, or the last `tail` lines, or `grep` matches) and can long-poll with `wait`; \
         action=list shows recent jobs (newest first, paginated); action=kill ends the job's whole process \
         tree (TERM, then KILL) and reports what it verified; action=write sends `text` and named `keys` to a \
         job started with interactive=true or tty=true.",
        shell_annotations(),
    )
}

pub(crate) async fn call(
    jobs: &Jobs,
    p: JobParams,
    ctx: &RequestContext<RoleServer>,
) -> CallToolResult {
    let outcome = match p.action {
        Action::List => return list(jobs, &p).await.unwrap_or_else(tool_error),
        Action::Poll => poll(jobs, &p, ctx).await,
        Action::Kill => kill(jobs, &p).await,
        Action::Write => write(jobs, &p).await,
    };
    match outcome {
        Ok(r) => r.into_result(),
        Err(e) => tool_error(e),
    }
}

fn need_id(p: &JobParams) -> Result<&str, String> {
    p.id.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "this action needs `id`; find ids with job action=list".to_owned())
}

async fn poll(
    jobs: &Jobs,
    p: &JobParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<JobResult, String> {
    let id = need_id(p)?;
    let cfg = jobs.config();
    let budget = p
        .max_output
        .unwrap_or(cfg.default_max_output)
        .clamp(256, cfg.max_output_limit);
    let re = match &p.grep {
        None => None,
        Some(g) => Some(
            regex::bytes::RegexBuilder::new(g)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("grep is not a valid regex: {e}"))?,
        ),
    };
    let row = jobs.row(id).await.map_err(|e| e.to_string())?;
    let from = p.cursor.unwrap_or(row.poll_cursor);
    let wait = p.wait.unwrap_or(0.0);
    if !wait.is_finite() || wait < 0.0 {
        return Err(format!(
            "wait must be between 0 and {} seconds",
            cfg.max_wait
        ));
    }
    if wait > 0.0 && !row.status.is_final() {
        let progress = Progress::new(ctx);
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs_f64(wait.min(cfg.max_wait));
        // tail/grep views wait for any new output; a page waits for output past its cursor.
        let beyond = if p.tail.is_some() || re.is_some() {
            jobs.spool(id).await.map(|r| r.len()).unwrap_or(from)
        } else {
            from
        };
        jobs.wait(id, deadline, Some(beyond), &ctx.ct, |pr| {
            progress.report(id, pr.bytes)
        })
        .await;
    }
    let tail = p.tail;
    let cursor = p.cursor;
    let mut view = jobs
        .read_view(id, re.is_none(), move |row, reader| {
            let r = JobResult::from_row(row, reader.len(), reader.total_lines()?);
            let r = if let Some(n) = tail {
                r.with_page(output::tail(reader, n.max(1), budget)?)
            } else if let Some(re) = re {
                r.with_grep(output::grep(
                    reader,
                    cursor.unwrap_or(0),
                    &re,
                    budget,
                    256 << 20,
                )?)
            } else {
                r.with_page(output::page(reader, from, budget)?)
            };
            let next = r.next_cursor;
            Ok((r, next))
        })
        .await
        .map_err(|e| e.to_string())?;
    if view.hint.is_none() {
        view.hint = next_hint(&view);
    }
    Ok(view)
}

fn next_hint(v: &JobResult) -> Option<String> {
    let running = v.status == JobStatus::Running.as_str();
    if v.next_cursor < v.total_bytes {
        Some(format!(
            "{} more bytes; continue with job action=poll id={} cursor={}",
            v.total_bytes - v.next_cursor,
            v.job,
            v.next_cursor
        ))
    } else if running {
        Some(format!(
            "still running; job action=poll id={} wait=30 returns when there is more",
            v.job
        ))
    } else {
        None
    }
}

async fn kill(jobs: &Jobs, p: &JobParams) -> Result<JobResult, String> {
    let id = need_id(p)?;
    let (report, row) = match jobs.kill(id).await {
        Ok(v) => v,
        Err(JobError::NotRunning(_)) => {
            let row = jobs.row(id).await.map_err(|e| e.to_string())?;
            return Err(format!(
                "job {id} is not running (status {}); nothing to kill",
                row.status.as_str()
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut r = super::bash::result(jobs, id, jobs.config().default_max_output).await?;
    r.kill = report.map(KillOut::from);
    if row.status == JobStatus::Running {
        r.hint = Some("the kill was sent but the job has not ended yet; poll it again".into());
    }
    Ok(r)
}

async fn write(jobs: &Jobs, p: &JobParams) -> Result<JobResult, String> {
    let id = need_id(p)?;
    let row = jobs.row(id).await.map_err(|e| e.to_string())?;
    if !row.interactive && !row.tty {
        return Err(format!(
            "job {id} was not started with interactive=true or tty=true, so its stdin is closed; start it again with interactive=true"
        ));
    }
    if p.text.is_none() && p.keys.as_ref().is_none_or(Vec::is_empty) {
        return Err("nothing to write: give `text` and/or `keys`".into());
    }
    let mut actions = Vec::new();
    if let Some(t) = &p.text {
        actions.push(KeyAction::Bytes(t.as_bytes().to_vec()));
    }
    for k in p.keys.iter().flatten() {
        actions.push(
            key(k, row.tty).ok_or_else(|| format!("unknown key {k:?}; known keys: {KEY_NAMES}"))?,
        );
    }
    let mut written = 0;
    for a in actions {
        let req = match a {
            KeyAction::Bytes(b) => {
                written += b.len();
                Request::Write {
                    data: base64::engine::general_purpose::STANDARD.encode(b),
                    eof: false,
                }
            }
            KeyAction::Eof => Request::Write {
                data: String::new(),
                eof: true,
            },
            KeyAction::Signal(signal) => Request::Signal { signal },
        };
        match jobs.control(id, req).await.map_err(|e| e.to_string())? {
            Event::Error { message } => return Err(message),
            Event::Exit(_) => {
                return Err(format!(
                    "job {id} has ended; nothing reads its input any more"
                ));
            }
            _ => {}
        }
    }
    // Give the program a moment to react so the reply can show its answer.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let budget = jobs.config().default_max_output;
    let mut r = jobs
        .read_view(id, true, move |row, reader| {
            let r = JobResult::from_row(row, reader.len(), reader.total_lines()?)
                .with_page(output::page(reader, row.poll_cursor, budget)?);
            let next = r.next_cursor;
            Ok((r, next))
        })
        .await
        .map_err(|e| e.to_string())?;
    r.written_bytes = Some(written);
    r.hint = next_hint(&r);
    Ok(r)
}

async fn list(jobs: &Jobs, p: &JobParams) -> Result<CallToolResult, String> {
    let status = match p.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            format!("unknown status {s:?}; use running, exited, killed, timed_out, failed or lost")
        })?),
    };
    let limit = p.limit.unwrap_or(20).clamp(1, 200);
    let before =
        match p.page.as_deref() {
            None | Some("") => None,
            Some(tok) => Some(parse_page(tok).ok_or(
                "`page` is not a token from a previous job list; omit it for the first page",
            )?),
        };
    let host = p.host.clone().filter(|h| !h.is_empty());
    let rows = jobs
        .list(JobFilter {
            status,
            host,
            before,
            limit: limit + 1,
        })
        .await
        .map_err(|e| e.to_string())?;
    let more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let next_page = more
        .then(|| rows.last().map(|r| format!("{}:{}", r.created_ms, r.id)))
        .flatten();
    let now = crate::jobs::now_ms();
    let items: Vec<JobSummary> = rows
        .iter()
        .map(|r| JobSummary {
            job: r.id.clone(),
            host: r.host.clone(),
            status: r.status.as_str().into(),
            exit_code: r.exit_code,
            title: r.title.clone(),
            cmd: r.cmd.chars().take(200).collect(),
            started_ms: r.created_ms,
            duration_ms: (r.ended_ms.unwrap_or(now) - r.created_ms).max(0) as u64,
            total_bytes: r.total_bytes,
        })
        .collect();
    let mut text = String::new();
    if items.is_empty() {
        text.push_str("no jobs\n");
    }
    for j in &items {
        let code = j.exit_code.map(|c| format!(" {c}")).unwrap_or_default();
        let cmd: String = j
            .cmd
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        text.push_str(&format!(
            "{}  {}{}  {}  {}\n",
            j.job,
            j.status,
            code,
            render::duration(j.duration_ms),
            cmd
        ));
    }
    if let Some(np) = &next_page {
        text.push_str(&format!("[more: job action=list page={np}]\n"));
    }
    let out = JobToolOutput {
        result: None,
        jobs: Some(items),
        next_page,
    };
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(serde_json::to_value(&out).unwrap_or_default());
    Ok(r)
}

fn parse_page(tok: &str) -> Option<(i64, String)> {
    let (ms, id) = tok.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}
