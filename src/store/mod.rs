//! SQLite state: the only module that writes SQL.
//!
//! Holds the `jobs` table (one row per `bash` call), users, OAuth clients,
//! grants and tokens (`auth.rs`) and the audit log (`audit.rs`) behind a small
//! typed API.
//! The database file is created 0600 before SQLite opens it, so `-wal`/`-shm`
//! inherit the mode. Migrations are embedded and append-only. This module knows
//! nothing about processes, MCP or HTTP.

mod audit;
mod auth;
mod migrations;
mod terms;

pub use terms::TermRow;

pub use audit::{AuditEnd, AuditFilter, AuditRow};
pub use auth::{
    ACCESS, ClientRow, CodeRow, GrantRow, PAT, REFRESH, Take, TokenFound, TokenRow, UserRow,
};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Params, Row, params};

/// Errors from the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state database schema version {found} is newer than this mcpsh understands ({known}); upgrade mcpsh"
    )]
    TooNew { found: i64, known: i64 },
}

/// A job's lifecycle state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Exited,
    Killed,
    TimedOut,
    Failed,
    Lost,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Exited => "exited",
            JobStatus::Killed => "killed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Failed => "failed",
            JobStatus::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "running" => JobStatus::Running,
            "exited" => JobStatus::Exited,
            "killed" => JobStatus::Killed,
            "timed_out" => JobStatus::TimedOut,
            "failed" => JobStatus::Failed,
            "lost" => JobStatus::Lost,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != JobStatus::Running
    }
}

/// One job row.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub host: String,
    pub title: Option<String>,
    pub cmd: String,
    pub cwd: Option<String>,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
    pub sup_pid: Option<i32>,
    pub sup_start: Option<u64>,
    pub total_bytes: u64,
    pub total_lines: u64,
    pub poll_cursor: u64,
    pub tty: bool,
    pub interactive: bool,
    pub spool_deleted: bool,
}

impl JobRow {
    /// A new `running` row with everything not given at its default.
    pub fn running(id: String, host: String, cmd: String, created_ms: i64) -> JobRow {
        JobRow {
            id,
            host,
            title: None,
            cmd,
            cwd: None,
            status: JobStatus::Running,
            exit_code: None,
            signal: None,
            reason: None,
            created_ms,
            ended_ms: None,
            sup_pid: None,
            sup_start: None,
            total_bytes: 0,
            total_lines: 0,
            poll_cursor: 0,
            tty: false,
            interactive: false,
            spool_deleted: false,
        }
    }

    /// The row as [`Store::finish_job`] leaves it after `end`.
    pub fn apply_end(&mut self, end: &JobEnd) {
        self.status = end.status;
        self.exit_code = end.exit_code;
        self.signal = end.signal;
        self.reason.clone_from(&end.reason);
        self.ended_ms = Some(end.ended_ms);
        self.total_bytes = end.total_bytes;
        self.total_lines = end.total_lines;
    }
}

/// The final facts of a finished job.
#[derive(Debug, Clone)]
pub struct JobEnd {
    /// Bytes the spool files hold on disk (after the cap), for the quota.
    pub spool_bytes: u64,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub ended_ms: i64,
    pub total_bytes: u64,
    pub total_lines: u64,
}

/// Milliseconds since the Unix epoch: the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Filter for [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub host: Option<String>,
    /// Only rows created before this id's row (keyset pagination), newest first.
    pub before: Option<(i64, String)>,
    pub limit: usize,
}

/// Handle to the state database. Cheap to clone; calls are short and synchronous
/// (callers on async paths wrap them in `spawn_blocking`).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Every statement goes through the connection's cache: parsing the SQL
/// cost nearly as much as running it (measured: 13% of the server's CPU in
/// a `bash` call went to the parser).
trait Cached {
    fn exec_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn one_cached<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec_cached<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn one_cached<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// How often the server's checkpoint thread runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Distinct statements the store runs, with room to spare.
const STATEMENT_CACHE: usize = 96;

const JOB_COLUMNS: &str = "id, host, title, cmd, cwd, status, exit_code, signal, reason, created_ms, \
     ended_ms, sup_pid, sup_start, total_bytes, total_lines, poll_cursor, tty, interactive, spool_deleted";

impl Store {
    /// Open (creating 0600 if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        create_private_file(path)?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Keep each cached statement's plan: the bundled SQLite is built with
        // STAT4, which otherwise re-prepares a statement with a join on every
        // new binding (measured: 19 µs instead of 3 µs for a bearer lookup).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        migrations::apply(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// Take WAL checkpoints off the connection that commits: a thread
    /// checkpoints on a connection of its own every second, for as long as
    /// this store lives. A checkpoint fsyncs the WAL and the database
    /// (measured: 5–30 ms each, one every 100-odd `bash` calls), and on the
    /// committing connection it stalled the server's runtime thread, and so
    /// every client, that long. Processes without it (the CLI) keep
    /// SQLite's own checkpoints.
    pub fn checkpoint_in_background(&self) -> Result<(), StoreError> {
        let checkpointer = Connection::open(&self.path).map_err(|source| StoreError::Open {
            path: self.path.clone(),
            source,
        })?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Arc::downgrade(&self.conn);
        std::thread::Builder::new()
            .name("mcpsh-checkpoint".into())
            .spawn(move || {
                while store.strong_count() > 0 {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    // PASSIVE copies what no reader still needs and never
                    // makes a writer wait.
                    if let Err(e) =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "cannot checkpoint the state database");
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.with(|c| c.pragma_update(None, "wal_autocheckpoint", 0))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        // A poisoned lock only means another thread panicked mid-call; SQLite's
        // own transactions keep the data consistent, so keep going.
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&conn)?)
    }

