//! The `session` section: a local terminal session (a bash on a PTY, hosted
//! by a supervisor the server forks through its zygote) driven with the
//! `session` tool over HTTP: warm `exec true` round trips, and the RSS of the
//! server and of the session's host while the session takes 10 MiB of output.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    HttpClient, LINE, MIB, Opts, Report, Result, Rpc, Samples, TempDir, err, mem, mib, ms, ppid,
    sample_memory, start_http,
};

/// The session's name.
const NAME: &str = "bench";
/// Output of the scrollback measurement.
const SCROLLBACK: u64 = 10 * MIB;
/// `exec true` calls measured again once the session holds the scrollback.
const AFTER_CALLS: usize = 50;

/// `session` with `action` and `extra` arguments on the bench session.
fn session(c: &mut HttpClient, action: &str, extra: Value) -> Result<Value> {
    let mut args = json!({"action": action, "name": NAME});
    if let (Some(a), Value::Object(m)) = (args.as_object_mut(), extra) {
        a.extend(m);
    }
    c.call("session", args)
}

/// `exec cmd`; fails unless the command exited 0. Returns the structured result.
fn exec(c: &mut HttpClient, cmd: &str) -> Result<Value> {
    let r = session(c, "exec", json!({"cmd": cmd, "wait": 10}))?;
    let s = &r["structuredContent"];
    if s["state"] != "exited" || s["exit_code"] != 0 {
        return err(format!("session exec {cmd:?} did not exit 0: {r}"));
    }
    Ok(s.clone())
}

