//! Embedded, append-only schema migrations, tracked by `PRAGMA user_version`.
//! Never edit an entry that has shipped; add a new one.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: jobs
    "CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        title         TEXT,
        cmd           TEXT NOT NULL,
        cwd           TEXT,
        status        TEXT NOT NULL,
        exit_code     INTEGER,
        signal        INTEGER,
        reason        TEXT,
        created_ms    INTEGER NOT NULL,
        ended_ms      INTEGER,
        sup_pid       INTEGER,
        sup_start     INTEGER,
        total_bytes   INTEGER NOT NULL DEFAULT 0,
        total_lines   INTEGER NOT NULL DEFAULT 0,
        poll_cursor   INTEGER NOT NULL DEFAULT 0,
        tty           INTEGER NOT NULL DEFAULT 0,
        interactive   INTEGER NOT NULL DEFAULT 0,
        spool_deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_created ON jobs (created_ms DESC, id DESC);
    CREATE INDEX jobs_status ON jobs (status);",
    // 2: bytes each finished job's spool holds on disk, so the quota needs no directory walk
    "ALTER TABLE jobs ADD COLUMN spool_bytes INTEGER NOT NULL DEFAULT 0;",
];

pub(super) fn apply(conn: &Connection) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock first, so two processes starting together
    // cannot both apply the same migration.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = apply_locked(conn);
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn apply_locked(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(sql)?;
        conn.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}
