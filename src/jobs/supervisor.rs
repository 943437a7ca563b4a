//! The per-job supervisor: runs in its own process (forked from the zygote, in
//! its own session, a child subreaper), owns the job's child, drains its output
//! into the spool, enforces the timeout, serves the control socket and writes
//! the exit status atomically. It never touches SQLite and never talks to the
//! server except through the control socket, so it outlives server restarts.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener as StdListener;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustix::process::{Pid, Signal, WaitOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::proto::{
    CONTROL_SOCKET, Event, ExitStatus, KillReport, Request, STATUS_FILE, Spec, StdinMode,
};
use super::render::TtyRender;
use super::spawn::prepare;
use super::spool::SpoolWriter;
use super::{lock, now_ms, procs};

/// How long output may keep flowing after the main process exits (background
/// children holding the pipe) before the job is finalized.
const LINGER: Duration = Duration::from_millis(100);
/// Minimum spacing of `Out` events to watchers.
const EVENT_EVERY: Duration = Duration::from_millis(20);
/// A partial TTY line is published after this much quiet.
const PARTIAL_AFTER: Duration = Duration::from_millis(100);
/// The control socket is bound once the job has run this long: the server
/// follows the job on the connection it handed it over on, so a short job
/// never creates (or deletes) a socket. Clients of the socket retry for longer.
const BIND_AFTER: Duration = Duration::from_millis(30);
/// How long to wait for the server to confirm it recorded the exit before
/// writing `status.json` for whoever comes later.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// A supervisor made ready before it has a job: its runtime is built and
/// child exits are already being watched, so none of that is on a job's
/// start path.
pub struct Ready {
    rt: tokio::runtime::Runtime,
    sigchld: tokio::signal::unix::Signal,
}

impl Ready {
    pub fn new() -> io::Result<Ready> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Reaping must be armed before the child exists, or an instant exit is missed.
        let sigchld = rt.block_on(async { signal(SignalKind::child()) })?;
        Ok(Ready { rt, sigchld })
    }

    /// Run the job; `server` is the connection the job was handed over on,
    /// which receives its events like any watcher. Returns the exit code,
    /// and the connection when this supervisor told the server it can take
    /// another job and the server confirmed the exit on it: the server has
    /// then put it back in its pool, and the next job comes on it.
    pub fn run(&mut self, spec: Spec, server: StdStream) -> (i32, Option<StdStream>) {
        let Ready { rt, sigchld } = self;
        rt.block_on(supervise(spec, sigchld, server))
    }

    /// Host a terminal session until its shell ends; returns the exit code.
    pub fn run_session(
        &mut self,
        spec: crate::sessions::proto::OpenSpec,
        server: StdStream,
    ) -> i32 {
        let Ready { rt, sigchld } = self;
        rt.block_on(crate::sessions::host_local(spec, sigchld, server))
    }
}

/// True when this process has no children left — as a subreaper, then it
/// has no descendants at all and may take another job.
pub fn childless() -> bool {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => continue, // reaped a straggler; look again
            Ok(None) => return false,
            Err(e) => return e == rustix::io::Errno::CHILD,
        }
    }
}

fn failed(reason: String, total_bytes: u64) -> ExitStatus {
    ExitStatus {
        status: "failed".into(),
        exit_code: None,
        signal: None,
        reason: Some(reason),
        ended_ms: now_ms(),
        total_bytes,
        kill: None,
        again: false,
    }
}

/// State shared between the main loop and control-connection tasks.
struct Ctx {
    child_pid: i32,
    stdin: Option<mpsc::Sender<StdinMsg>>,
    pty: Option<OwnedFd>,
    watchers: Mutex<Watchers>,
    total: Mutex<u64>,
    /// Set by a kill or timeout: the report and whether it was a timeout.
    ended_by: Mutex<Option<(bool, KillReport)>>,
    kill_started: Mutex<bool>,
}

/// Connections following the job, and its end once known: a watcher that
/// registers after the end gets the `Exit` at once, never nothing.
#[derive(Default)]
struct Watchers {
    streams: Vec<StdStream>,
    ended: Option<ExitStatus>,
}

enum StdinMsg {
    Data(Vec<u8>),
    Eof,
}