/// Reset the VmHWM of `pid` to its current RSS (`/proc/PID/clear_refs`).
fn reset_hwm(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `a → b MiB (+growth)`.
fn growth(before: u64, after: u64) -> String {
    format!(
        "{:.1} → {:.1} MiB ({:+.1})",
        mib(before),
        mib(after),
        mib(after) - mib(before)
    )
}

pub(super) fn bench_session(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let state = tmp.sub("session")?;
    let (server, addr) = start_http(&o.server, &state, super::NO_AUTH, &[])?;
    let pid = server.pid();
    let mut c = HttpClient::new(addr);
    c.initialize()?;

    let t = Instant::now();
    let r = session(&mut c, "open", json!({}))?;
    let open = t.elapsed();
    let shell = r["structuredContent"]["shell_pid"]
        .as_u64()
        .ok_or_else(|| format!("session open returned no shell_pid: {r}"))? as u32;
    let host = ppid(shell).ok_or("cannot read the session shell's parent from /proc")?;
    if host == pid {
        rep.notes.push(
            "session: the shell's parent is the server itself, so \"host RSS\" is the server's"
                .into(),
        );
    }
    rep.info(
        "session: open a local session (fresh server)",
        format!("{:.1} ms", ms(open)),
    );

    // Warm round trips: `exec true` against a no-op call, alternating order.
    let noop = json!({"action": "list", "limit": 1});
    for _ in 0..20 {
        exec(&mut c, "true")?;
        c.call("job", noop.clone())?;
    }
    let n = if o.quick {
        o.calls
    } else {
        o.calls.clamp(300, 3000)
    };
    let mut execs = Vec::with_capacity(n);
    let mut idle = Vec::with_capacity(n);
    let mut reported = Vec::with_capacity(n);
    for i in 0..n {
        for first in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if first {
                let s = exec(&mut c, "true")?;
                execs.push(t.elapsed());
                reported.push(Duration::from_millis(
                    s["duration_ms"].as_u64().unwrap_or(0),
                ));
            } else {
                c.call("job", noop.clone())?;
                idle.push(t.elapsed());
            }
        }
    }
    let (execs, idle) = (Samples::new(execs), Samples::new(idle));
    rep.check(
        format!("session: exec true round trip over HTTP, warm (p50/p99 of {n})"),
        format!("{:.2} / {:.2} ms", ms(execs.pct(50.0)), ms(execs.pct(99.0))),
        "p50 ≤ 5 ms",
        ms(execs.pct(50.0)) <= 5.0,
    );
    rep.info(
        "session: no-op call in the same client (p50)",
        format!("{:.2} ms", ms(idle.pct(50.0))),
    );
    rep.info(
        "session: exec true, session-reported duration (p50)",
        format!("{:.0} ms", ms(Samples::new(reported).pct(50.0))),
    );

    // Scrollback: the session takes 10 MiB of output in one command.
    let (server0, host0) = (
        mem(pid).ok_or("cannot read the server's /proc status")?.0,
        mem(host)
            .ok_or("cannot read the session host's /proc status")?
            .0,
    );
    let reset = reset_hwm(pid) && reset_hwm(host);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(pid, Some(host), stop.clone());
    let cmd = format!(
        "yes {} | head -c {SCROLLBACK}",
        std::str::from_utf8(&LINE[..LINE.len() - 1])?
    );
    let t = Instant::now();
    let run = (|| -> Result<Value> {
        let r = session(
            &mut c,
            "exec",
            json!({"cmd": cmd, "wait": 50, "max_output": 256}),
        )?;
        let mut s = r["structuredContent"].clone();
        // Still running after the wait: follow it until the shell is idle.
        while s["state"] == "running" {
            if t.elapsed() > Duration::from_secs(120) {
                return err("the 10 MiB command did not finish in 2 minutes");
            }
            let r = session(&mut c, "read", json!({"wait": 30, "max_output": 256}))?;
            let info = &r["structuredContent"]["info"];
            if info["running"].is_null() {
                s = json!({
                    "state": "exited",
                    "exit_code": info["last"]["exit_code"],
                    "output": null,
                });
            }
        }
        Ok(s)
    })();
    let elapsed = t.elapsed();
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().map_err(|_| "sampler panicked")?;
    let (server1, server_hwm) = mem(pid).unwrap_or((0, 0));
    let (host1, host_hwm) = mem(host).unwrap_or((0, 0));
    let s = run?;
    if s["state"] != "exited" || s["exit_code"] != 0 {
        return err(format!("the 10 MiB command ended as {s}"));
    }
    let out = &s["output"];
    let text = |k: &str| out[k].as_str().map_or(0, str::len) as u64;
    let seen = text("head") + text("tail") + out["omitted_bytes"].as_u64().unwrap_or(0);
    let (server_peak, host_peak) = if reset {
        (
            peaks.server_rss.max(server_hwm),
            peaks.also_rss.max(host_hwm),
        )
    } else {
        rep.notes.push(
            "session: cannot reset VmHWM (/proc/PID/clear_refs): peaks are sampled every 20 ms"
                .into(),
        );
        (peaks.server_rss, peaks.also_rss)
    };
    rep.info(
        "session: exec printing 10 MiB (yes piped to head -c), wall time",
        format!(
            "{:.2} s ({:.1} MiB of output seen)",
            elapsed.as_secs_f64(),
            mib(seen)
        ),
    );
    let grew = mib(server_peak) - mib(server0);
    rep.check(
        "session: server RSS before → peak with 10 MiB scrollback",
        growth(server0, server_peak),
        "growth ≤ 16 MiB",
        grew <= 16.0,
    );
    rep.info(
        "session: server RSS before → after the 10 MiB command",
        growth(server0, server1),
    );
    rep.info(
        "session: host RSS (the shell's parent) before → peak",
        growth(host0, host_peak),
    );
    rep.info(
        "session: host RSS before → after the 10 MiB command",
        growth(host0, host1),
    );

    // Round trips once the session holds the scrollback.
    let mut later = Vec::with_capacity(AFTER_CALLS);
    for _ in 0..AFTER_CALLS {
        let t = Instant::now();
        exec(&mut c, "true")?;
        later.push(t.elapsed());
    }
    rep.info(
        format!("session: exec true p50 with 10 MiB scrollback (of {AFTER_CALLS})"),
        format!("{:.2} ms", ms(Samples::new(later).pct(50.0))),
    );

    let t = Instant::now();
    let r = session(&mut c, "close", json!({}))?;
    if r["structuredContent"]["closed"] != true {
        return err(format!("session close returned {r}"));
    }
    let closed = t.elapsed();
    // The host exits with its shell (a zombie has no VmRSS).
    let deadline = Instant::now() + Duration::from_secs(5);
    while mem(host).is_some() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    rep.info("session: close", format!("{:.1} ms", ms(closed)));
    if mem(host).is_some() {
        rep.notes.push(format!(
            "session: the session host (pid {host}) was still alive 5 s after close"
        ));
    }
    drop(server);
    Ok(())
}
