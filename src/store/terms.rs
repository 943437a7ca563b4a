//! Terminal session rows: which sessions exist, where their directory and
//! control socket are, and why a closed one ended.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// One terminal session.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TermRow {
    pub id: String,
    pub name: String,
    pub host: String,
    /// Its directory: control socket, transcript, status.
    pub dir: String,
    pub shell: String,
    /// The hosting process (a supervisor for local sessions, the server for
    /// SSH ones) and its start time.
    pub sup_pid: Option<i32>,
    pub sup_start: Option<u64>,
    pub created_ms: i64,
    pub closed_ms: Option<i64>,
    pub reason: Option<String>,
}

const COLUMNS: &str =
    "id, name, host, dir, shell, sup_pid, sup_start, created_ms, closed_ms, reason";

fn from_row(r: &Row<'_>) -> rusqlite::Result<TermRow> {
    Ok(TermRow {
        id: r.get(0)?,
        name: r.get(1)?,
        host: r.get(2)?,
        dir: r.get(3)?,
        shell: r.get(4)?,
        sup_pid: r.get(5)?,
        sup_start: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        created_ms: r.get(7)?,
        closed_ms: r.get(8)?,
        reason: r.get(9)?,
    })
}

impl Store {
    /// Insert an open session. False when `(host, name)` already has one.
    pub fn insert_term(&self, row: &TermRow) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO terms (id, name, host, dir, shell, sup_pid, sup_start, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.id,
                    row.name,
                    row.host,
                    row.dir,
                    row.shell,
                    row.sup_pid,
                    row.sup_start.map(|v| v as i64),
                    row.created_ms
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// The open session named `name` on `host`.
    pub fn open_term(&self, host: &str, name: &str) -> Result<Option<TermRow>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM terms WHERE host = ?1 AND name = ?2 AND closed_ms IS NULL"
            ))?
            .query_row(params![host, name], from_row)
            .optional()
        })
    }

    /// Open sessions (all hosts), then up to `closed` recently closed ones.
    pub fn list_terms(&self, closed: usize) -> Result<Vec<TermRow>, StoreError> {
        self.with(|c| {
            let mut out: Vec<TermRow> = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM terms WHERE closed_ms IS NULL ORDER BY host, name"
                ))?
                .query_map([], from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let recent = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM terms WHERE closed_ms IS NOT NULL \
                     ORDER BY closed_ms DESC LIMIT ?1"
                ))?
                .query_map([closed as i64], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.extend(recent);
            Ok(out)
        })
    }

    /// Mark a session closed with why; only an open row changes.
    pub fn close_term(&self, id: &str, reason: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE terms SET closed_ms = ?2, reason = ?3 WHERE id = ?1 AND closed_ms IS NULL",
                params![id, at_ms, reason],
            )?;
            Ok(n == 1)
        })
    }
}
