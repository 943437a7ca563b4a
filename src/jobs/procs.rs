//! Process facts from `/proc` and killing a whole process tree.
//!
//! Identity is `(pid, start time)`, never a bare pid, so a recycled pid is not
//! mistaken for a job. Tree walks follow parent links from a root, which finds
//! descendants that made their own process group or session (the supervisor
//! is a child subreaper, so orphans stay under it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::proto::KillReport;

/// One `/proc/<pid>/stat` line, the parts we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub pgrp: i32,
    pub state: u8,
    /// Clock ticks since boot when the process started.
    pub start: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may contain anything, so parse
    // from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // After state, ppid and pgrp, start time is field 22 of the full line, i.e. the 19th here.
    let start = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        ppid,
        pgrp,
        state,
        start,
    })
}

/// Is the process `pid` alive and the same process that started at `start`?
pub fn same_process_alive(pid: i32, start: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start == start && s.state != b'Z' && s.state != b'X')
}

/// Live (non-zombie) descendants of `root`, found by following parent links.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut live = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(s) = stat(pid) {
            children.entry(s.ppid).or_default().push(pid);
            live.insert(pid, s.state != b'Z' && s.state != b'X');
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if live.get(&c).copied().unwrap_or(false) {
                out.push(c);
            }
            stack.push(c);
        }
    }
    out
}

fn signal_all(pids: &[i32], sig: Signal) -> usize {
    pids.iter()
        .filter_map(|&p| Pid::from_raw(p))
        .filter(|&p| rustix::process::kill_process(p, sig).is_ok())
        .count()
}

/// Kill every descendant of `root`: SIGTERM (and SIGCONT so stopped ones see
/// it), wait up to `grace` for them to go, then SIGKILL in sweeps until none is
/// left or 5 s pass. Zombies count as gone. Blocking; the supervisor runs it on
/// a blocking thread while its main loop keeps reaping.
pub fn kill_tree(root: i32, grace: Duration) -> KillReport {
    let mut report = KillReport::default();
    let first = descendants(root);
    report.terminated = signal_all(&first, Signal::TERM);
    signal_all(&first, Signal::CONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if descendants(root).is_empty() {
            return report;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let hard_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = descendants(root);
        if left.is_empty() {
            return report;
        }
        if Instant::now() >= hard_deadline {
            report.remaining = left.len();
            return report;
        }
        // Stop first so nothing can fork between the listing and the kill.
        signal_all(&left, Signal::STOP);
        report.killed += signal_all(&left, Signal::KILL);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_parens_and_spaces() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 1,
                pgrp: 1234,
                state: b'S',
                start: 98765
            })
        );
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(same_process_alive(me, s.start));
        assert!(
            !same_process_alive(me, s.start + 1),
            "a different start time is a different process"
        );
    }
}
