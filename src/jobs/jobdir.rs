//! A job's directory as the server and the CLI see it: its exit status, its
//! spool, its control socket, reconciling a row with what is on disk, and the
//! spool quota. No long-lived state; every function reads the files afresh.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proto::{CONTROL_SOCKET, Event, ExitStatus, Request, STATUS_FILE};
use super::spool::SpoolReader;
use super::{JobError, now_ms, procs};
use crate::store::{JobEnd, JobRow, JobStatus, Store};

/// Read `status.json` from a job directory.
pub fn read_status(dir: &Path) -> Option<ExitStatus> {
    let text = std::fs::read(dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Open a job's spool; an error if the quota removed it.
pub(super) fn open_spool(dir: &Path, row: &JobRow) -> Result<SpoolReader, JobError> {
    if row.spool_deleted {
        return Err(JobError::Invalid(format!(
            "the output of job {} is no longer stored (removed by the spool quota)",
            row.id
        )));
    }
    Ok(SpoolReader::open(dir)?)
}

pub(super) fn spool_totals(dir: &Path) -> (u64, u64) {
    match SpoolReader::open(dir) {
        Ok(r) => (r.len(), r.total_lines().unwrap_or(0)),
        Err(_) => (0, 0),
    }
}

pub(super) fn end_from_status(dir: &Path, status: &ExitStatus) -> JobEnd {
    let (total_bytes, total_lines) = spool_totals(dir);
    JobEnd {
        spool_bytes: dir_size(dir),
        status: JobStatus::parse(&status.status).unwrap_or(JobStatus::Failed),
        exit_code: status.exit_code,
        signal: status.signal,
        reason: status.reason.clone(),
        ended_ms: status.ended_ms,
        total_bytes: total_bytes.max(status.total_bytes),
        total_lines,
    }
}

/// Settle a `running` row without a server: used by the CLI so `mcpsh jobs`
/// shows the truth even when no server is up. Returns the row as it now stands.
pub fn reconcile_row(store: &Store, jobs_dir: &Path, row: JobRow) -> JobRow {
    if row.status.is_final() {
        return row;
    }
    let dir = jobs_dir.join(&row.id);
    let end = match read_status(&dir) {
        Some(status) => end_from_status(&dir, &status),
        None => match (row.sup_pid, row.sup_start) {
            (Some(pid), Some(start)) if procs::same_process_alive(pid, start) => return row,
            // Just created: the supervisor may not be recorded yet.
            (None, _) if now_ms() - row.created_ms < 10_000 => return row,
            _ => {
                let (total_bytes, total_lines) = spool_totals(&dir);
                JobEnd {
                    spool_bytes: dir_size(&dir),
                    status: JobStatus::Lost,
                    exit_code: None,
                    signal: None,
                    reason: Some(if row.host == "local" {
                        "its supervisor process is gone and left no exit status".into()
                    } else {
                        "the mcpsh server that ran it over SSH stopped, and its channel with it"
                            .into()
                    }),
                    ended_ms: now_ms(),
                    total_bytes,
                    total_lines,
                }
            }
        },
    };
    let _ = store.finish_job(&row.id, &end);
    store.get_job(&row.id).ok().flatten().unwrap_or(row)
}

/// One request/response exchange on a job's control socket.
pub async fn control_request(dir: &Path, req: &Request) -> Result<Event, JobError> {
    let sock = dir.join(CONTROL_SOCKET);
    // A supervisor binds its socket just after taking its job: allow it a moment.
    for _ in 0..50 {
        if sock.exists() || dir.join(STATUS_FILE).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stream = UnixStream::connect(&sock).await.map_err(|e| {
        JobError::Control(format!(
            "cannot reach the job's supervisor ({e}); the job has probably just ended"
        ))
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| JobError::Control(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut lines = BufReader::new(read).lines();
    let reply = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .map_err(|_| JobError::Control("the supervisor did not answer within 15 s".into()))??;
    let reply =
        reply.ok_or_else(|| JobError::Control("the supervisor closed the connection".into()))?;
    serde_json::from_str(&reply).map_err(|e| JobError::Control(format!("bad reply: {e}")))
}

/// Delete spools of the oldest finished jobs until the total is within `quota`.
pub(super) fn enforce_quota(store: &Store, jobs_dir: &Path, quota: u64) -> Result<(), JobError> {
    let (finished, mut total) = store.finished_spools()?;
    for (id, size) in finished {
        if total <= quota {
            break;
        }
        match std::fs::remove_dir_all(jobs_dir.join(&id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(job = %id, "cannot remove spool: {e}");
                continue;
            }
        }
        store.mark_spool_deleted(&id)?;
        total = total.saturating_sub(size);
    }
    Ok(())
}

pub(super) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