async fn supervise(
    spec: Spec,
    sigchld: &mut tokio::signal::unix::Signal,
    server: StdStream,
) -> (i32, Option<StdStream>) {
    // A second handle on the server connection, to read its confirmation
    // that it recorded the exit.
    let server_ack = server.try_clone().ok();
    let mut spool = SpoolWriter::new(&spec.dir, spec.segment_size, spec.output_cap);
    // Everything that can be ready before the job starts is: once it runs,
    // this process only waits for it.
    let mut chunk = vec![0u8; 64 * 1024];
    let started = prepare(&spec).and_then(|mut p| {
        let output = nonblocking(
            p.output
                .take()
                .ok_or_else(|| io::Error::other("no output"))?,
        )?;
        Ok((output, p.spawn()?))
    });
    let (output, spawned) = match started {
        Ok(s) => s,
        Err(e) => {
            let why = format!(
                "could not start `{}` in {}: {e}",
                spec.shell,
                spec.cwd.display()
            );
            let status = failed(why, 0);
            let again = childless();
            let exit = Event::Exit(ExitStatus {
                again,
                ..status.clone()
            });
            let _ = (&server).write_all(&event_line(&exit));
            let server = conclude(&spec, &status, server_ack).await;
            return (1, server.filter(|_| again));
        }
    };
    let mut stdin_task = None;
    let stdin_tx = spawned.input.and_then(|fd| {
        let fd = nonblocking(fd).ok()?;
        let (tx, rx) = mpsc::channel(64);
        stdin_task = Some(tokio::spawn(stdin_pump(fd, rx)));
        Some(tx)
    });
    if let (Some(tx), StdinMode::Text(text)) = (&stdin_tx, &spec.stdin) {
        let _ = tx.send(StdinMsg::Data(text.clone().into_bytes())).await;
        let eof = if spec.tty.is_some() {
            StdinMsg::Data(vec![4])
        } else {
            StdinMsg::Eof
        };
        let _ = tx.send(eof).await;
    }
    let ctx = Arc::new(Ctx {
        child_pid: spawned.pid,
        stdin: stdin_tx,
        pty: spawned.pty,
        watchers: Mutex::new(Watchers {
            streams: vec![server],
            ended: None,
        }),
        total: Mutex::new(0),
        ended_by: Mutex::new(None),
        kill_started: Mutex::new(false),
    });

    // Output is read in this task, one buffer at a time: the pipe (or
    // terminal) fills up and holds the job back while the spool is slow.
    let mut render = spec.tty.map(|_| TtyRender::default());
    let timeout_at = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut main_status: Option<rustix::process::WaitStatus> = reap(spawned.pid);
    let mut linger_until: Option<tokio::time::Instant> =
        main_status.map(|_| tokio::time::Instant::now() + LINGER);
    let mut output_open = true;
    let mut event_due: Option<tokio::time::Instant> = None;
    let mut partial_due: Option<tokio::time::Instant> = None;
    let mut last_event = Instant::now() - EVENT_EVERY;
    let conns = tokio_util::task::TaskTracker::new();
    let mut rendered = Vec::with_capacity(64 * 1024);
    let mut write_error: Option<String> = None;
    let bind_at = tokio::time::Instant::now() + BIND_AFTER;
    let mut listener: Option<UnixListener> = None;
    let mut bind_tried = false;

    loop {
        if !output_open && main_status.is_some() {
            break;
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            n = read_output(&output, &mut chunk), if output_open => {
                let n = match n {
                    Ok(n) if n > 0 => n,
                    // EOF, or EIO from a terminal whose last user closed it.
                    _ => {
                        output_open = false;
                        // The job has most likely just exited: collect it
                        // now rather than sleep until SIGCHLD wakes us.
                        if main_status.is_none() {
                            main_status = reap(spawned.pid);
                        }
                        if main_status.is_none() {
                            // Woken early (a signal) or not: look once more.
                            await_exit(spawned.pid, EXIT_AFTER_EOF);
                            main_status = reap(spawned.pid);
                        }
                        continue;
                    }
                };
                let chunk = &chunk[..n];
                let bytes: &[u8] = match render.as_mut() {
                    Some(r) => {
                        rendered.clear();
                        r.feed(chunk, &mut rendered);
                        partial_due = r.has_partial().then(|| tokio::time::Instant::now() + PARTIAL_AFTER);
                        &rendered
                    }
                    None => chunk,
                };
                if let Err(e) = spool.write(bytes) {
                    write_error.get_or_insert_with(|| format!("output spool write failed (output after byte {} lost): {e}", spool.total()));
                }
                *lock(&ctx.total) = spool.total();
                if last_event.elapsed() >= EVENT_EVERY {
                    last_event = Instant::now();
                    broadcast(&ctx, &Event::Out { bytes: spool.total() });
                    event_due = None;
                } else if event_due.is_none() {
                    event_due = Some(tokio::time::Instant::now() + EVENT_EVERY);
                }
            }
            _ = sigchld.recv() => {
                if main_status.is_none() {
                    main_status = reap(spawned.pid);
                    if main_status.is_some() {
                        linger_until = Some(tokio::time::Instant::now() + LINGER);
                    }
                } else {
                    reap(spawned.pid);
                }
            }
            _ = tokio::time::sleep_until(bind_at), if !bind_tried => {
                bind_tried = true;
                match bind_control(&spec) {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        write_error.get_or_insert_with(|| format!("cannot bind the control socket ({e}); the job could not be controlled"));
                    }
                }
            }
            conn = accept(listener.as_ref()) => {
                if let Ok((stream, _)) = conn {
                    conns.spawn(serve_conn(ctx.clone(), stream));
                }
            }
            _ = tokio::time::sleep_until(event_due.unwrap_or(far)), if event_due.is_some() => {
                event_due = None;
                last_event = Instant::now();
                broadcast(&ctx, &Event::Out { bytes: spool.total() });
            }
            _ = tokio::time::sleep_until(partial_due.unwrap_or(far)), if partial_due.is_some() => {
                partial_due = None;
                if let Some(r) = render.as_mut() {
                    rendered.clear();
                    r.flush_partial(&mut rendered);
                    let _ = spool.write(&rendered);
                    *lock(&ctx.total) = spool.total();
                    broadcast(&ctx, &Event::Out { bytes: spool.total() });
                }
            }
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)), if timeout_at.is_some() && main_status.is_none() && !*lock(&ctx.kill_started) => {
                start_kill(&ctx, true, Duration::from_millis(spec.timeout_grace_ms));
            }
            _ = tokio::time::sleep_until(linger_until.unwrap_or(far)), if linger_until.is_some() => {
                break;
            }
        }
    }

    if let Some(r) = render.as_mut() {
        rendered.clear();
        r.flush_partial(&mut rendered);
        let _ = spool.write(&rendered);
    }
    // A kill in progress reports what it verified before the status is written.
    while *lock(&ctx.kill_started) && lock(&ctx.ended_by).is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended_by = lock(&ctx.ended_by).clone();
    let status = exit_status(main_status, ended_by, spool.total(), write_error);
    if listener.is_some() {
        // Gone before anyone hears of the end: once the server has recorded
        // it, no socket of this job is left to find.
        let _ = std::fs::remove_file(spec.dir.join(CONTROL_SOCKET));
    }
    // Another job may follow on the server's connection when this one left
    // no process (as a subreaper, this process would have inherited any)
    // and no control client is still being answered.
    let again = childless() && conns.is_empty();
    broadcast(
        &ctx,
        &Event::Exit(ExitStatus {
            again,
            ..status.clone()
        }),
    );
    drop(ctx);
    if let Some(task) = stdin_task {
        task.abort();
    }
    let server = conclude(&spec, &status, server_ack).await.filter(|_| again);
    // Let in-flight requests (a kill waiting for its report) answer before exiting.
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), conns.wait()).await;
    if let Some(listener) = listener {
        finish_listener(listener, &status);
    }
    (0, server)
}

