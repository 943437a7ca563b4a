//! The `bash` tool: start a job, wait inline up to `wait` seconds, and return
//! its result or a handle with the output so far.

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::model::{CallToolResult, Tool};
use rmcp::schemars::{self, JsonSchema};
use rmcp::service::{RequestContext, RoleServer};
use serde::Deserialize;

use super::render::JobResult;
use super::{Progress, define_tool_either, shell_annotations, tool_error};
use crate::config::JobsConfig;
use crate::host::Host;
use crate::jobs::proto::StdinMode;
use crate::jobs::{Jobs, StartRequest, output};
use crate::ssh::Pool;

/// Parameters of `bash`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BashParams {
    /// The command line, run by `bash -c` (multi-line scripts are fine).
    pub(crate) cmd: String,
    /// Machine to run on; default "local".
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Run on several hosts at once (names, globs like "web-*", "tag:prod"). Needs SSH hosts.
    #[serde(default)]
    pub(crate) hosts: Option<Vec<String>>,
    /// Working directory; default the server user's home.
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Text fed to the command's stdin, followed by EOF. Without it stdin is /dev/null.
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    /// Seconds to wait inline before returning a running job's id (default 10, max 50, 0 = return at once).
    #[serde(default)]
    pub(crate) wait: Option<f64>,
    /// Hard deadline in seconds: when it passes the whole process tree is killed (status timed_out).
    #[serde(default)]
    pub(crate) timeout: Option<f64>,
    /// Run under a pseudo-terminal (for programs that need one); output is rendered as plain text.
    #[serde(default)]
    pub(crate) tty: Option<bool>,
    /// Keep stdin open so `job action=write` can type into the command.
    #[serde(default)]
    pub(crate) interactive: Option<bool>,
    /// Short label; it also names the job id.
    #[serde(default)]
    pub(crate) title: Option<String>,
    /// Inline output budget in bytes (default 16384). Longer output shows head and tail with a cursor for the rest.
    #[serde(default)]
    pub(crate) max_output: Option<usize>,
}

pub(crate) fn tool() -> Tool {
    define_tool_either::<BashParams, JobResult, super::fanout::FanoutResult>(
        "bash",
        "Run a shell command as a job. Waits up to `wait` seconds (default 10) and returns status, exit code, \
         duration and a bounded output excerpt (head and tail, with the exact omitted range and the cursor to \
         read it); a command still running by then keeps running in the background and its job id is returned \
         for `job` (poll/kill/write). stdin is /dev/null unless `stdin`, `interactive` or `tty` is given, so \
         prompts fail fast. A non-zero exit sets isError. With `hosts` (names, globs, tag:NAME) the command \
         runs on every selected SSH host in parallel and the answer is a summary plus one entry per host.",
        shell_annotations(),
    )
}

pub(crate) async fn call(
    jobs: &Jobs,
    ssh: Option<&Pool>,
    p: BashParams,
    ctx: &RequestContext<RoleServer>,
) -> CallToolResult {
    match run(jobs, ssh, p, ctx).await {
        Ok(r) => r,
        Err(msg) => tool_error(msg),
    }
}

