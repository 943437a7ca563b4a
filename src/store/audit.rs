//! The audit log: one row per tool call or security event. Rows never hold
//! output, passwords or token values; the caller passes only facts.

use rusqlite::{Row, params};

use super::{Cached, Store, StoreError};

/// One audit row.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub ts_ms: i64,
    /// `tool` for a tool call, else the security event (`login_ok`, …).
    pub event: String,
    pub user: Option<String>,
    pub token_id: Option<String>,
    pub client_id: Option<String>,
    pub source: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub host: Option<String>,
    /// The command or path the call acted on.
    pub target: Option<String>,
    /// `started` until the call ends, then `ok`, `error` or `denied`.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    pub detail: Option<String>,
}

/// How a call ended, filled in after it ran.
#[derive(Debug, Clone, Default)]
pub struct AuditEnd {
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub bytes: Option<u64>,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

/// Filter for [`Store::list_audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub user: Option<String>,
    /// Only rows with a larger id (for following).
    pub after_id: Option<i64>,
    /// The newest `limit` rows (returned oldest first).
    pub limit: usize,
}

const COLUMNS: &str = "id, ts_ms, event, user_name, token_id, client_id, source, tool, action, host, \
     target, outcome, exit_code, bytes, duration_ms, detail";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        ts_ms: r.get(1)?,
        event: r.get(2)?,
        user: r.get(3)?,
        token_id: r.get(4)?,
        client_id: r.get(5)?,
        source: r.get(6)?,
        tool: r.get(7)?,
        action: r.get(8)?,
        host: r.get(9)?,
        target: r.get(10)?,
        outcome: r.get(11)?,
        exit_code: r.get(12)?,
        bytes: r.get::<_, Option<i64>>(13)?.map(|b| b as u64),
        duration_ms: r.get::<_, Option<i64>>(14)?.map(|b| b as u64),
        detail: r.get(15)?,
    })
}

impl Store {
    /// Append a row; returns its id. Committed before this returns, so a
    /// tool call is on record before its command starts.
    pub fn insert_audit(&self, a: &AuditRow) -> Result<i64, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO audit (ts_ms, event, user_name, token_id, client_id, source, tool, action, \
                 host, target, outcome, exit_code, bytes, duration_ms, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                a.ts_ms,
                a.event,
                a.user,
                a.token_id,
                a.client_id,
                a.source,
                a.tool,
                a.action,
                a.host,
                a.target,
                a.outcome,
                a.exit_code,
                a.bytes.map(|b| b as i64),
                a.duration_ms.map(|b| b as i64),
                a.detail
            ])?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record how a call that was logged as `started` ended.
    pub fn finish_audit(&self, id: i64, end: &AuditEnd) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE audit SET outcome = ?2, exit_code = ?3, bytes = ?4, duration_ms = ?5, \
                 detail = coalesce(?6, detail) WHERE id = ?1",
            )?
            .execute(params![
                id,
                end.outcome,
                end.exit_code,
                end.bytes.map(|b| b as i64),
                end.duration_ms as i64,
                end.detail
            ])
            .map(drop)
        })
    }

    /// Remove rows older than `before_ms`; returns how many.
    pub fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with(|c| c.exec_cached("DELETE FROM audit WHERE ts_ms < ?1", params![before_ms]))
    }

    /// Audit rows matching `f`, oldest first.
    pub fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.with(|c| {
            let mut rows: Vec<AuditRow> = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM audit WHERE (?1 IS NULL OR ts_ms >= ?1) \
                     AND (?2 IS NULL OR user_name = ?2) AND (?3 IS NULL OR id > ?3) \
                     ORDER BY id DESC LIMIT ?4"
                ))?
                .query_map(
                    params![f.since_ms, f.user, f.after_id, f.limit.max(1) as i64],
                    from_row,
                )?
                .collect::<rusqlite::Result<_>>()?;
            rows.reverse();
            Ok(rows)
        })
    }
}
