//! Helpers for integration tests: a real mcpsh core (job engine, SQLite,
//! zygote and supervisors from the built binary) in a temp state directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use mcpsh::app::App;
use mcpsh::config::Config;
use mcpsh::jobs::StartRequest;
use mcpsh::jobs::proto::StdinMode;
use mcpsh::store::{JobRow, JobStatus};

/// A temp state directory that outlives individual `App`s (to test restarts).
pub struct State {
    pub dir: tempfile::TempDir,
}

impl State {
    pub fn new() -> State {
        State {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn config(&self) -> Config {
        Config {
            state_dir: self.dir.path().join("state"),
            ..Config::default()
        }
    }

    pub async fn app(&self) -> App {
        self.app_with(self.config()).await
    }

    pub async fn app_with(&self, config: Config) -> App {
        App::start(config, PathBuf::from(env!("CARGO_BIN_EXE_mcpsh")))
            .await
            .expect("start app")
    }
}

pub fn cmd(cmd: &str) -> StartRequest {
    StartRequest {
        host: "local".into(),
        cmd: cmd.to_owned(),
        cwd: None,
        env: Vec::new(),
        stdin: StdinMode::Null,
        tty: None,
        title: None,
        timeout: None,
    }
}

/// Wait until job `id` has a final row (or panic after `secs`).
pub async fn finished(app: &App, id: &str, secs: u64) -> JobRow {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let row = app.jobs.row(id).await.expect("row");
        if row.status != JobStatus::Running {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} still running after {secs}s"
        );
        let cancel = tokio_util::sync::CancellationToken::new();
        app.jobs
            .wait(
                id,
                tokio::time::Instant::now() + Duration::from_millis(500),
                None,
                &cancel,
                |_| {},
            )
            .await;
    }
}

/// All output of a job, read page by page through the cursor API.
pub async fn all_output(app: &App, id: &str) -> Vec<u8> {
    let reader = app.jobs.spool(id).await.expect("spool");
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let page = mcpsh::jobs::output::page(&reader, cursor, 1 << 20).expect("page");
        if page.next == cursor {
            break;
        }
        out.extend_from_slice(page.text.as_bytes());
        cursor = page.next;
    }
    out
}
