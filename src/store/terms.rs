//! Terminal session rows: which sessions exist, where their directory and
//! control socket are, and why a closed one ended.

use rusqlite::{OptionalExtension, Row, params};

use super::{Cached, Store, StoreError};

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
            let n = c.exec_cached(
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
            let n = c.exec_cached(
                "UPDATE terms SET closed_ms = ?2, reason = ?3 WHERE id = ?1 AND closed_ms IS NULL",
                params![id, at_ms, reason],
            )?;
            Ok(n == 1)
        })
    }

    /// Closed sessions beyond the newest `keep` (oldest first): their
    /// directories are due for removal.
    pub fn closed_terms_beyond(&self, keep: usize) -> Result<Vec<TermRow>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM terms WHERE closed_ms IS NOT NULL \
                 ORDER BY closed_ms DESC LIMIT -1 OFFSET ?1"
            ))?
            .query_map([keep as i64], from_row)?
            .collect()
        })
    }

    pub fn delete_term(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached("DELETE FROM terms WHERE id = ?1", [id])
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> TermRow {
        TermRow {
            id: id.into(),
            name: name.into(),
            host: "local".into(),
            dir: format!("/x/{id}"),
            shell: "/bin/bash".into(),
            sup_pid: Some(1),
            sup_start: Some(2),
            created_ms: 1,
            closed_ms: None,
            reason: None,
        }
    }

    #[test]
    fn one_open_session_per_name_and_old_closed_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(store.insert_term(&row("a-1", "a")).unwrap());
        assert!(
            !store.insert_term(&row("a-2", "a")).unwrap(),
            "(host, name) is taken"
        );
        assert_eq!(store.open_term("local", "a").unwrap().unwrap().id, "a-1");
        assert!(store.close_term("a-1", "closed", 10).unwrap());
        assert!(
            !store.close_term("a-1", "again", 11).unwrap(),
            "a closed row stays as it was"
        );
        assert!(
            store.insert_term(&row("a-2", "a")).unwrap(),
            "the name is free again"
        );
        store.close_term("a-2", "idle", 20).unwrap();
        let beyond = store.closed_terms_beyond(1).unwrap();
        assert_eq!(
            beyond.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a-1"]
        );
        store.delete_term("a-1").unwrap();
        let all = store.list_terms(10).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].reason.as_deref(), Some("idle"));
    }
}