/// After the `Exit` went out: unless the server confirms it recorded it,
/// write `status.json` so a restarted server or the CLI can settle the job.
/// Returns the server connection when it confirmed.
async fn conclude(
    spec: &Spec,
    status: &ExitStatus,
    server: Option<StdStream>,
) -> Option<StdStream> {
    let server = exit_recorded(server?).await;
    if server.is_none() {
        write_status(spec, status);
    }
    server
}

/// Wait (briefly) for `ExitRecorded` on the server connection; give the
/// connection back, blocking again, when it came. Nothing else is written to
/// that connection after the `Exit` until the confirmation, so it may turn
/// non-blocking meanwhile. Right after it the server may send the next job's
/// spec, so the confirmation is read up to its newline and not a byte more.
async fn exit_recorded(server: StdStream) -> Option<StdStream> {
    use rustix::net::{RecvFlags, recv};
    server.set_nonblocking(true).ok()?;
    // Read interest only: registered for writing too, this process would be
    // woken for nothing when the server reads the `Exit` and frees buffer
    // space, at the moment the server's answer to the agent is being made.
    // SAFETY: the AsyncFd owns the stream, whose descriptor stays open and
    // the same until `into_inner` gives the stream back.
    #[allow(unsafe_code)]
    let fd =
        unsafe { AsyncFd::register_with_interest(server, tokio::io::Interest::READABLE) }.ok()?;
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    let read = async {
        while !line.ends_with(b"\n") && line.len() < 1024 {
            let Ok(mut ready) = fd.readable().await else {
                return false;
            };
            // Look first, then take what belongs to this line.
            let peeked = ready.try_io(|s| Ok(recv(s.get_ref(), &mut buf, RecvFlags::PEEK)?.0));
            let n = match peeked {
                Ok(Ok(0) | Err(_)) => return false,
                Ok(Ok(n)) => buf[..n]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(n, |i| i + 1),
                Err(_would_block) => continue,
            };
            match recv(fd.get_ref(), &mut buf[..n], RecvFlags::empty()) {
                Ok((got, _)) if got > 0 => line.extend_from_slice(&buf[..got]),
                _ => return false,
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(ACK_WAIT, read).await, Ok(true)) {
        return None;
    }
    if !matches!(
        serde_json::from_slice::<Request>(&line),
        Ok(Request::ExitRecorded)
    ) {
        return None;
    }
    let server = fd.into_inner();
    server.set_nonblocking(false).ok()?;
    Some(server)
}

/// Bind the job's control socket, creating the job directory if no output
/// has yet.
fn bind_control(spec: &Spec) -> io::Result<UnixListener> {
    crate::fsutil::create_private_dir(&spec.dir)?;
    // Clients wait for the socket's name to appear, so it appears only once
    // the socket listens: bound under a shorter name, then renamed (a name
    // bound but not yet listening refuses connections).
    let sock = spec.dir.join(CONTROL_SOCKET);
    let fresh = spec.dir.join("ctl.new");
    let _ = std::fs::remove_file(&fresh);
    let listener = StdListener::bind(&fresh)?;
    std::fs::rename(&fresh, &sock)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

async fn accept(
    listener: Option<&UnixListener>,
) -> io::Result<(UnixStream, tokio::net::unix::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn event_line(ev: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(ev).unwrap_or_default();
    line.push(b'\n');
    line
}

fn exit_status(
    main: Option<rustix::process::WaitStatus>,
    ended_by: Option<(bool, KillReport)>,
    total_bytes: u64,
    write_error: Option<String>,
) -> ExitStatus {
    let exit_code = main.and_then(|s| s.exit_status());
    let signal = main.and_then(|s| s.terminating_signal());
    let (status, kill, reason) = match ended_by {
        Some((true, k)) => (
            "timed_out",
            Some(k),
            Some("timeout reached; process tree killed".to_owned()),
        ),
        Some((false, k)) => ("killed", Some(k), None),
        None => ("exited", None, None),
    };
    ExitStatus {
        status: status.into(),
        exit_code,
        signal,
        reason: write_error.or(reason),
        ended_ms: now_ms(),
        total_bytes,
        kill,
        again: false,
    }
}

/// A process's output closes as it exits, a moment before it can be reaped
/// (its files are closed before its parent is told). Waiting that moment
/// out here, on a pidfd, ends a job sooner than the way round through
/// SIGCHLD, its handler and the runtime; a job that closed its output and
/// goes on running costs this wait once.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(2);

/// Block up to `limit` until `pid` (a child) has exited, a signal comes,
/// or at once where pidfds are not available.
fn await_exit(pid: i32, limit: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let Some(pid) = Pid::from_raw(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let timeout = Timespec {
        tv_sec: limit.as_secs() as _,
        tv_nsec: limit.subsec_nanos() as _,
    };
    let _ = poll(&mut [PollFd::new(&fd, PollFlags::IN)], Some(&timeout));
}

/// Reap every exited child (we are a subreaper, so orphans land here too);
/// return the main child's status if it was among them.
fn reap(main_pid: i32) -> Option<rustix::process::WaitStatus> {
    let mut main = None;
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if pid.as_raw_nonzero().get() == main_pid {
            main = Some(status);
        }
    }
    main
}

fn start_kill(ctx: &Arc<Ctx>, timeout: bool, grace: Duration) {
    {
        let mut started = lock(&ctx.kill_started);
        if *started {
            return;
        }
        *started = true;
    }
    let ctx = ctx.clone();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    tokio::task::spawn_blocking(move || {
        let report = procs::kill_tree(me, grace);
        *lock(&ctx.ended_by) = Some((timeout, report));
    });
}

fn broadcast(ctx: &Ctx, ev: &Event) {
    let line = event_line(ev);
    let mut w = lock(&ctx.watchers);
    if let Event::Exit(status) = ev {
        w.ended = Some(status.clone());
    }
    w.streams.retain_mut(|s| s.write_all(&line).is_ok());
}

async fn serve_conn(ctx: Arc<Ctx>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let req = match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str::<Request>(&line),
        _ => return,
    };
    let reply = match req {
        Err(e) => Event::Error { message: format!("bad request: {e}") },
        Ok(Request::Watch) => {
            let Ok(stream) = lines.into_inner().into_inner().reunite(write) else { return };
            let Ok(std) = stream.into_std() else { return };
            // Blocking with a short send timeout: a stuck reader is dropped, never waited on.
            let _ = std.set_nonblocking(false);
            let _ = std.set_write_timeout(Some(Duration::from_millis(200)));
            let bytes = *lock(&ctx.total);
            let mut std = std;
            let mut w = lock(&ctx.watchers);
            match &w.ended {
                Some(status) => {
                    let _ = std.write_all(&event_line(&Event::Exit(status.clone())));
                }
                None => {
                    if std.write_all(&event_line(&Event::Out { bytes })).is_ok() {
                        w.streams.push(std);
                    }
                }
            }
            return;
        }
        Ok(Request::Write { data, eof }) => match base64::engine::general_purpose::STANDARD.decode(data) {
            Err(e) => Event::Error { message: format!("bad base64: {e}") },
            Ok(bytes) => match &ctx.stdin {
                None => Event::Error {
                    message: "this job's stdin is closed; start it with interactive=true or tty=true to write to it".into(),
                },
                Some(tx) => {
                    let mut ok = bytes.is_empty() || tx.send(StdinMsg::Data(bytes)).await.is_ok();
                    if eof {
                        ok &= tx.send(StdinMsg::Eof).await.is_ok();
                    }
                    if ok {
                        Event::Ok { detail: None }
                    } else {
                        Event::Error { message: "the job no longer reads its stdin".into() }
                    }
                }
            },
        },
        Ok(Request::Signal { signal }) => {
            let sig = Signal::from_named_raw(signal);
            let pg = Pid::from_raw(ctx.child_pid);
            match (sig, pg) {
                (Some(sig), Some(pg)) => match rustix::process::kill_process_group(pg, sig) {
                    Ok(()) => Event::Ok { detail: None },
                    Err(e) => Event::Error { message: format!("signal failed: {e}") },
                },
                _ => Event::Error { message: format!("unknown signal {signal}") },
            }
        }
        Ok(Request::Kill { grace_ms }) => {
            start_kill(&ctx, false, Duration::from_millis(grace_ms));
            loop {
                if let Some((_, report)) = lock(&ctx.ended_by).clone() {
                    break Event::Ok { detail: Some(report) };
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(Request::ExitRecorded) => Event::Error {
            message: "exit_recorded is only meaningful on the connection a job was handed over on".into(),
        },
        Ok(Request::Resize { cols, rows }) => match &ctx.pty {
            None => Event::Error { message: "this job has no terminal; start it with tty=true".into() },
            Some(m) => {
                let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                match rustix::termios::tcsetwinsize(m, ws) {
                    Ok(()) => {
                        if let Some(pg) = Pid::from_raw(ctx.child_pid) {
                            let _ = rustix::process::kill_process_group(pg, Signal::WINCH);
                        }
                        Event::Ok { detail: None }
                    }
                    Err(e) => Event::Error { message: format!("resize failed: {e}") },
                }
            }
        },
    };
    if let Ok(mut l) = serde_json::to_vec(&reply) {
        l.push(b'\n');
        let _ = tokio::io::AsyncWriteExt::write_all(&mut write, &l).await;
    }
}

/// Feed queued input to the job's stdin; EOF (or the queue closing) closes it.
async fn stdin_pump(fd: AsyncFd<OwnedFd>, mut rx: mpsc::Receiver<StdinMsg>) {
    while let Some(StdinMsg::Data(d)) = rx.recv().await {
        let mut rest = &d[..];
        while !rest.is_empty() {
            let Ok(mut guard) = fd.writable().await else {
                return;
            };
            match guard.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), rest)?)) {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return,
                Err(_would_block) => {}
            }
        }
    }
}

/// Read what the job wrote; 0 at EOF.
pub(crate) async fn read_output(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *buf)?)) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(result) => return result,
            Err(_would_block) => {}
        }
    }
}