async fn run(
    jobs: &Jobs,
    ssh: Option<&Pool>,
    p: BashParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, String> {
    let selectors = p.hosts.clone().filter(|h| !h.is_empty());
    let prep = prepare(jobs.config(), p, ssh, selectors.is_some())?;
    if let Some(selectors) = selectors {
        let Some(pool) = ssh else {
            return Err("`hosts` fan-out needs SSH hosts, and none are configured (add Host entries to ~/.ssh/config or hosts.toml)".into());
        };
        return super::fanout::run(jobs, pool, &selectors, prep, &ctx.ct).await;
    }
    let Prepared {
        request: req,
        wait,
        budget,
    } = prep;
    let host = req.host.clone();
    // `wait` counts from the call, not from the start: a start held up (a
    // busy machine, a slow connect) does not stretch the answer past it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let id = jobs.start(req).await.map_err(|e| e.to_string())?;
    tracing::debug!(job = %id, host = %host, "started");

    let progress = Progress::new(ctx);
    let waited = jobs
        .wait(&id, deadline, None, &ctx.ct, |p| {
            progress.report(&id, p.bytes)
        })
        .await;
    if ctx.ct.is_cancelled() && waited.end.is_none() {
        // Cancelling the call ends the wait, not the job: a dropped connection or
        // a server restart must never kill work (jobs are durable by design).
        return Err(format!(
            "cancelled while waiting; job {id} keeps running in the background \
             (job action=poll id={id} to follow it, job action=kill id={id} to stop it)"
        ));
    }
    result(jobs, &id, budget).await.map(JobResult::into_result)
}

/// A `bash` call's parameters, checked: what to start, how long to wait
/// inline, and the output budget.
pub(crate) struct Prepared {
    pub request: StartRequest,
    pub wait: f64,
    pub budget: usize,
}

fn prepare(
    cfg: &JobsConfig,
    p: BashParams,
    ssh: Option<&Pool>,
    fanout: bool,
) -> Result<Prepared, String> {
    if fanout && p.host.as_deref().is_some_and(|h| !h.trim().is_empty()) {
        return Err("give either `host` (one machine) or `hosts` (fan-out), not both".into());
    }
    let host = if fanout {
        Host::Local
    } else {
        Host::resolve(p.host.as_deref(), ssh).map_err(|e| e.to_string())?
    };
    let wait = p.wait.unwrap_or(cfg.default_wait);
    if !wait.is_finite() || wait < 0.0 {
        return Err(format!(
            "wait must be between 0 and {} seconds",
            cfg.max_wait
        ));
    }
    let wait = wait.min(cfg.max_wait);
    let timeout = match p.timeout {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(format!(
                "timeout must be a positive number of seconds, got {t}"
            ));
        }
    };
    let budget = p
        .max_output
        .unwrap_or(cfg.default_max_output)
        .clamp(256, cfg.max_output_limit);
    let tty = p.tty.unwrap_or(false);
    let interactive = p.interactive.unwrap_or(false);
    let stdin = match (p.stdin, interactive || tty) {
        (Some(text), false) => StdinMode::Text(text),
        (Some(_), true) => {
            return Err("give either `stdin` (text then EOF) or `interactive`/`tty` (write later with job action=write), not both".into());
        }
        (None, true) => StdinMode::Interactive,
        (None, false) => StdinMode::Null,
    };
    let request = StartRequest {
        host: host.name().to_owned(),
        cmd: p.cmd,
        cwd: p.cwd.map(Into::into),
        env: p.env.unwrap_or_default().into_iter().collect(),
        stdin,
        tty: tty.then_some((120, 40)),
        title: p.title,
        timeout,
    };
    Ok(Prepared {
        request,
        wait,
        budget,
    })
}

/// The job's current state with a head+tail excerpt of all its output; the
/// poll cursor moves to the end of what exists now.
pub(crate) async fn result(jobs: &Jobs, id: &str, budget: usize) -> Result<JobResult, String> {
    let id = id.to_owned();
    jobs.read_view(&id.clone(), true, move |row, reader| {
        let excerpt = output::excerpt(reader, budget)?;
        let mut r = JobResult::from_row(row, reader.len(), reader.total_lines()?).with_excerpt(excerpt);
        if !row.status.is_final() {
            r.hint = Some(format!(
                "still running; follow with job action=poll id={id} wait=30, stop with job action=kill id={id}"
            ));
        } else if r.omitted.is_some() {
            r.hint = Some(format!("page through everything with job action=poll id={id} cursor=0"));
        }
        Ok((r, reader.len()))
    })
    .await
    .map_err(|e| e.to_string())
}