    /// True when no statement of this process is running on the database
    /// right now (another process may still hold SQLite's write lock).
    pub fn is_free(&self) -> bool {
        self.conn.try_lock().is_ok()
    }

    /// Insert a new running job (with its owner, when already known).
    /// Returns false when the id is already taken.
    pub fn insert_job(&self, row: &JobRow) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.exec_cached(
                "INSERT OR IGNORE INTO jobs (id, host, title, cmd, cwd, status, created_ms, tty, interactive, \
                 sup_pid, sup_start) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    row.id,
                    row.host,
                    row.title,
                    row.cmd,
                    row.cwd,
                    row.status.as_str(),
                    row.created_ms,
                    row.tty,
                    row.interactive,
                    row.sup_pid,
                    row.sup_start.map(|s| s as i64)
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Record the supervisor process identity of a started job.
    pub fn set_supervisor(&self, id: &str, pid: i32, start: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET sup_pid = ?2, sup_start = ?3 WHERE id = ?1",
                params![id, pid, start as i64],
            )
            .map(drop)
        })
    }

    /// Mark a job finished. Only a running row changes, so the first writer wins
    /// and a later reconcile cannot overwrite a real exit.
    pub fn finish_job(&self, id: &str, end: &JobEnd) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.exec_cached(
                "UPDATE jobs SET status = ?2, exit_code = ?3, signal = ?4, reason = ?5, ended_ms = ?6, \
                 total_bytes = ?7, total_lines = ?8, spool_bytes = ?9 WHERE id = ?1 AND status = 'running'",
                params![
                    id,
                    end.status.as_str(),
                    end.exit_code,
                    end.signal,
                    end.reason,
                    end.ended_ms,
                    end.total_bytes as i64,
                    end.total_lines as i64,
                    end.spool_bytes as i64
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Remember how far the agent has read, for "new output since the last poll".
    pub fn set_poll_cursor(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET poll_cursor = ?2 WHERE id = ?1",
                params![id, cursor as i64],
            )
            .map(drop)
        })
    }

    pub fn mark_spool_deleted(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET spool_deleted = 1 WHERE id = ?1",
                params![id],
            )
            .map(drop)
        })
    }

    pub fn get_job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.with(|c| {
            c.one_cached(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                job_from_row,
            )
            .optional()
        })
    }

    /// Jobs newest first, filtered and paginated by keyset.
    pub fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = filter.status {
            args.push(s.as_str().to_owned().into());
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(h) = &filter.host {
            args.push(h.clone().into());
            sql.push_str(&format!(" AND host = ?{}", args.len()));
        }
        if let Some((ms, id)) = &filter.before {
            args.push((*ms).into());
            let a = args.len();
            args.push(id.clone().into());
            let b = args.len();
            sql.push_str(&format!(
                " AND (created_ms < ?{a} OR (created_ms = ?{a} AND id < ?{b}))"
            ));
        }
        args.push((filter.limit.max(1) as i64).into());
        sql.push_str(&format!(
            " ORDER BY created_ms DESC, id DESC LIMIT ?{}",
            args.len()
        ));
        self.with(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), job_from_row)?;
            rows.collect()
        })
    }

    pub fn count_running(&self) -> Result<usize, StoreError> {
        self.with(|c| {
            c.one_cached(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    /// Finished jobs whose spool still exists, oldest first (quota cleanup
    /// order), with the bytes each holds; and their total.
    pub fn finished_spools(&self) -> Result<(Vec<(String, u64)>, u64), StoreError> {
        self.with(|c| {
            let total: i64 = c.one_cached(
                "SELECT COALESCE(SUM(spool_bytes), 0) FROM jobs WHERE status != 'running' AND spool_deleted = 0",
                [],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT id, spool_bytes FROM jobs WHERE status != 'running' AND spool_deleted = 0 \
                 ORDER BY COALESCE(ended_ms, created_ms) ASC",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok((rows.collect::<rusqlite::Result<_>>()?, total as u64))
        })
    }
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let status: String = r.get(5)?;
    Ok(JobRow {
        id: r.get(0)?,
        host: r.get(1)?,
        title: r.get(2)?,
        cmd: r.get(3)?,
        cwd: r.get(4)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Lost),
        exit_code: r.get(6)?,
        signal: r.get(7)?,
        reason: r.get(8)?,
        created_ms: r.get(9)?,
        ended_ms: r.get(10)?,
        sup_pid: r.get(11)?,
        sup_start: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        total_bytes: r.get::<_, i64>(13)? as u64,
        total_lines: r.get::<_, i64>(14)? as u64,
        poll_cursor: r.get::<_, i64>(15)? as u64,
        tty: r.get(16)?,
        interactive: r.get(17)?,
        spool_deleted: r.get(18)?,
    })
}

/// Create `path` with mode 0600 if it does not exist, and tighten it if it does.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, ms: i64) -> JobRow {
        JobRow::running(id.into(), "local".into(), "true".into(), ms)
    }

    #[test]
    fn database_is_private_and_finish_is_first_writer_wins() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        assert!(store.insert_job(&row("a-1", 1)).unwrap());
        assert!(
            !store.insert_job(&row("a-1", 2)).unwrap(),
            "duplicate id refused"
        );
        let end = JobEnd {
            spool_bytes: 0,
            status: JobStatus::Exited,
            exit_code: Some(3),
            signal: None,
            reason: None,
            ended_ms: 5,
            total_bytes: 10,
            total_lines: 2,
        };
        assert!(store.finish_job("a-1", &end).unwrap());
        let lost = JobEnd {
            status: JobStatus::Lost,
            ..end
        };
        assert!(!store.finish_job("a-1", &lost).unwrap());
        let got = store.get_job("a-1").unwrap().unwrap();
        assert_eq!((got.status, got.exit_code), (JobStatus::Exited, Some(3)));
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    /// What a server shows between publishing an end and writing it must be
    /// what the store then holds.
    #[test]
    fn apply_end_leaves_a_row_as_finish_job_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut shown = JobRow {
            title: Some("t".into()),
            cwd: Some("/tmp".into()),
            ..row("b-1", 7)
        };
        store.insert_job(&shown).unwrap();
        let end = JobEnd {
            spool_bytes: 11,
            status: JobStatus::Killed,
            exit_code: None,
            signal: Some(9),
            reason: Some("killed by job kill".into()),
            ended_ms: 12,
            total_bytes: 100,
            total_lines: 4,
        };
        shown.apply_end(&end);
        store.finish_job("b-1", &end).unwrap();
        let stored = store.get_job("b-1").unwrap().unwrap();
        assert_eq!(format!("{shown:?}"), format!("{stored:?}"));
    }

    /// With checkpoints in the background, commits leave the WAL to the
    /// checkpoint thread, which copies all of it back within a few seconds
    /// and stops once the store is gone.
    #[test]
    fn the_checkpoint_thread_empties_the_wal_and_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        store.checkpoint_in_background().unwrap();
        // Well past SQLite's own 1000-page checkpoint.
        for i in 0..3000 {
            store.insert_job(&row(&format!("j-{i}"), i)).unwrap();
        }
        let probe = Connection::open(&path).unwrap();
        // (busy, frames in the WAL, frames copied back): a checkpoint that
        // copies nothing itself finds how far the thread got.
        let left = || -> i64 {
            probe
                .query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
                    Ok(r.get::<_, i64>(1)? - r.get::<_, i64>(2)?)
                })
                .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while left() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "WAL frames still not checkpointed after 10 s: {}",
                left()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("mcpsh-checkpoin"))
                })
                .count()
        };
        assert_eq!(threads(), 1);
        drop(store);
        std::thread::sleep(CHECKPOINT_EVERY * 2);
        assert_eq!(threads(), 0, "the checkpoint thread outlived its store");
    }

    #[test]
    fn list_is_newest_first_with_keyset_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        for i in 0..5 {
            store.insert_job(&row(&format!("j-{i}"), i)).unwrap();
        }
        let page = store
            .list_jobs(&JobFilter {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["j-4", "j-3"]
        );
        let last = page.last().unwrap();
        let next = store
            .list_jobs(&JobFilter {
                limit: 10,
                before: Some((last.created_ms, last.id.clone())),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["j-2", "j-1", "j-0"]
        );
    }
}
