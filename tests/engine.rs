//! The job engine against real processes: survival across server restarts,
//! lost-job detection, output caps and the spool quota.

mod support;

use std::time::Duration;

use mcpsh::store::{JobRow, JobStatus};
use support::{State, all_output, cmd, finished};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_server_restart_with_all_output_and_exit_code() {
    let state = State::new();
    let app = state.app().await;
    let id = app
        .jobs
        .start(cmd(
            "for i in $(seq 1 40); do echo line $i; sleep 0.05; done; exit 7",
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shutdown().await; // the server goes away mid-job (the zygote dies with it)

    let app = state.app().await; // a new server re-adopts the job
    let row = finished(&app, &id, 20).await;
    assert_eq!((row.status, row.exit_code), (JobStatus::Exited, Some(7)));
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        String::from_utf8(all_output(&app, &id).await).unwrap(),
        expected
    );
    assert_eq!(row.total_lines, 40);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_row_without_supervisor_is_marked_lost_with_a_reason() {
    let state = State::new();
    let store = mcpsh::app::open_store(&state.config()).unwrap();
    let row = JobRow {
        sup_pid: Some(i32::MAX - 1),
        sup_start: Some(12345),
        ..JobRow::running("ghost-aaaa".into(), "local".into(), "sleep 1000".into(), 1)
    };
    store.insert_job(&row).unwrap();
    drop(store);
    let app = state.app().await;
    let row = app.jobs.row("ghost-aaaa").await.unwrap();
    assert_eq!(row.status, JobStatus::Lost);
    assert!(
        row.reason.unwrap().contains("supervisor"),
        "the reason says what happened"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_cap_keeps_head_and_tail_and_reports_the_exact_drop() {
    let state = State::new();
    let mut config = state.config();
    config.jobs.segment_size = 64 * 1024;
    config.jobs.output_cap = 4 * 64 * 1024;
    let app = state.app_with(config).await;
    let id = app.jobs.start(cmd("seq 1 300000")).await.unwrap();
    let row = finished(&app, &id, 20).await;
    let real = std::process::Command::new("seq")
        .args(["1", "300000"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        row.total_bytes,
        real.len() as u64,
        "totals count every byte, dropped or not"
    );
    assert_eq!(row.total_lines, 300_000);
    let reader = app.jobs.spool(&id).await.unwrap();
    let d = reader.dropped().expect("middle dropped");
    assert_eq!(
        reader.read(0, d.from as usize).unwrap(),
        &real[..d.from as usize]
    );
    let tail = reader.read(d.to, usize::MAX).unwrap();
    assert_eq!(tail, &real[d.to as usize..]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_quota_removes_oldest_finished_jobs_first() {
    let state = State::new();
    let mut config = state.config();
    config.jobs.spool_quota = 300 * 1024;
    let app = state.app_with(config).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = app
            .jobs
            .start(cmd("head -c 150000 /dev/zero"))
            .await
            .unwrap();
        finished(&app, &id, 20).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cleaner runs at most once a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let deleted: Vec<bool> = spool_deleted_flags(&app, &ids).await;
        if deleted == [true, true, false, false] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quota not enforced: {deleted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = app.jobs.spool(&ids[0]).await.unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    app.shutdown().await;
}

async fn spool_deleted_flags(app: &mcpsh::app::App, ids: &[String]) -> Vec<bool> {
    let mut out = Vec::new();
    for id in ids {
        out.push(app.jobs.row(id).await.unwrap().spool_deleted);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_anything_runs() {
    let state = State::new();
    let mut config = state.config();
    config.jobs.max_concurrent = 1;
    let app = state.app_with(config).await;
    let mut req = cmd("true");
    req.cwd = Some("/nonexistent/dir".into());
    let err = app.jobs.start(req).await.unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/dir") && err.contains("does not exist"),
        "{err}"
    );
    let mut req = cmd("true");
    req.env = vec![("A=B".into(), "x".into())];
    assert!(app.jobs.start(req).await.is_err());
    let long = app.jobs.start(cmd("sleep 5")).await.unwrap();
    let err = app.jobs.start(cmd("true")).await.unwrap_err().to_string();
    assert!(err.contains("too many jobs"), "{err}");
    app.jobs.kill(&long).await.unwrap();
    assert_eq!(finished(&app, &long, 10).await.status, JobStatus::Killed);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_commands_run_without_a_shell_but_see_the_same_world() {
    let state = State::new();
    let app = state.app().await;
    for (cmd, cwd, expected_out, expected_code) in [
        // Direct exec: PWD is the job's cwd, as bash would have set it.
        ("printenv PWD", "/tmp", "/tmp\n", 0),
        // Direct exec keeps the program's own exit code and stderr (merged).
        (
            "ls /nonexistent-mcpsh-dir",
            "/",
            "ls: cannot access '/nonexistent-mcpsh-dir': No such file or directory\n",
            2,
        ),
        // A missing program goes through bash, which says so with 127.
        (
            "no-such-program-mcpsh",
            "/",
            "bash: line 1: no-such-program-mcpsh: command not found\n",
            127,
        ),
        // Shell syntax always goes through bash.
        ("echo $((6*7))", "/", "42\n", 0),
    ] {
        let mut req = support::cmd(cmd);
        req.cwd = Some(cwd.into());
        let id = app.jobs.start(req).await.unwrap();
        let row = finished(&app, &id, 10).await;
        assert_eq!(
            String::from_utf8(all_output(&app, &id).await).unwrap(),
            expected_out,
            "{cmd}"
        );
        assert_eq!(row.exit_code, Some(expected_code), "{cmd}");
    }
    app.shutdown().await;
}

/// Pids whose command line contains `needle`.
fn pids_running(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_job_never_touches_what_an_earlier_job_left_running() {
    let state = State::new();
    let app = state.app().await;
    let marker = format!("300.{}", std::process::id());
    let first = app
        .jobs
        .start(cmd(&format!("(sleep {marker} &); echo left")))
        .await
        .unwrap();
    finished(&app, &first, 10).await;
    assert_eq!(pids_running(&format!("sleep {marker}")).len(), 1);
    // Several later jobs, one killed: supervisors are reused only when their
    // job left nothing behind, so the earlier leftover is in no later tree.
    for _ in 0..3 {
        let id = app.jobs.start(cmd("true")).await.unwrap();
        finished(&app, &id, 10).await;
    }
    let victim = app.jobs.start(cmd("sleep 30")).await.unwrap();
    let (report, row) = app.jobs.kill(&victim).await.unwrap();
    assert_eq!(row.status, JobStatus::Killed);
    assert_eq!(report.map(|r| r.remaining), Some(0));
    let survivors = pids_running(&format!("sleep {marker}"));
    assert_eq!(
        survivors.len(),
        1,
        "the first job's background process survives"
    );
    for pid in survivors {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jobs_leave_only_what_they_need_on_disk_and_reuse_one_supervisor() {
    let state = State::new();
    let config = state.config();
    let jobs_dir = config.jobs_dir();
    let app = state.app_with(config).await;
    let files = |id: &str| -> Option<Vec<String>> {
        let rd = std::fs::read_dir(jobs_dir.join(id)).ok()?;
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Some(v)
    };
    let mut sups = Vec::new();
    for _ in 0..4 {
        let id = app.jobs.start(cmd("true")).await.unwrap();
        let row = finished(&app, &id, 10).await;
        assert_eq!((row.status, row.exit_code), (JobStatus::Exited, Some(0)));
        // The server recorded the exit, so no status.json, no socket, no directory.
        assert_eq!(files(&id), None, "job {id}");
        sups.push(row.sup_pid.unwrap());
        // Let the supervisor come back to the pool before the next start.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sups.sort();
    sups.dedup();
    assert!(
        sups.len() <= 2,
        "four jobs in a row ran on the two pooled supervisors, not {sups:?}"
    );

    let id = app.jobs.start(cmd("echo hi")).await.unwrap();
    finished(&app, &id, 10).await;
    assert_eq!(files(&id), Some(vec!["out.000000".to_owned()]));
    assert_eq!(all_output(&app, &id).await, b"hi\n");

    // A job that runs for a while gets a control socket, gone when it ends.
    let id = app.jobs.start(cmd("sleep 0.5")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(files(&id), Some(vec!["ctl.sock".to_owned()]));
    finished(&app, &id, 10).await;
    assert_eq!(files(&id), Some(vec![]));
    app.shutdown().await;
}
