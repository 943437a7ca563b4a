//! One terminal session's state, whatever carries its bytes: a terminal
//! emulator (`vt100`) for the screen, a plain-text transcript spool (what a
//! person would have read, with progress bars collapsed), the command state
//! driven by the shell hooks, and the answers to every control request.
//!
//! The host (`local.rs` for a pseudo-terminal, `remote.rs` for an SSH
//! channel) feeds output and side-channel bytes in and carries [`Input`] out.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::{Notify, broadcast, mpsc};

use super::marker::{MarkScanner, Piece, Side, SideParser};
use super::proto::{
    ExecResult, Finished, Info, ReadResult, Request, Response, Running, TRANSCRIPT, Text,
};
use super::shell;
use crate::jobs::output::{self, Excerpt};
use crate::jobs::render::TtyRender;
use crate::jobs::spool::{SpoolReader, SpoolWriter};
use crate::jobs::{lock, now_ms};

/// In-band marks remembered while their side-channel record is on its way.
const MAX_MARKS: usize = 256;
/// Lines of scrollback the emulator keeps (the transcript keeps everything).
const SCROLLBACK: usize = 1000;
/// Output quiet this long before a command is checked for waiting on input.
const QUIET_FOR_INPUT: Duration = Duration::from_millis(400);
/// How long `exec` waits, at a quiet prompt, for readline to take the
/// terminal (seen as bracketed paste turned on, which the start-up file
/// asks for) before typing anyway: long enough for slow prompt hooks, which
/// run after the end is reported.
const READLINE_WAIT: Duration = Duration::from_millis(1500);
/// How long typing waits for a terminal whose input is full.
const INPUT_WAIT: Duration = Duration::from_secs(5);
/// Side-channel events kept while waiting for their marks.
const MAX_QUEUE: usize = 1024;
/// How long `exec` waits for a new shell's first prompt.
const READY_WAIT: Duration = Duration::from_secs(15);

/// What the host must do to the terminal.
#[derive(Debug)]
pub enum Input {
    Bytes(Vec<u8>),
    Resize(u16, u16),
    /// Hang up the shell.
    Close,
}

/// Whether the foreground program reads the terminal, as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Yes,
    No,
    /// Blocked in poll/select: reading the terminal only if it prompted.
    Maybe,
}

