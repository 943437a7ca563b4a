//! `mcpsh jobs`, `mcpsh job kill ID`, `mcpsh job tail ID [-f]`: read the same
//! state as a running server (SQLite rows, spools, control sockets), so they
//! work from any shell on the host, with or without a server.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::age;
use crate::app::open_store;
use crate::config::Config;
use crate::jobs::proto::{Event, Request};
use crate::jobs::spool::SpoolReader;
use crate::jobs::{control_request, now_ms, output, read_status, reconcile_row};
use crate::store::{JobFilter, JobRow, JobStatus, Store};

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// Include finished jobs.
    #[arg(long)]
    all: bool,
    /// Most rows to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobAction {
    /// Kill a job's whole process tree (TERM, then KILL after the grace period).
    Kill { id: String },
    /// Print a job's output: the last lines, and with -f follow until it ends.
    Tail {
        id: String,
        /// Keep printing new output until the job ends.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
    },
}

pub(crate) async fn list(config: Config, args: JobsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    let filter = JobFilter {
        status: (!args.all).then_some(JobStatus::Running),
        limit: args.limit.max(1),
        ..Default::default()
    };
    let jobs_dir = config.jobs_dir();
    let rows: Vec<JobRow> = store
        .list_jobs(&filter)?
        .into_iter()
        .map(|r| reconcile_row(&store, &jobs_dir, r))
        .filter(|r| args.all || r.status == JobStatus::Running)
        .collect();
    if rows.is_empty() {
        println!(
            "{}",
            if args.all {
                "no jobs"
            } else {
                "no running jobs (mcpsh jobs --all shows finished ones)"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<10} {:>5} {:>9} {:>10}  COMMAND",
        "ID", "STATUS", "EXIT", "AGE", "OUTPUT"
    );
    for r in rows {
        let exit = r
            .exit_code
            .map(|c| c.to_string())
            .or(r.signal.map(|s| format!("s{s}")))
            .unwrap_or_default();
        let bytes = if r.status == JobStatus::Running {
            SpoolReader::open(&jobs_dir.join(&r.id))
                .map(|s| s.len())
                .unwrap_or(0)
        } else {
            r.total_bytes
        };
        let cmd: String = r
            .cmd
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        println!(
            "{:<22} {:<10} {:>5} {:>9} {:>10}  {}",
            r.id,
            r.status.as_str(),
            exit,
            age(now_ms() - r.created_ms),
            bytes,
            cmd
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn find(store: &Store, id: &str) -> anyhow::Result<JobRow> {
    store
        .get_job(id)?
        .with_context(|| format!("no job {id:?} (mcpsh jobs --all lists them)"))
}

pub(crate) async fn act(config: Config, action: JobAction) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    match action {
        JobAction::Kill { id } => kill(&config, &store, &id).await,
        JobAction::Tail { id, follow, lines } => tail(&config, &store, &id, follow, lines).await,
    }
}

async fn kill(config: &Config, store: &Store, id: &str) -> anyhow::Result<ExitCode> {
    let jobs_dir = config.jobs_dir();
    let row = reconcile_row(store, &jobs_dir, find(store, id)?);
    if row.status.is_final() {
        bail!("job {id} is not running (status {})", row.status.as_str());
    }
    let dir = jobs_dir.join(id);
    let reply = control_request(
        &dir,
        &Request::Kill {
            grace_ms: config.jobs.kill_grace_ms,
        },
    )
    .await;
    if let Ok(Event::Error { message }) = &reply {
        bail!("kill failed: {message}");
    }
    let mut status = None;
    for _ in 0..200 {
        status = read_status(&dir);
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The answer can be lost when the job ends as the kill lands; the exit
    // status records the same report.
    let report = match reply {
        Ok(Event::Ok { detail }) => detail,
        _ => status.and_then(|s| s.kill),
    };
    if let Some(k) = report {
        println!(
            "{id}: {} process(es) terminated, {} needed SIGKILL, {} left{}",
            k.terminated,
            k.killed,
            k.remaining,
            if k.remaining == 0 { " (verified)" } else { "" }
        );
    }
    let row = reconcile_row(store, &jobs_dir, find(store, id)?);
    println!("{id}: {}", row.status.as_str());
    Ok(if row.status.is_final() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn tail(
    config: &Config,
    store: &Store,
    id: &str,
    follow: bool,
    lines: u64,
) -> anyhow::Result<ExitCode> {
    let jobs_dir = config.jobs_dir();
    let dir = jobs_dir.join(id);
    let row = find(store, id)?;
    if row.spool_deleted {
        bail!("the output of job {id} was removed by the spool quota");
    }
    let reader =
        SpoolReader::open(&dir).with_context(|| format!("cannot open the output of job {id}"))?;
    let first = output::tail(&reader, lines.max(1), 1 << 20)?;
    let mut out = std::io::stdout().lock();
    out.write_all(first.text.as_bytes())?;
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pos = first.next;
    loop {
        let done = read_status(&dir).is_some()
            || reconcile_row(store, &jobs_dir, find(store, id)?)
                .status
                .is_final();
        let reader = SpoolReader::open(&dir)?;
        while pos < reader.len() {
            let page = output::page(&reader, pos, 1 << 20)?;
            if page.next == pos {
                // A partial last line: print it raw so nothing is held back.
                let raw = reader.read(pos, (reader.len() - pos) as usize)?;
                out.write_all(&raw)?;
                pos = reader.len();
                break;
            }
            out.write_all(page.text.as_bytes())?;
            pos = page.next;
        }
        out.flush()?;
        if done {
            let row = find(store, id)?;
            eprintln!(
                "[{id} {}{}]",
                row.status.as_str(),
                row.exit_code.map(|c| format!(" {c}")).unwrap_or_default()
            );
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
