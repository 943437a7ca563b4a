//! Result shapes shared by `bash` and `job`: the structured result
//! (`structuredContent`, described by the tools' output schemas) and its short
//! text rendering for clients that only show text.

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::schemars::{self, JsonSchema};
use serde::Serialize;

use crate::jobs::now_ms;
use crate::jobs::output::{Excerpt, GrepPage, Omitted, Page};
use crate::jobs::proto::KillReport;
use crate::store::{JobRow, JobStatus};

/// A job's state and a bounded view of its output.
#[derive(Debug, Clone, Serialize, JsonSchema, Default)]
pub(crate) struct JobResult {
    /// Job id, for `job` calls.
    pub job: String,
    pub host: String,
    /// running, exited, killed, timed_out, failed or lost.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number that ended the process, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the job failed, was lost or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    /// Output text shown (merged stdout+stderr). For an excerpt, head and tail
    /// are joined by a marker line describing the omitted part.
    pub output: String,
    /// Total output bytes and lines so far.
    pub total_bytes: u64,
    pub total_lines: u64,
    /// Byte offset where the shown output starts (pages and tails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// 1-based line number of the first line shown (pages and tails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    /// Pass as `cursor` to `job poll` to read on from here.
    pub next_cursor: u64,
    /// Output not shown in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<OmittedOut>,
    /// Output removed for good by the per-job output cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<ByteRange>,
    /// Number of matching lines shown (grep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<usize>,
    /// What a kill verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<KillOut>,
    /// Bytes written to stdin (write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_bytes: Option<usize>,
    /// What to do next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub(crate) struct ByteRange {
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct OmittedOut {
    /// Omitted bytes are [from, to); read them with job poll cursor=from.
    pub from: u64,
    pub to: u64,
    pub bytes: u64,
    pub first_line: u64,
    pub last_line: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct KillOut {
    pub terminated: usize,
    pub killed_after_grace: usize,
    pub remaining: usize,
    /// True when no process of the tree is left.
    pub verified: bool,
}

impl From<KillReport> for KillOut {
    fn from(k: KillReport) -> KillOut {
        KillOut {
            terminated: k.terminated,
            killed_after_grace: k.killed,
            remaining: k.remaining,
            verified: k.remaining == 0,
        }
    }
}

impl JobResult {
    /// Status fields from a row; output fields are filled by the view helpers.
    pub(crate) fn from_row(row: &JobRow, total_bytes: u64, total_lines: u64) -> JobResult {
        let end = row.ended_ms.unwrap_or_else(now_ms);
        JobResult {
            job: row.id.clone(),
            host: row.host.clone(),
            status: row.status.as_str().to_owned(),
            exit_code: row.exit_code,
            signal: row.signal,
            reason: row.reason.clone(),
            duration_ms: (end - row.created_ms).max(0) as u64,
            total_bytes,
            total_lines,
            next_cursor: total_bytes,
            ..JobResult::default()
        }
    }

    pub(crate) fn with_excerpt(mut self, e: Excerpt) -> JobResult {
        let mut out = e.head;
        if let Some(o) = e.omitted {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&omitted_marker(&self.job, &o));
            self.omitted = Some(OmittedOut {
                from: o.from,
                to: o.to,
                bytes: o.to - o.from,
                first_line: o.first_line,
                last_line: o.last_line,
            });
            self.dropped = o.dropped.map(|d| ByteRange {
                from: d.from,
                to: d.to,
            });
        }
        out.push_str(&e.tail);
        self.output = out;
        self
    }

    pub(crate) fn with_page(mut self, p: Page) -> JobResult {
        self.output = p.text;
        self.start = Some(p.start);
        self.first_line = Some(p.first_line);
        self.next_cursor = p.next;
        self.dropped = p.skipped.map(|d| ByteRange {
            from: d.from,
            to: d.to,
        });
        if let Some(d) = p.skipped {
            self.hint = Some(format!(
                "bytes {}–{} were dropped by the output cap; reading resumed at {}",
                d.from, d.to, d.to
            ));
        }
        self
    }

    pub(crate) fn with_grep(mut self, g: GrepPage) -> JobResult {
        self.output = g.text;
        self.start = Some(g.start);
        self.next_cursor = g.next;
        self.matches = Some(g.matches);
        if g.next < self.total_bytes {
            self.hint = Some(format!(
                "search stopped at byte {} of {}; call again with cursor={} to continue",
                g.next, self.total_bytes, g.next
            ));
        }
        self
    }

    pub(crate) fn is_error(&self) -> bool {
        match JobStatus::parse(&self.status) {
            Some(JobStatus::Running) => false,
            Some(JobStatus::Exited) => self.exit_code != Some(0),
            _ => true,
        }
    }

    /// One header line, the output, and what to do next.
    pub(crate) fn text(&self) -> String {
        let mut head = format!("{} · {}", self.job, self.status);
        match (self.exit_code, self.signal) {
            (Some(c), _) => head.push_str(&format!(" {c}")),
            (None, Some(s)) => head.push_str(&format!(" by signal {s}")),
            _ => {}
        }
        head.push_str(&format!(
            " · {} · {}, {} line{}",
            duration(self.duration_ms),
            bytes(self.total_bytes),
            self.total_lines,
            if self.total_lines == 1 { "" } else { "s" }
        ));
        if let Some(r) = &self.reason {
            head.push_str(&format!(" · {r}"));
        }
        if let Some(k) = &self.kill {
            head.push_str(&format!(
                " · kill: {} terminated, {} needed SIGKILL, {} left{}",
                k.terminated,
                k.killed_after_grace,
                k.remaining,
                if k.verified { " (verified)" } else { "" }
            ));
        }
        if let Some(n) = self.written_bytes {
            head.push_str(&format!(" · wrote {n} bytes"));
        }
        let mut out = head;
        out.push('\n');
        out.push_str(&self.output);
        if !self.output.is_empty() && !self.output.ends_with('\n') {
            out.push('\n');
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("[{h}]\n"));
        }
        out
    }

    pub(crate) fn into_result(self) -> CallToolResult {
        let text = self.text();
        let is_error = self.is_error();
        let value = serde_json::to_value(&self).unwrap_or_default();
        let mut r = if is_error {
            CallToolResult::error(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::success(vec![ContentBlock::text(text)])
        };
        r.structured_content = Some(value);
        r
    }
}

fn omitted_marker(job: &str, o: &Omitted) -> String {
    let mut m = format!(
        "…[{} omitted: lines {}–{}, bytes {}–{}",
        bytes(o.to - o.from),
        o.first_line,
        o.last_line,
        o.from,
        o.to
    );
    if let Some(d) = o.dropped {
        m.push_str(&format!(
            "; of these, bytes {}–{} exceeded the output cap and were discarded",
            d.from, d.to
        ));
    }
    m.push_str(&format!(
        "; read with job action=poll id={job} cursor={}]…\n",
        o.from
    ));
    m
}

pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

pub(crate) fn duration(ms: u64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}
