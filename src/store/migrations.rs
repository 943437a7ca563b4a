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
    // 3: users, OAuth clients, codes, grants (token families), tokens and the audit log.
    // Secrets (tokens, codes, client secrets) are stored only as SHA-256 hex.
    "CREATE TABLE users (
        name       TEXT PRIMARY KEY,
        phc        TEXT NOT NULL,
        scopes     TEXT NOT NULL,
        hosts      TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE oauth_clients (
        client_id     TEXT PRIMARY KEY,
        secret_hash   TEXT,
        name          TEXT,
        redirect_uris TEXT NOT NULL,
        auth_method   TEXT NOT NULL,
        scope         TEXT,
        from_url      INTEGER NOT NULL DEFAULT 0,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE grants (
        id            TEXT PRIMARY KEY,
        user_name     TEXT NOT NULL,
        client_id     TEXT NOT NULL,
        scopes        TEXT NOT NULL,
        hosts         TEXT NOT NULL,
        resource      TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        refreshed_ms  INTEGER,
        expires_ms    INTEGER NOT NULL,
        revoked_ms    INTEGER,
        revoke_reason TEXT
    );
    CREATE TABLE auth_codes (
        hash         TEXT PRIMARY KEY,
        grant_id     TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        challenge    TEXT NOT NULL,
        expires_ms   INTEGER NOT NULL,
        used_ms      INTEGER
    );
    CREATE TABLE tokens (
        hash         TEXT PRIMARY KEY,
        id           TEXT NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        name         TEXT,
        user_name    TEXT NOT NULL,
        client_id    TEXT,
        grant_id     TEXT,
        scopes       TEXT NOT NULL,
        hosts        TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        expires_ms   INTEGER,
        used_ms      INTEGER,
        revoked_ms   INTEGER,
        last_seen_ms INTEGER
    );
    CREATE INDEX tokens_grant ON tokens (grant_id);
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY,
        ts_ms       INTEGER NOT NULL,
        event       TEXT NOT NULL,
        user_name   TEXT,
        token_id    TEXT,
        client_id   TEXT,
        source      TEXT,
        tool        TEXT,
        action      TEXT,
        host        TEXT,
        target      TEXT,
        outcome     TEXT NOT NULL,
        exit_code   INTEGER,
        bytes       INTEGER,
        duration_ms INTEGER,
        detail      TEXT
    );
    CREATE INDEX audit_ts ON audit (ts_ms);",
    // 4: terminal sessions; at most one open session per (host, name)
    "CREATE TABLE terms (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        host        TEXT NOT NULL,
        dir         TEXT NOT NULL,
        shell       TEXT NOT NULL,
        sup_pid     INTEGER,
        sup_start   INTEGER,
        created_ms  INTEGER NOT NULL,
        closed_ms   INTEGER,
        reason      TEXT
    );
    CREATE UNIQUE INDEX terms_open ON terms (host, name) WHERE closed_ms IS NULL;
    CREATE INDEX terms_created ON terms (created_ms DESC);",
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
