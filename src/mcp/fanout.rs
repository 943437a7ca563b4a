//! `bash` with `hosts`: the same command on many SSH hosts at once. Every
//! host runs as its own job, started in parallel under a concurrency bound;
//! each waits until the call's shared `wait` deadline, so a slow or dead host
//! holds back nobody but itself (a dead one fails within its connect
//! timeout). The answer has one entry per host and a summary.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::schemars::{self, JsonSchema};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::bash::{self, Prepared};
use super::render::JobResult;
use crate::jobs::Jobs;
use crate::ssh::Pool;

/// The answer of a fan-out `bash` call.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FanoutResult {
    pub summary: Summary,
    /// One entry per host, in inventory order.
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub(crate) struct Summary {
    pub hosts: usize,
    /// Exited with code 0.
    pub ok: usize,
    /// Exited non-zero, killed, timed out, lost, or could not start.
    pub failed: usize,
    /// Still running when the call returned (poll their jobs).
    pub running: usize,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct HostEntry {
    pub host: String,
    /// The job on this host, when it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobResult>,
    /// Why the command could not start on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs `prep` on every host of `selectors`.
pub(crate) async fn run(
    jobs: &Jobs,
    pool: &Pool,
    selectors: &[String],
    prep: Prepared,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<CallToolResult, String> {
    let names = pool
        .inventory()
        .select(selectors)
        .map_err(|e| e.to_string())?;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(prep.wait);
    // Each host gets a fair share of the inline budget.
    let budget = (prep.budget / names.len().max(1)).max(512);
    let limit = Arc::new(Semaphore::new(pool.config().fanout_concurrency.max(1)));
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let (jobs, limit, cancel) = (jobs.clone(), limit.clone(), cancel.clone());
            let mut req = prep.request.clone();
            req.host = name.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let started = {
                    let _slot = limit.acquire_owned().await;
                    jobs.start(req).await
                };
                match started {
                    Ok(id) => {
                        jobs.wait(&id, deadline, None, &cancel, |_| {}).await;
                        match bash::result(&jobs, &id, budget).await {
                            Ok(r) => HostEntry {
                                host: name,
                                job: Some(r),
                                error: None,
                            },
                            Err(e) => HostEntry {
                                host: name,
                                job: None,
                                error: Some(e),
                            },
                        }
                    }
                    Err(e) => HostEntry {
                        host: name,
                        job: None,
                        error: Some(e.to_string()),
                    },
                }
            })
        })
        .collect();
    let mut entries = Vec::with_capacity(tasks.len());
    for (task, name) in tasks.into_iter().zip(&names) {
        entries.push(task.await.unwrap_or_else(|e| HostEntry {
            host: name.clone(),
            job: None,
            error: Some(format!("internal error: {e}")),
        }));
    }
    let mut summary = Summary {
        hosts: entries.len(),
        duration_ms: started.elapsed().as_millis() as u64,
        ..Summary::default()
    };
    for e in &entries {
        match &e.job {
            Some(j) if j.status == "running" => summary.running += 1,
            Some(j) if !j.is_error() => summary.ok += 1,
            _ => summary.failed += 1,
        }
    }
    let result = FanoutResult {
        summary,
        hosts: entries,
    };
    let text = render(&result);
    let value = serde_json::to_value(&result).unwrap_or_default();
    let mut r = if result.summary.failed > 0 {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    r.structured_content = Some(value);
    Ok(r)
}

fn render(r: &FanoutResult) -> String {
    let s = &r.summary;
    let mut out = format!(
        "{} hosts: {} ok, {} failed, {} running · {} ms\n",
        s.hosts, s.ok, s.failed, s.running, s.duration_ms
    );
    for e in &r.hosts {
        out.push_str(&format!("── {} · ", e.host));
        match (&e.job, &e.error) {
            (Some(j), _) => out.push_str(&j.text()),
            (None, Some(err)) => out.push_str(&format!("could not start: {err}")),
            (None, None) => out.push_str("no result"),
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