/// The host's way of telling whether a command is blocked reading the
/// terminal; `None` where it cannot tell (the screen decides then).
pub type Probe = Box<dyn Fn() -> Option<Reading> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No prompt yet.
    Starting,
    Idle,
    Running {
        seq: u64,
        start: u64,
        since: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct Done {
    seq: u64,
    status: i32,
    start: u64,
    end: u64,
    duration_ms: u64,
}

struct State {
    parser: vt100::Parser,
    render: TtyRender,
    rendered: Vec<u8>,
    spool: SpoolWriter,
    spool_error: Option<String>,
    scan: MarkScanner,
    side: SideParser,
    /// In-band marks not yet claimed: token and transcript offset.
    marks: VecDeque<(String, u64)>,
    /// Side-channel events whose mark has not arrived yet, in order.
    queue: VecDeque<Side>,
    phase: Phase,
    next_seq: u64,
    /// An `exec` typed into the shell whose start is not seen yet: its
    /// number and the transcript offset when it was typed.
    typed: Option<(u64, u64, Instant)>,
    last: Option<Done>,
    cwd: Option<String>,
    read_cursor: u64,
    last_io: Instant,
    last_output: Instant,
    exited: Option<String>,
    /// The shell's pid on its host (from the start, or its own report).
    shell_pid: i32,
}

/// A session: shared by the host's I/O loop and every control connection.
pub struct Term {
    pub name: String,
    started_ms: i64,
    transcript: PathBuf,
    hooks: bool,
    state: Mutex<State>,
    changed: Notify,
    input: mpsc::Sender<Input>,
    raw: broadcast::Sender<Vec<u8>>,
    probe: Option<Probe>,
}

impl Term {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        dir: &std::path::Path,
        shell: &str,
        shell_pid: i32,
        size: (u16, u16),
        cap: u64,
        segment_size: u64,
        input: mpsc::Sender<Input>,
        probe: Option<Probe>,
    ) -> Arc<Term> {
        let (cols, rows) = size;
        let transcript = dir.join(TRANSCRIPT);
        let now = Instant::now();
        Arc::new(Term {
            name,
            started_ms: now_ms(),
            hooks: shell::has_hooks(shell),
            state: Mutex::new(State {
                parser: vt100::Parser::new(rows, cols, SCROLLBACK),
                render: TtyRender::default(),
                rendered: Vec::new(),
                spool: SpoolWriter::new(&transcript, segment_size, cap),
                spool_error: None,
                scan: MarkScanner::default(),
                side: SideParser::default(),
                marks: VecDeque::new(),
                queue: VecDeque::new(),
                phase: if shell::has_hooks(shell) {
                    Phase::Starting
                } else {
                    Phase::Idle
                },
                next_seq: 1,
                typed: None,
                last: None,
                cwd: None,
                read_cursor: 0,
                last_io: now,
                last_output: now,
                exited: None,
                shell_pid,
            }),
            transcript,
            changed: Notify::new(),
            input,
            raw: broadcast::channel(64).0,
            probe,
        })
    }

    /// Output from the terminal.
    pub fn feed_output(&self, bytes: &[u8]) {
        {
            let mut s = lock(&self.state);
            let now = Instant::now();
            s.last_output = now;
            s.last_io = now;
            for piece in s.scan.feed(bytes) {
                match piece {
                    Piece::Bytes(b) => {
                        s.parser.process(&b);
                        let State {
                            render, rendered, ..
                        } = &mut *s;
                        rendered.clear();
                        render.feed(&b, rendered);
                        s.write_rendered();
                        let _ = self.raw.send(b);
                    }
                    Piece::Mark(token) => {
                        s.flush_partial();
                        let at = s.spool.total();
                        s.marks.push_back((token, at));
                        if s.marks.len() > MAX_MARKS {
                            s.marks.pop_front();
                        }
                        s.apply_queue();
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Bytes from the side channel.
    pub fn feed_side(&self, bytes: &[u8]) {
        {
            let mut s = lock(&self.state);
            for ev in s.side.feed(bytes) {
                match ev {
                    Side::Pid { pid } => s.shell_pid = pid,
                    ev => {
                        s.queue.push_back(ev);
                        if s.queue.len() > MAX_QUEUE {
                            s.queue.pop_front();
                        }
                    }
                }
            }
            s.apply_queue();
        }
        self.changed.notify_waiters();
    }

    /// The shell is gone; every waiter learns why.
    pub fn set_exited(&self, reason: String) {
        {
            let mut s = lock(&self.state);
            s.flush_partial();
            s.exited.get_or_insert(reason);
        }
        self.changed.notify_waiters();
    }

    pub fn exited(&self) -> Option<String> {
        lock(&self.state).exited.clone()
    }

    /// The shell's pid on its host (0 until known).
    pub fn shell_pid(&self) -> i32 {
        lock(&self.state).shell_pid
    }

    /// Wait until the shell has reported its pid (it runs its start-up
    /// files first) or ended; `Err` says why it is not up.
    pub async fn wait_started(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if let Some(why) = self.exited() {
                let screen = screen_tail(lock(&self.state).parser.screen(), 5);
                return Err(format!("{why}; its terminal showed:\n{screen}"));
            }
            if self.shell_pid() > 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return Err(format!(
                    "the shell did not start within {} s",
                    within.as_secs()
                ));
            }
        }
    }

    /// Wait for the shell to end; returns why it did.
    pub async fn wait_exit(&self) -> String {
        loop {
            let changed = self.changed.notified();
            if let Some(why) = self.exited() {
                return why;
            }
            changed.await;
        }
    }

    /// How long since the last input or output.
    pub fn idle(&self) -> Duration {
        lock(&self.state).last_io.elapsed()
    }

    fn touch(&self) {
        lock(&self.state).last_io = Instant::now();
    }

    /// The screen as escape sequences that redraw it, and a receiver of the
    /// raw output from then on (for `attach`).
    pub fn subscribe(&self) -> (Vec<u8>, broadcast::Receiver<Vec<u8>>) {
        let s = lock(&self.state);
        (s.parser.screen().state_formatted(), self.raw.subscribe())
    }

    /// Send bytes to the terminal (`attach --rw`, `write`). Waits while
    /// the terminal's input is full, but not forever.
    pub async fn type_bytes(&self, bytes: Vec<u8>) -> Result<(), String> {
        self.touch();
        match tokio::time::timeout(INPUT_WAIT, self.input.send(Input::Bytes(bytes))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the session has ended".to_owned()),
            Err(_) => Err(format!(
                "the terminal has not taken its input for {} s: the program in it does not read; \
                 look with action=read screen=true, or interrupt it with keys=[\"ctrl-c\"]",
                INPUT_WAIT.as_secs()
            )),
        }
    }

    /// Answer a control request (all but `Attach`, which the socket serves).
    pub async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Exec {
                cmd,
                wait_ms,
                max_output,
            } => self.exec(cmd, wait_ms, max_output).await,
            Request::Write { data } => {
                match base64::engine::general_purpose::STANDARD.decode(data) {
                    Err(e) => error(format!("bad base64: {e}")),
                    Ok(bytes) => match self.type_bytes(bytes).await {
                        Ok(()) => Response::Ok,
                        Err(e) => error(e),
                    },
                }
            }
            Request::Read {
                screen,
                wait_ms,
                max_output,
                from,
            } => self.read(screen, wait_ms, max_output, from).await,
            Request::Resize { cols, rows } => {
                if cols == 0 || rows == 0 || cols > 1000 || rows > 500 {
                    return error("cols must be 1..=1000 and rows 1..=500".into());
                }
                lock(&self.state).parser.screen_mut().set_size(rows, cols);
                match self.input.send(Input::Resize(cols, rows)).await {
                    Ok(()) => Response::Ok,
                    Err(_) => error("the session has ended".into()),
                }
            }
            Request::Close => {
                let _ = self.input.send(Input::Close).await;
                Response::Ok
            }
            Request::Info => Response::Info(self.info()),
            Request::Attach { .. } => error("attach is served by the socket".into()),
        }
    }

    pub fn info(&self) -> Info {
        let s = lock(&self.state);
        let waiting = self.waiting(&s);
        self.info_of(&s, waiting)
    }

    fn info_of(&self, s: &State, waiting: bool) -> Info {
        let (rows, cols) = s.parser.screen().size();
        Info {
            name: self.name.clone(),
            shell_pid: s.shell_pid,
            started_ms: self.started_ms,
            idle_ms: s.last_io.elapsed().as_millis() as u64,
            pending_bytes: s.spool.total().saturating_sub(s.read_cursor),
            running: match s.phase {
                Phase::Running { seq, since, .. } => Some(Running {
                    seq,
                    for_ms: since.elapsed().as_millis() as u64,
                }),
                _ => None,
            },
            last: s.last.map(|d| Finished {
                seq: d.seq,
                exit_code: d.status,
                duration_ms: d.duration_ms,
            }),
            cwd: s.cwd.clone(),
            cols,
            rows,
            waiting_for_input: waiting,
            exit_reason: s.exited.clone(),
        }
    }

    /// A command runs, output has been quiet for a moment, and the
    /// foreground program is blocked reading the terminal.
    fn waiting(&self, s: &State) -> bool {
        // Quiet since the command started (or was typed: a continuation
        // prompt counts too); right after typing, readline still holds the
        // terminal and would look like a reader.
        let since = match (s.phase, s.typed) {
            (Phase::Running { since, .. }, _) => since,
            (_, Some((_, _, at))) => at,
            _ => return false,
        };
        if s.exited.is_some() || s.last_output.max(since).elapsed() < QUIET_FOR_INPUT {
            return false;
        }
        match self.probe.as_ref().and_then(|p| p()) {
            Some(Reading::Yes) => true,
            Some(Reading::No) => false,
            Some(Reading::Maybe) | None => prompt_like(s.parser.screen()),
        }
    }

    async fn exec(&self, cmd: String, wait_ms: u64, budget: usize) -> Response {
        if !self.hooks {
            return error(
                "exec needs a bash session (its hooks report each command's exit code and cwd); \
                 this session runs another shell: use action=write and action=read"
                    .into(),
            );
        }
        if cmd.trim().is_empty() {
            return error("cmd is empty".into());
        }
        let started = Instant::now();
        // A new shell may still be reading its start-up files.
        let ready_by = started + READY_WAIT;
        let seq = loop {
            let changed = self.changed.notified();
            {
                let mut s = lock(&self.state);
                if let Some(why) = &s.exited {
                    return error(format!("the session has ended: {why}"));
                }
                match s.phase {
                    // Typed before readline has the terminal, the line would
                    // be echoed raw by the kernel first; readline turning on
                    // bracketed paste says it reads now.
                    Phase::Idle
                        if s.typed.is_none()
                            && (s.parser.screen().bracketed_paste()
                                || s.last_output.elapsed() >= READLINE_WAIT) =>
                    {
                        let seq = s.next_seq;
                        s.next_seq += 1;
                        let at = s.spool.total();
                        s.typed = Some((seq, at, Instant::now()));
                        s.last_io = Instant::now();
                        break seq;
                    }
                    Phase::Starting | Phase::Idle if s.typed.is_none() => {}
                    _ => {
                        let (seq, for_ms) = match (s.phase, s.typed) {
                            (Phase::Running { seq, since, .. }, _) => {
                                (seq, since.elapsed().as_millis())
                            }
                            (_, Some((seq, _, at))) => (seq, at.elapsed().as_millis()),
                            _ => (0, 0),
                        };
                        return error(format!(
                            "busy: command {seq} has been running for {for_ms} ms in session {:?}; \
                             wait for it with action=read wait=N, answer it with action=write, \
                             or stop it with action=write keys=[\"ctrl-c\"]",
                            self.name
                        ));
                    }
                }
            }
            let tick = (Instant::now() + Duration::from_millis(100)).min(ready_by);
            let _ = tokio::time::timeout_at(tick.into(), changed).await;
            if Instant::now() >= ready_by {
                return error(format!(
                    "the shell of session {:?} has not shown its first prompt after {} s \
                     (slow start-up files?); try again, or read the screen with action=read screen=true",
                    self.name,
                    READY_WAIT.as_secs()
                ));
            }
        };
        if self
            .input
            .send(Input::Bytes(shell::typed(&cmd)))
            .await
            .is_err()
        {
            return error("the session has ended".into());
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let changed = self.changed.notified();
            {
                let mut s = lock(&self.state);
                if let Some(d) = s.last.filter(|d| d.seq == seq) {
                    s.read_cursor = s.read_cursor.max(d.end);
                    let cwd = s.cwd.clone();
                    drop(s);
                    return Response::Exec(ExecResult {
                        seq,
                        state: "exited".into(),
                        exit_code: Some(d.status),
                        cwd,
                        output: self.text(d.start, d.end, budget),
                        screen: None,
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                }
                let state = if s.exited.is_some() {
                    Some("shell_exited")
                } else if self.waiting(&s) {
                    Some("waiting_for_input")
                } else if Instant::now() >= deadline {
                    Some("running")
                } else {
                    None
                };
                if let Some(state) = state {
                    s.flush_partial();
                    let from = match (s.phase, s.typed) {
                        (Phase::Running { seq: r, start, .. }, _) if r == seq => start,
                        (_, Some((_, at, _))) => at,
                        _ => s.read_cursor,
                    };
                    let to = s.spool.total();
                    s.read_cursor = to;
                    let screen =
                        (state == "waiting_for_input").then(|| screen_tail(s.parser.screen(), 5));
                    let cwd = s.cwd.clone();
                    drop(s);
                    return Response::Exec(ExecResult {
                        seq,
                        state: state.into(),
                        exit_code: None,
                        cwd,
                        output: self.text(from, to, budget),
                        screen,
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                }
            }
            let tick = (Instant::now() + Duration::from_millis(150)).min(deadline);
            let _ = tokio::time::timeout_at(tick.into(), changed).await;
        }
    }

    async fn read(&self, screen: bool, wait_ms: u64, budget: usize, from: Option<u64>) -> Response {
        self.touch();
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let seen_last = lock(&self.state).last.map(|d| d.seq);
        loop {
            let changed = self.changed.notified();
            {
                let mut s = lock(&self.state);
                s.flush_partial();
                let fresh = s.spool.total() > from.unwrap_or(s.read_cursor)
                    || s.last.map(|d| d.seq) != seen_last
                    || s.exited.is_some();
                if fresh || Instant::now() >= deadline {
                    let waiting = self.waiting(&s);
                    let info = self.info_of(&s, waiting);
                    if screen {
                        let sc = s.parser.screen();
                        return Response::Read(ReadResult {
                            text: None,
                            screen: Some(screen_text(sc)),
                            cursor: Some(sc.cursor_position()),
                            next: s.spool.total(),
                            info,
                        });
                    }
                    let start = from.unwrap_or(s.read_cursor);
                    let end = s.spool.total();
                    drop(s);
                    let (text, next) = match from {
                        // Paging an earlier range: the read position stays.
                        Some(f) => self.page(f, budget),
                        None => {
                            lock(&self.state).read_cursor = end;
                            (self.text(start, end, budget), end)
                        }
                    };
                    return Response::Read(ReadResult {
                        text: Some(text),
                        screen: None,
                        cursor: None,
                        next,
                        info,
                    });
                }
            }
            let tick = (Instant::now() + Duration::from_millis(150)).min(deadline);
            let _ = tokio::time::timeout_at(tick.into(), changed).await;
        }
    }

    /// The transcript's bytes `[from, to)` within `budget`.
    fn text(&self, from: u64, to: u64, budget: usize) -> Text {
        match SpoolReader::open(&self.transcript)
            .and_then(|r| output::excerpt_range(&r, from, to, budget))
        {
            Ok(e) => excerpt_text(e),
            Err(e) => Text {
                head: format!("(cannot read the transcript: {e})"),
                ..Text::default()
            },
        }
    }

    fn page(&self, from: u64, budget: usize) -> (Text, u64) {
        match SpoolReader::open(&self.transcript).and_then(|r| output::page(&r, from, budget)) {
            Ok(p) => (
                Text {
                    head: p.text,
                    ..Text::default()
                },
                p.next,
            ),
            Err(e) => (
                Text {
                    head: format!("(cannot read the transcript: {e})"),
                    ..Text::default()
                },
                from,
            ),
        }
    }
}

impl State {
    fn write_rendered(&mut self) {
        if self.rendered.is_empty() {
            return;
        }
        if let Err(e) = self.spool.write(&self.rendered) {
            self.spool_error
                .get_or_insert_with(|| format!("transcript write failed: {e}"));
        }
    }

    fn flush_partial(&mut self) {
        let State {
            render, rendered, ..
        } = self;
        rendered.clear();
        render.flush_partial(rendered);
        self.write_rendered();
    }

    /// Apply side-channel events in order, each once its mark has been seen.
    fn apply_queue(&mut self) {
        while let Some(ev) = self.queue.front() {
            let Some(i) = self.mark_of(ev) else {
                // A start whose end has its mark already never had its own
                // (an empty line runs nothing): the stream is in order.
                let skipped = matches!(ev, Side::Start { .. })
                    && self.queue.get(1).is_some_and(|e| self.mark_of(e).is_some());
                if skipped {
                    self.queue.pop_front();
                    continue;
                }
                return;
            };
            let (_, at) = self.marks.remove(i).unwrap_or_default();
            // Marks older than a claimed one can never be claimed.
            self.marks.drain(..i);
            let Some(ev) = self.queue.pop_front() else {
                return;
            };
            self.apply(ev, at);
        }
    }

    /// Where the mark of `ev` is among the unclaimed marks.
    fn mark_of(&self, ev: &Side) -> Option<usize> {
        let token = match ev {
            Side::Start { token } | Side::End { token, .. } => token,
            Side::Pid { .. } => return None,
        };
        self.marks.iter().position(|(t, _)| t == token)
    }

    fn apply(&mut self, ev: Side, at: u64) {
        match ev {
            Side::Start { .. } => {
                let seq = match self.typed.take() {
                    Some((seq, _, _)) => seq,
                    None => {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        seq
                    }
                };
                self.phase = Phase::Running {
                    seq,
                    start: at,
                    since: Instant::now(),
                };
            }
            Side::Pid { pid } => self.shell_pid = pid,
            Side::End {
                status, cwd, next, ..
            } => {
                // The next command line's start comes before anything after this.
                if !next.is_empty() {
                    self.queue.push_front(Side::Start { token: next });
                }
                let done = match (self.phase, self.typed.take()) {
                    (Phase::Running { seq, start, since }, _) => Some(Done {
                        seq,
                        status,
                        start,
                        end: at,
                        duration_ms: since.elapsed().as_millis() as u64,
                    }),
                    // Typed but never started: a syntax error, say.
                    (_, Some((seq, start, since))) => Some(Done {
                        seq,
                        status,
                        start,
                        end: at,
                        duration_ms: since.elapsed().as_millis() as u64,
                    }),
                    _ => None,
                };
                if done.is_some() {
                    self.last = done;
                }
                self.cwd = Some(cwd);
                self.phase = Phase::Idle;
            }
        }
    }
}

fn error(message: String) -> Response {
    Response::Error { message }
}

fn excerpt_text(e: Excerpt) -> Text {
    Text {
        head: e.head,
        tail: e.tail,
        omitted_bytes: e.omitted.map_or(0, |o| o.to - o.from),
    }
}

/// The screen's text, trailing blank lines and spaces dropped.
fn screen_text(screen: &vt100::Screen) -> String {
    let (_, cols) = screen.size();
    let rows: Vec<String> = screen
        .rows(0, cols)
        .map(|r| r.trim_end().to_owned())
        .collect();
    let keep = rows
        .iter()
        .rposition(|r| !r.is_empty())
        .map_or(0, |i| i + 1);
    rows[..keep].join("\n")
}

/// The last `n` non-blank lines up to the cursor.
fn screen_tail(screen: &vt100::Screen, n: usize) -> String {
    let text = screen_text(screen);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cursor sits after text that reads like a question: `Password: `,
/// `[y/N] `, `>>> `, a pager's `:`.
fn prompt_like(screen: &vt100::Screen) -> bool {
    let (row, col) = screen.cursor_position();
    let (_, cols) = screen.size();
    let line: String = screen
        .rows(0, cols)
        .nth(row as usize)
        .unwrap_or_default()
        .chars()
        .take(col as usize)
        .collect();
    let line = line.trim_end();
    line.ends_with([':', '?', '>', ']', ')', '$', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term() -> (Arc<Term>, mpsc::Receiver<Input>, tempfile::TempDir) {
        term_with(None)
    }

    fn term_with(probe: Option<Probe>) -> (Arc<Term>, mpsc::Receiver<Input>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let t = Term::new(
            "t".into(),
            dir.path(),
            "/bin/bash",
            1,
            (80, 24),
            1 << 20,
            1 << 16,
            tx,
            probe,
        );
        (t, rx, dir)
    }

    #[tokio::test]
    async fn an_empty_line_skips_its_start_and_a_repeated_start_mark_counts_once() {
        let (t, _rx, _d) = term();
        t.feed_side(b"E\x001\x000\x00/\x002\x00");
        t.feed_output(&mark("1"));
        // Enter on an empty line: no start mark, straight to the next end.
        t.feed_output(&mark("3"));
        t.feed_side(b"E\x003\x000\x00/a\x004\x00");
        assert!(t.info().running.is_none() && t.info().cwd.as_deref() == Some("/a"));
        // A command that prints its own start mark again, then ends with 5.
        t.feed_output(&mark("4"));
        assert_eq!(t.info().running.map(|r| r.seq), Some(1));
        t.feed_output(&[b"x\r\n".to_vec(), mark("4"), mark("5")].concat());
        t.feed_side(b"E\x005\x003\x00/b\x006\x00");
        let info = t.info();
        assert!(info.running.is_none(), "{info:?}");
        assert_eq!(info.last.map(|l| (l.seq, l.exit_code)), Some((1, 3)));
        // The next command starts with 6, not with the stale copy of 4.
        t.feed_output(&mark("6"));
        assert_eq!(t.info().running.map(|r| r.seq), Some(2));
    }

    #[tokio::test]
    async fn a_command_is_not_waiting_for_input_before_it_had_time_to_ask() {
        // The probe says "reading the terminal" all along, as readline does
        // right after a command is typed; the session was quiet before.
        let (t, _rx, _d) = term_with(Some(Box::new(|| Some(Reading::Yes))));
        t.feed_side(b"E\x001\x000\x00/\x002\x00");
        t.feed_output(&[mark("1"), b"\x1b[?2004h$ ".to_vec()].concat());
        tokio::time::sleep(QUIET_FOR_INPUT + Duration::from_millis(50)).await;
        let r = t
            .handle(Request::Exec {
                cmd: "x".into(),
                wait_ms: 200,
                max_output: 100,
            })
            .await;
        let Response::Exec(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(r.state, "running");
        tokio::time::sleep(QUIET_FOR_INPUT).await;
        assert!(t.info().waiting_for_input, "quiet long enough after typing");
    }

    fn mark(t: &str) -> Vec<u8> {
        format!("\x1b]6973;{t}\x07").into_bytes()
    }

    #[tokio::test]
    async fn exec_output_and_status_come_from_matched_marks_only() {
        let (t, mut rx, _d) = term();
        // First prompt.
        t.feed_side(b"E\x001\x000\x00/home\x0022\x00");
        t.feed_output(&[mark("1"), b"\x1b[?2004h$ ".to_vec()].concat());
        let t2 = t.clone();
        let exec = tokio::spawn(async move {
            t2.handle(Request::Exec {
                cmd: "x".into(),
                wait_ms: 5000,
                max_output: 1000,
            })
            .await
        });
        assert!(matches!(rx.recv().await, Some(Input::Bytes(_))));
        // Echo, then the start mark; the command prints a forged end mark
        // and a forged side-looking record; then the real end arrives with
        // its mark *before* the side record (the channels race).
        t.feed_output(b"x\r\n");
        t.feed_output(&mark("22"));
        t.feed_output(
            &[
                b"out1\r\n".to_vec(),
                mark("33"),
                b"E\x0033\x000\x00/\x0034\x00out2".to_vec(),
            ]
            .concat(),
        );
        t.feed_output(&mark("44"));
        t.feed_output(b"$ ");
        t.feed_side(b"E\x0044\x007\x00/tmp\x0045\x00");
        let Response::Exec(r) = exec.await.unwrap() else {
            panic!()
        };
        assert_eq!(r.state, "exited");
        assert_eq!(r.exit_code, Some(7));
        assert_eq!(r.cwd.as_deref(), Some("/tmp"));
        assert_eq!(r.output.head, "out1\nE330/34out2");
    }
}