/// Make a pipe end or terminal master non-blocking and watch it in the runtime.
#[allow(unsafe_code)]
pub(crate) fn nonblocking(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays open
    // and always returns the same descriptor until the AsyncFd is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Write `status.json` atomically (temp file + rename), mode 0600, creating
/// the job directory if the job left nothing else.
fn write_status(spec: &Spec, status: &ExitStatus) {
    let result = crate::fsutil::create_private_dir(&spec.dir).and_then(|()| {
        let data = serde_json::to_vec(status).map_err(io::Error::other)?;
        crate::fsutil::write_private(&spec.dir.join(STATUS_FILE), &data)
    });
    if let Err(e) = result {
        tracing::error!(job = %spec.id, "cannot write exit status: {e}");
    }
}

/// Answer every connection already queued on the listener (its socket file
/// is removed already) with the final status.
fn finish_listener(listener: UnixListener, status: &ExitStatus) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    let _ = listener.set_nonblocking(true);
    let line = event_line(&Event::Exit(status.clone()));
    while let Ok((mut s, _)) = listener.accept() {
        let _ = s.set_nonblocking(false);
        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = s.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `await_exit` returns once the child can be reaped, and not before:
    /// a reap right after it finds an exited child, a running one is left be.
    #[test]
    fn await_exit_returns_when_the_child_can_be_reaped() {
        for _ in 0..20 {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            await_exit(child.id() as i32, Duration::from_secs(10));
            assert!(
                child.try_wait().unwrap().is_some(),
                "exited child not reapable"
            );
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        await_exit(child.id() as i32, Duration::from_millis(20));
        assert!(
            child.try_wait().unwrap().is_none(),
            "a running child was taken as exited"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The server may send the next job's spec right behind the exit's
    /// confirmation, and both may arrive in one read: the confirmation is
    /// taken alone and the spec is left whole on the connection.
    #[tokio::test]
    async fn the_confirmation_is_read_without_the_spec_behind_it() {
        let (ours, mut theirs) = StdStream::pair().unwrap();
        let mut sent = serde_json::to_vec(&Request::ExitRecorded).unwrap();
        sent.extend_from_slice(b"\n{\"id\":\"next-job\"}\n");
        theirs.write_all(&sent).unwrap();
        let back = exit_recorded(ours).await.expect("confirmation not seen");
        let mut rest = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&back), &mut rest).unwrap();
        assert_eq!(rest, "{\"id\":\"next-job\"}\n");

        let (ours, mut theirs) = StdStream::pair().unwrap();
        theirs.write_all(b"{\"op\":\"watch\"}\n").unwrap();
        assert!(
            exit_recorded(ours).await.is_none(),
            "another request taken as the confirmation"
        );
    }
}
