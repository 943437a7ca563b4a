//! `mcpsh-bench`: measures mcpsh on this machine and prints a table.
//!
//! ```text
//! cargo build --release --bin mcpsh --bin mcpsh-bench
//! target/release/mcpsh-bench [--server PATH] [--calls N] [--quick] [--only NAME]
//! ```
//!
//! 1. Round trip of `tools/call bash {cmd:"true"}` and of a no-op call
//!    (`job {action:"list", limit:1}`) over Streamable HTTP with one warm
//!    keep-alive HTTP/1.1 connection; the difference of the p50s is the cost
//!    of running a command.
//! 2. The same over stdio (`mcpsh stdio` on pipes).
//! 3. Spool write throughput (`SpoolWriter`, 64 KiB chunks).
//! 4. Page read cost at the start, middle and end of a large spool
//!    (`SpoolReader::open` + `output::page`), plus the head+tail excerpt that
//!    `bash` returns when a job ends.
//! 5. Peak server and supervisor RSS while a job writes a large output.
//! 6. `file grep` over a generated source tree (1 GiB; 64 MiB with
//!    `--quick`) against `rg`, and the memory it takes.
//! 7. `file read` deep in a large file through a server.
//! 8. `auth`: a flood of wrong-password logins from one source while the
//!    owner logs in from another (how many reach the password hasher), and
//!    the cost of a bearer token on `/mcp`.
//! 9. `ssh`: through a real `sshd` on 127.0.0.1: fan-out `uptime` on 50
//!    aliases cold and warm, cold connect, warm remote `bash true`, and the
//!    OpenSSH client for reference.
//! 10. `session`: warm `exec true` round trips in a local terminal session,
//!     and the RSS of the server and the session's host while the session
//!     takes 10 MiB of output.
//!
//! Every server gets its own state directory under a temporary directory
//! that is removed at the end; servers are stopped with SIGTERM (SIGKILL
//! after a grace period).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod session_bench;
mod ssh_bench;

use mcpsh::files::Scope;
use mcpsh::files::grep::{self, Case, GrepOptions};
use mcpsh::jobs::output;
use mcpsh::jobs::spool::{SpoolReader, SpoolWriter};
use serde_json::{Value, json};

const PROTOCOL_VERSION: &str = "2025-11-25";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Segment size the server uses by default (config `jobs.segment_size`).
const SEGMENT: u64 = 8 * MIB;
/// Page budget used by `job poll` by default.
const PAGE: usize = 16384;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

// ---------------------------------------------------------------------------
// Options

struct Opts {
    server: PathBuf,
    calls: usize,
    warmup: usize,
    spool_bytes: u64,
    job_bytes: u64,
    page_reads: usize,
    grep_bytes: u64,
    /// The line `file read` pages at (the file has a little more).
    read_line: u64,
    /// Wrong-password logins in the `auth` section's flood.
    login_flood: u64,
    /// Run only the sections whose name contains this.
    only: Option<String>,
    /// `--quick`: a smoke run.
    quick: bool,
}

const USAGE: &str = "usage: mcpsh-bench [--server PATH] [--calls N] [--quick] [--only NAME]

  --server PATH   the mcpsh binary (default: `mcpsh` next to this binary)
  --calls N       measured calls per round-trip metric (default 1000; --quick: 100)
  --quick         small sizes for a smoke run (64 MiB spool, job and grep tree, 100 calls,
                  1,000 logins in the auth flood)
  --only NAME     run only the sections whose name contains NAME (e.g. grep)";

fn parse_args() -> Result<Opts> {
    let mut server = None;
    let mut calls = None;
    let mut quick = false;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => server = Some(PathBuf::from(args.next().ok_or("--server needs a path")?)),
            "--calls" => {
                let n: usize = args
                    .next()
                    .ok_or("--calls needs a number")?
                    .parse()
                    .map_err(|e| format!("--calls: {e}"))?;
                if n == 0 {
                    return err("--calls must be at least 1");
                }
                calls = Some(n);
            }
            "--quick" => quick = true,
            "--only" => only = Some(args.next().ok_or("--only needs a section name")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let server = match server {
        Some(s) => s,
        None => std::env::current_exe()?
            .parent()
            .ok_or("cannot locate this binary's directory")?
            .join("mcpsh"),
    };
    if !server.is_file() {
        return err(format!(
            "server binary {} not found; build it with `cargo build --release --bin mcpsh` or pass --server",
            server.display()
        ));
    }
    let calls = calls.unwrap_or(if quick { 100 } else { 1000 });
    let size = if quick { 64 * MIB } else { GIB };
    Ok(Opts {
        server: fs::canonicalize(server)?,
        calls,
        warmup: (calls / 10).clamp(20, 100),
        spool_bytes: size,
        job_bytes: size,
        page_reads: if quick { 50 } else { 300 },
        grep_bytes: size,
        read_line: if quick { 1_000_000 } else { 10_000_000 },
        login_flood: if quick { 1_000 } else { 10_000 },
        only,
        quick,
    })
}

// ---------------------------------------------------------------------------
// Temporary directory and server processes

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("mcpsh-bench-{}-{nanos:08x}", std::process::id()));
        fs::create_dir(&path)?;
        Ok(TempDir(path))
    }

    fn sub(&self, name: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A server process, stopped on drop.
struct Server {
    child: Child,
}

impl Server {
    /// `mcpsh <args>` with an isolated configuration and state directory.
    fn command(exe: &Path, state: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(exe);
        c.args(args)
            .current_dir(state)
            .env("MCPSH_STATE_DIR", state)
            // A config file that does not exist: built-in defaults only.
            .env("MCPSH_CONFIG", state.join("no-config.toml"))
            .env_remove("MCPSH_LISTEN")
            .env_remove("MCPSH_MAX_JOBS")
            .env_remove("MCPSH_JOB_OUTPUT_CAP")
            .env_remove("MCPSH_SPOOL_QUOTA")
            .env_remove("MCPSH_LOG")
            .env_remove("RUST_LOG");
        c
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `serve` arguments for a server without authentication.
const NO_AUTH: &[&str] = &["--insecure-no-auth"];

/// Start `mcpsh serve --listen 127.0.0.1:0 <serve>` (an ephemeral loopback
/// port; with OAuth unless `serve` holds `--insecure-no-auth`); returns the
/// server and its address (read from its startup line on stderr).
fn start_http(
    exe: &Path,
    state: &Path,
    serve: &[&str],
    env: &[(&str, String)],
) -> Result<(Server, SocketAddr)> {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(serve);
    let mut cmd = Server::command(exe, state, &args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let server = Server { child };
    let log_path = state.join("server.log");
    let (tx, rx) = mpsc::channel();
    // Keep draining stderr into a log so the server never blocks on it.
    thread::spawn(move || {
        let mut log = fs::File::create(log_path).ok();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("serving MCP at http://").nth(1)
                && let Some(addr) = rest.split('/').next()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.to_owned());
            }
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
        format!(
            "server did not start; see {}",
            state.join("server.log").display()
        )
    })?;
    Ok((server, addr.parse()?))
}

// ---------------------------------------------------------------------------
// JSON-RPC clients

trait Rpc {
    /// Send a request and return the matching response's `result`.
    fn request(&mut self, method: &str, params: Value) -> Result<Value>;
    fn notify(&mut self, method: &str, params: Value) -> Result<()>;

    fn initialize(&mut self) -> Result<()> {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcpsh-bench", "version": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        if r.get("serverInfo").is_none() {
            return err(format!("unexpected initialize result: {r}"));
        }
        self.notify("notifications/initialized", json!({}))
    }

    /// `tools/call`; fails on a tool error.
    fn call(&mut self, tool: &str, args: Value) -> Result<Value> {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}))?;
        if r.get("isError").and_then(Value::as_bool) == Some(true) {
            return err(format!("{tool} failed: {r}"));
        }
        Ok(r)
    }
}

fn rpc_message(id: Option<u64>, method: &str, params: Value) -> Vec<u8> {
    let mut m = json!({"jsonrpc": "2.0", "method": method, "params": params});
    if let Some(id) = id {
        m["id"] = id.into();
    }
    serde_json::to_vec(&m).expect("JSON")
}

/// The response to request `id` in `msg`, if it is one.
fn take_response(msg: Value, id: u64) -> Option<Result<Value>> {
    if msg.get("id").and_then(Value::as_u64) != Some(id) {
        return None;
    }
    Some(match (msg.get("result"), msg.get("error")) {
        (Some(r), _) => Ok(r.clone()),
        (None, Some(e)) => err(format!("JSON-RPC error: {e}")),
        _ => err(format!("malformed response: {msg}")),
    })
}

/// A minimal HTTP/1.1 client on one persistent connection.
struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    next_id: u64,
    initialized: bool,
    session: Option<String>,
    /// Connections opened (1 means the keep-alive connection was reused throughout).
    connects: u32,
    /// Events in the last response if it was an SSE stream.
    last_sse_events: Option<usize>,
    /// Sent as `Authorization: Bearer <token>` on every request.
    bearer: Option<String>,
}

struct HttpResponse {
    status: u16,
    content_type: String,
    session: Option<String>,
    /// `Location`, `Retry-After` and `Set-Cookie` (the OAuth pages).
    location: Option<String>,
    retry_after: Option<String>,
    set_cookie: Option<String>,
    body: Vec<u8>,
}

impl HttpClient {
    fn new(addr: SocketAddr) -> HttpClient {
        HttpClient {
            addr,
            conn: None,
            next_id: 1,
            initialized: false,
            session: None,
            connects: 0,
            last_sse_events: None,
            bearer: None,
        }
    }

    fn post(&mut self, body: &[u8]) -> Result<HttpResponse> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(180)))?;
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
            self.connects += 1;
        }
        let mut req = Vec::with_capacity(body.len() + 256);
        write!(
            req,
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        )?;
        if self.initialized {
            write!(req, "MCP-Protocol-Version: {PROTOCOL_VERSION}\r\n")?;
        }
        if let Some(s) = &self.session {
            write!(req, "Mcp-Session-Id: {s}\r\n")?;
        }
        if let Some(b) = &self.bearer {
            write!(req, "Authorization: Bearer {b}\r\n")?;
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut().write_all(&req)?;
        let (resp, keep) = read_response(conn)?;
        if !keep {
            self.conn = None;
        }
        if resp.session.is_some() {
            self.session.clone_from(&resp.session);
        }
        Ok(resp)
    }
}

/// Read one HTTP/1.1 response; the flag says whether the connection stays usable.
fn read_response(r: &mut impl BufRead) -> Result<(HttpResponse, bool)> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return err("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut content_type = String::new();
        let mut length = None;
        let mut chunked = false;
        let mut keep = line.starts_with("HTTP/1.1");
        let mut session = None;
        let (mut location, mut retry_after, mut set_cookie) = (None, None, None);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return err("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                return err(format!("bad header {l:?}"));
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.to_ascii_lowercase(),
                "content-length" => length = Some(v.parse::<usize>()?),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = v.to_ascii_lowercase();
                    if v.contains("close") {
                        keep = false;
                    } else if v.contains("keep-alive") {
                        keep = true;
                    }
                }
                "mcp-session-id" => session = Some(v.to_owned()),
                "location" => location = Some(v.to_owned()),
                "retry-after" => retry_after = Some(v.to_owned()),
                "set-cookie" => set_cookie = Some(v.to_owned()),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue; // informational; the real response follows
        }
        let body = if chunked {
            read_chunked(r)?
        } else if let Some(n) = length {
            let mut b = vec![0; n];
            r.read_exact(&mut b)?;
            b
        } else if status == 204 || status == 304 {
            Vec::new()
        } else {
            keep = false;
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            b
        };
        return Ok((
            HttpResponse {
                status,
                content_type,
                session,
                location,
                retry_after,
                set_cookie,
                body,
            },
            keep,
        ));
    }
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return err("connection closed in a chunked body");
        }
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return err("chunk not followed by CRLF");
        }
    }
}

/// The `data` payloads of the events in an SSE body.
fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(d);
            }
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    if let Some(d) = data {
        events.push(d);
    }
    events
}

impl Rpc for HttpClient {
    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self.post(&rpc_message(Some(id), method, params))?;
        if resp.status != 200 {
            return err(format!(
                "{method}: HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
        self.last_sse_events = None;
        let result = if resp.content_type.starts_with("text/event-stream") {
            let events = sse_events(&resp.body);
            self.last_sse_events = Some(events.len());
            events
                .into_iter()
                .filter_map(|d| serde_json::from_str::<Value>(&d).ok())
                .find_map(|m| take_response(m, id))
                .unwrap_or_else(|| err(format!("{method}: no response in the event stream")))
        } else {
            take_response(serde_json::from_slice(&resp.body)?, id)
                .unwrap_or_else(|| err(format!("{method}: response id mismatch")))
        };
        if method == "initialize" && result.is_ok() {
            self.initialized = true;
        }
        result
    }

    fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        let resp = self.post(&rpc_message(None, method, params))?;
        if !(200..300).contains(&resp.status) {
            return err(format!("{method}: HTTP {}", resp.status));
        }
        Ok(())
    }
}

/// JSON-RPC over a child's stdin/stdout, one message per line.
struct StdioClient {
    server: Server,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    line: String,
}

impl StdioClient {
    fn start(exe: &Path, state: &Path) -> Result<StdioClient> {
        let log = fs::File::create(state.join("server.log"))?;
        let mut child = Server::command(exe, state, &["stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().ok_or("no stdout")?);
        Ok(StdioClient {
            server: Server { child },
            stdin,
            stdout,
            next_id: 1,
            line: String::new(),
        })
    }

    fn send(&mut self, mut msg: Vec<u8>) -> Result<()> {
        msg.push(b'\n');
        self.stdin.write_all(&msg)?;
        self.stdin.flush()?;
        Ok(())
    }
}

impl Rpc for StdioClient {
    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(rpc_message(Some(id), method, params))?;
        loop {
            self.line.clear();
            if self.stdout.read_line(&mut self.line)? == 0 {
                return err(format!("{method}: server closed stdout"));
            }
            let msg: Value = serde_json::from_str(self.line.trim_end())?;
            if let Some(r) = take_response(msg, id) {
                return r;
            }
        }
    }

    fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        self.send(rpc_message(None, method, params))
    }
}

// ---------------------------------------------------------------------------
// Statistics and the report

/// Sorted durations.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Samples {
        v.sort_unstable();
        Samples(v)
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let n = self.0.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.0[rank.clamp(1, n) - 1]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

struct Row {
    metric: String,
    value: String,
    target: String,
    /// None: informational; Some(ok): compared against the target.
    ok: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// p50 of spawning `bash -c true` directly, in ms.
    floor: Option<f64>,
    /// (transport, p50 cost of running a command in ms).
    costs: Vec<(String, f64)>,
}

impl Report {
    fn info(&mut self, metric: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            metric: metric.into(),
            value: value.into(),
            target: String::new(),
            ok: None,
        });
    }

    fn check(
        &mut self,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        ok: bool,
    ) {
        self.rows.push(Row {
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
            ok: Some(ok),
        });
    }

    fn failed(&mut self, section: &str, e: &dyn std::fmt::Display) {
        eprintln!("  {section}: FAILED: {e}");
        self.rows.push(Row {
            metric: section.to_owned(),
            value: "FAILED".into(),
            target: String::new(),
            ok: Some(false),
        });
        self.notes.push(format!("{section}: {e}"));
    }

    fn print(&self) {
        let width = |cell: fn(&Row) -> &str, min: usize| {
            self.rows
                .iter()
                .map(|r| cell(r).len())
                .max()
                .unwrap_or(min)
                .max(min)
        };
        let w0 = width(|r| &r.metric, 6);
        let w1 = width(|r| &r.value, 5);
        let w2 = width(|r| &r.target, 6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {:w0$} | {:>w1$} | {:w2$} |    |",
            "metric", "value", "target"
        );
        let _ = writeln!(
            out,
            "|{}|{}|{}|----|",
            "-".repeat(w0 + 2),
            "-".repeat(w1 + 2),
            "-".repeat(w2 + 2)
        );
        for r in &self.rows {
            let mark = match r.ok {
                None => "  ",
                Some(true) => "ok",
                Some(false) => "!!",
            };
            let _ = writeln!(
                out,
                "| {:w0$} | {:>w1$} | {:w2$} | {mark} |",
                r.metric, r.value, r.target
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        print!("{out}");
    }
}

// ---------------------------------------------------------------------------
// 1 and 2: round trips

struct RoundTrips {
    bash: Samples,
    noop: Samples,
    /// Server-reported `duration_ms` of the `true` jobs.
    job_ms: Samples,
    /// Server CPU time per call (all threads), measured over separate runs of
    /// each call: (bash, no-op).
    cpu: Option<(Duration, Duration)>,
    /// p50 of the bash round trip over the first and the last quarter of the
    /// run: growth means per-call cost rises with the number of jobs kept.
    drift: (Duration, Duration),
}

/// On-CPU time of all of a process's live threads (`/proc/PID/task/*/schedstat`).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for t in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let s = fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// Server CPU per call over `n` back-to-back calls.
fn cpu_per_call(
    c: &mut dyn Rpc,
    pid: u32,
    n: usize,
    tool: &str,
    args: &Value,
) -> Result<Option<Duration>> {
    let Some(before) = cpu_time(pid) else {
        return Ok(None);
    };
    for _ in 0..n {
        c.call(tool, args.clone())?;
    }
    Ok(cpu_time(pid).map(|after| after.saturating_sub(before) / n as u32))
}

/// Warm up, then alternate one `bash true` and one no-op call per iteration so
/// that both see the same background load.
fn round_trips(c: &mut dyn Rpc, o: &Opts, server_pid: u32) -> Result<RoundTrips> {
    c.initialize()?;
    let bash_args = json!({"cmd": "true", "wait": 10});
    let noop_args = json!({"action": "list", "limit": 1});
    let check = |r: &Value| -> Result<u64> {
        let s = &r["structuredContent"];
        if s["status"] != "exited" || s["exit_code"] != 0 {
            return err(format!("bash true did not exit 0: {r}"));
        }
        Ok(s["duration_ms"].as_u64().unwrap_or(0))
    };
    for _ in 0..o.warmup {
        check(&c.call("bash", bash_args.clone())?)?;
        c.call("job", noop_args.clone())?;
    }
    let mut bash = Vec::with_capacity(o.calls);
    let mut noop = Vec::with_capacity(o.calls);
    let mut job_ms = Vec::with_capacity(o.calls);
    for i in 0..o.calls {
        // Alternate the order too, so neither call always follows the other.
        for first in [i % 2 == 0, i % 2 != 0] {
            if first {
                let t = Instant::now();
                let r = c.call("bash", bash_args.clone())?;
                bash.push(t.elapsed());
                job_ms.push(Duration::from_millis(check(&r)?));
            } else {
                let t = Instant::now();
                c.call("job", noop_args.clone())?;
                noop.push(t.elapsed());
            }
        }
    }
    let n = o.calls.min(300);
    let cpu = match (
        cpu_per_call(c, server_pid, n, "bash", &bash_args)?,
        cpu_per_call(c, server_pid, n, "job", &noop_args)?,
    ) {
        (Some(b), Some(n)) => Some((b, n)),
        _ => None,
    };
    let q = (bash.len() / 4).max(1);
    let drift = (
        Samples::new(bash[..q].to_vec()).pct(50.0),
        Samples::new(bash[bash.len() - q..].to_vec()).pct(50.0),
    );
    Ok(RoundTrips {
        drift,
        bash: Samples::new(bash),
        noop: Samples::new(noop),
        job_ms: Samples::new(job_ms),
        cpu,
    })
}

fn report_round_trips(rep: &mut Report, transport: &str, rt: &RoundTrips, n: usize) {
    let p = |s: &Samples| format!("{:.3} / {:.3} ms", ms(s.pct(50.0)), ms(s.pct(99.0)));
    rep.info(
        format!("{transport}: bash `true` p50 / p99 (n={n})"),
        p(&rt.bash),
    );
    rep.info(
        format!("{transport}: no-op job list p50 / p99 (n={n})"),
        p(&rt.noop),
    );
    let cost = ms(rt.bash.pct(50.0)) - ms(rt.noop.pct(50.0));
    rep.costs.push((transport.to_owned(), cost));
    rep.check(
        format!("{transport}: cost of running a command (p50 diff)"),
        format!("{cost:.3} ms"),
        "<= 1.0 ms",
        cost <= 1.0,
    );
    rep.info(
        format!("{transport}: server-reported job duration p50"),
        format!("{:.0} ms", ms(rt.job_ms.pct(50.0))),
    );
    rep.info(
        format!("{transport}: bash p50, first / last quarter of the run"),
        format!("{:.3} / {:.3} ms", ms(rt.drift.0), ms(rt.drift.1)),
    );
    if let Some((b, n)) = rt.cpu {
        rep.info(
            format!("{transport}: server CPU per call, bash / no-op"),
            format!("{:.3} / {:.3} ms", ms(b), ms(n)),
        );
    }
}

/// The floor under a `bash {cmd:"true"}` call: spawn the process the server
/// runs for it the way a supervisor does (stdin /dev/null, stdout+stderr on a
/// pipe read to EOF, own process group) and reap it. A plain-word command is
/// exec'd directly, so that process is `true` itself; `bash -c true` (what
/// any command with shell syntax costs) is shown too.
fn bench_floor(rep: &mut Report, o: &Opts, _tmp: &TempDir) -> Result<()> {
    let shell = ["/bin/bash", "/usr/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no shell found")?;
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no true binary found")?;
    let run = |argv: &[&str]| -> Result<Duration> {
        let t = Instant::now();
        let (mut read, write) = std::io::pipe()?;
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(write.try_clone()?)
            .stderr(write)
            .process_group(0)
            .spawn()?;
        let mut sink = Vec::new();
        read.read_to_end(&mut sink)?;
        if !child.wait()?.success() {
            return err(format!("{argv:?} failed"));
        }
        Ok(t.elapsed())
    };
    for (argv, is_floor) in [(vec![true_bin], true), (vec![shell, "-c", "true"], false)] {
        for _ in 0..o.warmup {
            run(&argv)?;
        }
        let mut v = Vec::with_capacity(o.calls);
        for _ in 0..o.calls {
            v.push(run(&argv)?);
        }
        let s = Samples::new(v);
        if is_floor {
            rep.floor = Some(ms(s.pct(50.0)));
        }
        rep.info(
            format!(
                "floor: spawn + reap `{}` directly, p50 / p99",
                argv.join(" ")
            ),
            format!("{:.3} / {:.3} ms", ms(s.pct(50.0)), ms(s.pct(99.0))),
        );
    }
    Ok(())
}

fn bench_http(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let state = tmp.sub("http")?;
    let (server, addr) = start_http(&o.server, &state, NO_AUTH, &[])?;
    let mut c = HttpClient::new(addr);
    let rt = round_trips(&mut c, o, server.pid())?;
    report_round_trips(rep, "HTTP", &rt, o.calls);
    // A call that streams progress comes back as SSE on the same connection.
    let r = c.request(
        "tools/call",
        json!({
            "name": "bash",
            "arguments": {"cmd": "sleep 2.2; echo done", "wait": 10},
            "_meta": {"progressToken": "bench"},
        }),
    )?;
    if r["structuredContent"]["output"] != "done\n" {
        return err(format!("progress call returned {r}"));
    }
    match c.last_sse_events {
        Some(n) => rep.notes.push(format!(
            "HTTP: a bash call with a progressToken answered as SSE ({n} events), parsed on the keep-alive connection"
        )),
        None => rep.notes.push(
            "HTTP: a bash call with a progressToken answered as plain JSON (no SSE)".into(),
        ),
    }
    if c.connects != 1 {
        rep.notes.push(format!(
            "HTTP: the server closed the keep-alive connection; {} connections were used",
            c.connects
        ));
    }
    Ok(())
}

fn bench_stdio(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let state = tmp.sub("stdio")?;
    let mut c = StdioClient::start(&o.server, &state)?;
    let pid = c.server.pid();
    let rt = round_trips(&mut c, o, pid)?;
    report_round_trips(rep, "stdio", &rt, o.calls);
    // Closing stdin ends the session; the server exits on its own.
    let StdioClient { server, stdin, .. } = c;
    drop(stdin);
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 3 and 4: spool

const LINE: &[u8; 100] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789012345678\n";

/// 100-byte lines, enough for a 64 KiB chunk starting anywhere in a line.
fn line_source() -> Vec<u8> {
    LINE.iter()
        .copied()
        .cycle()
        .take(64 * KIB as usize + LINE.len())
        .collect()
}

fn bench_spool(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let dir = tmp.sub("spool")?;
    let source = line_source();
    let chunk_len = 64 * KIB;
    let total = o.spool_bytes;
    let size = format!("{:.0} MiB", mib(total));

    let t = Instant::now();
    let mut w = SpoolWriter::new(&dir, SEGMENT, 2 * total);
    let mut written = 0;
    while written < total {
        let n = (total - written).min(chunk_len) as usize;
        let at = (written % LINE.len() as u64) as usize;
        w.write(&source[at..at + n])?;
        written += n as u64;
    }
    drop(w);
    let secs = t.elapsed().as_secs_f64();
    rep.info(
        format!("spool write {size} in 64 KiB chunks"),
        format!("{:.0} MiB/s", mib(total) / secs),
    );

    let probe = SpoolReader::open(&dir)?;
    if probe.len() != total || probe.dropped().is_some() {
        return err(format!(
            "spool reads back {} bytes (dropped {:?}), wrote {total}",
            probe.len(),
            probe.dropped()
        ));
    }
    drop(probe);
    let mid = (total / 2) | 12345; // not line- or segment-aligned
    let end = total.saturating_sub(PAGE as u64 / 2);
    let mut worst: Option<(String, Duration)> = None;
    for (name, offset) in [("start", 0), ("middle", mid), ("end", end)] {
        let mut times = Vec::with_capacity(o.page_reads);
        for _ in 0..o.page_reads {
            let t = Instant::now();
            let r = SpoolReader::open(&dir)?;
            let p = output::page(&r, offset, PAGE)?;
            times.push(t.elapsed());
            if p.text.is_empty() || p.text.len() > PAGE {
                return err(format!("page at {offset} returned {} bytes", p.text.len()));
            }
        }
        let s = Samples::new(times);
        let med = s.pct(50.0);
        rep.check(
            format!("page read (open + 16 KiB page) at {name} of {size}, median"),
            format!("{:.3} ms", ms(med)),
            "<= 10 ms",
            ms(med) <= 10.0,
        );
        if worst.as_ref().is_none_or(|(_, w)| s.pct(99.0) > *w) {
            worst = Some((name.to_owned(), s.pct(99.0)));
        }
    }
    if let Some((name, d)) = worst {
        rep.info(
            format!("page read worst p99 (at {name}, n={})", o.page_reads),
            format!("{:.3} ms", ms(d)),
        );
    }

    // What `bash` returns when a job ends: a head+tail excerpt and the line count.
    let mut times = Vec::with_capacity(o.page_reads);
    for _ in 0..o.page_reads {
        let t = Instant::now();
        let r = SpoolReader::open(&dir)?;
        let e = output::excerpt(&r, PAGE)?;
        let lines = r.total_lines()?;
        times.push(t.elapsed());
        if e.omitted.is_none() || lines != total.div_ceil(100) {
            return err(format!(
                "excerpt of {size}: omitted {:?}, {lines} lines",
                e.omitted
            ));
        }
    }
    rep.info(
        format!("excerpt (open + head/tail 16 KiB + line count) of {size}, median"),
        format!("{:.3} ms", ms(Samples::new(times).pct(50.0))),
    );
    fs::remove_dir_all(&dir)?;
    rep.notes.push(
        "spool numbers are with a warm page cache (the spool was just written); no fsync".into(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 5: memory while a job writes a lot

/// VmRSS and VmHWM of a process, in bytes.
fn mem(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = l[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * KIB)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn ppid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields follow the last ')'.
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn is_zygote_image(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).nth(1) == Some(b"__zygote"))
        .unwrap_or(false)
}

/// Direct children of `parent` whose command line is `mcpsh __zygote`.
fn zygote_children(parent: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ppid(pid) == Some(parent) && is_zygote_image(pid))
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Peaks {
    server_rss: u64,
    zygote_rss: u64,
    /// Largest VmRSS and VmHWM seen for any supervisor (forked from the zygote).
    supervisor_rss: u64,
    supervisor_hwm: u64,
    supervisors_seen: usize,
    /// Largest VmRSS of the `also` process given to [`sample_memory`].
    also_rss: u64,
    samples: usize,
}

/// Sample the server, its zygote and the zygote's children (and the process
/// `also`, if given) every ~20 ms until `stop`.
fn sample_memory(
    server: u32,
    also: Option<u32>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Peaks> {
    thread::spawn(move || {
        let mut p = Peaks::default();
        let mut zygote = None;
        let mut seen = std::collections::HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some((rss, _)) = mem(server) {
                p.server_rss = p.server_rss.max(rss);
            }
            if let Some((rss, _)) = also.and_then(mem) {
                p.also_rss = p.also_rss.max(rss);
            }
            if zygote.is_none() {
                zygote = zygote_children(server).first().copied();
            }
            if let Some(z) = zygote {
                if let Some((rss, _)) = mem(z) {
                    p.zygote_rss = p.zygote_rss.max(rss);
                }
                for s in zygote_children(z) {
                    if let Some((rss, hwm)) = mem(s) {
                        p.supervisor_rss = p.supervisor_rss.max(rss);
                        p.supervisor_hwm = p.supervisor_hwm.max(hwm);
                        seen.insert(s);
                    }
                }
            }
            p.samples += 1;
            thread::sleep(Duration::from_millis(20));
        }
        p.supervisors_seen = seen.len();
        p
    })
}

fn bench_memory(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let state = tmp.sub("rss")?;
    let cap = (2 * o.job_bytes).max(256 * MIB);
    let (server, addr) = start_http(
        &o.server,
        &state,
        NO_AUTH,
        &[
            ("MCPSH_JOB_OUTPUT_CAP", cap.to_string()),
            ("MCPSH_SPOOL_QUOTA", (2 * cap).to_string()),
        ],
    )?;
    let pid = server.pid();
    let mut c = HttpClient::new(addr);
    c.initialize()?;
    // Warm the server (first job, zygote) before taking the baseline.
    c.call("bash", json!({"cmd": "true"}))?;
    let baseline = mem(pid).ok_or("cannot read the server's /proc status")?.0;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(pid, None, stop.clone());
    let size = format!("{:.0} MiB", mib(o.job_bytes));
    let cmd = format!(
        "yes {} | head -c {}",
        std::str::from_utf8(&LINE[..LINE.len() - 1])?,
        o.job_bytes
    );
    let t = Instant::now();
    let run = (|| -> Result<Value> {
        let mut r = c.call(
            "bash",
            json!({"cmd": cmd, "wait": 50, "title": "bench-output"}),
        )?;
        let id = r["structuredContent"]["job"]
            .as_str()
            .ok_or("bash returned no job id")?
            .to_owned();
        while r["structuredContent"]["status"] == "running" {
            if t.elapsed() > Duration::from_secs(600) {
                return err("the output job did not finish in 10 minutes");
            }
            r = c.call(
                "job",
                json!({"action": "poll", "id": id, "wait": 30, "max_output": 256}),
            )?;
        }
        Ok(r)
    })();
    let elapsed = t.elapsed();
    // Let the sampler see the settled state after the job.
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().map_err(|_| "sampler panicked")?;
    let hwm = mem(pid).map(|m| m.1).unwrap_or(0);
    let r = run?;
    let s = &r["structuredContent"];
    if s["status"] != "exited"
        || s["exit_code"] != 0
        || s["total_bytes"] != o.job_bytes
        || !s["dropped"].is_null()
    {
        return err(format!(
            "output job ended as {} (exit {}, {} bytes of {}, dropped {})",
            s["status"], s["exit_code"], s["total_bytes"], o.job_bytes, s["dropped"]
        ));
    }
    drop(server);

    let peak = peaks.server_rss.max(hwm);
    rep.info(
        format!("job writing {size}: wall time (bash wait=50 + polls)"),
        format!(
            "{:.2} s ({:.0} MiB/s)",
            elapsed.as_secs_f64(),
            mib(o.job_bytes) / elapsed.as_secs_f64()
        ),
    );
    rep.info(
        "server RSS before the job (warm)",
        format!("{:.1} MiB", mib(baseline)),
    );
    rep.check(
        format!("server peak RSS during the {size} job (VmHWM)"),
        format!("{:.1} MiB", mib(peak)),
        "<= 64 MiB",
        mib(peak) <= 64.0,
    );
    rep.info(
        format!(
            "server peak VmRSS sampled every 20 ms (n={})",
            peaks.samples
        ),
        format!("{:.1} MiB", mib(peaks.server_rss)),
    );
    if peaks.supervisors_seen > 0 {
        rep.info(
            "supervisor peak RSS (VmHWM; forked from the zygote)",
            format!(
                "{:.1} MiB",
                mib(peaks.supervisor_hwm.max(peaks.supervisor_rss))
            ),
        );
    } else {
        rep.notes
            .push("no supervisor process was sampled (the job ended between samples?)".into());
    }
    rep.info(
        "zygote peak VmRSS",
        format!("{:.1} MiB", mib(peaks.zygote_rss)),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 6: file grep against ripgrep

/// The identifier planted in a few files of the generated tree.
const RARE: &str = "zq_rare_marker";

/// Deterministic xorshift64* numbers.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

const WORDS: &[&str] = &[
    "let",
    "mut",
    "self",
    "fn",
    "return",
    "match",
    "impl",
    "pub",
    "struct",
    "if",
    "else",
    "for",
    "in",
    "while",
    "Some(value)",
    "None",
    "Ok(())",
    "Err(e)",
    "buffer",
    "len",
    "config",
    "path",
    "request",
    "response",
    "handle",
    "value",
    "index",
    "count",
    "error",
    "result",
    "String",
    "Vec<u8>",
    "u64",
    "usize",
    "into()",
    "from",
    "clone()",
    "iter()",
    "map(|x|",
    "collect()",
    "unwrap_or_default()",
    "&",
    "=",
    "==",
    "+",
    "->",
    "=>",
    "{",
    "}",
    ";",
    "//",
    "0",
    "1",
    "42",
    "\"text\"",
    "self.state",
    "Option<&str>",
    "Result<(), Error>",
    "as_bytes()",
    "await?",
];

/// Source-like lines (indentation, 3 to 12 tokens) until `out` holds `len` bytes.
fn source_text(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    out.clear();
    while out.len() < len {
        out.resize(out.len() + 4 * rng.below(4), b' ');
        for i in 0..3 + rng.below(10) {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
        out.push(b'\n');
    }
}

/// About 20,000 files per GiB (52 KiB on average) in 20 x 20 directories,
/// `RARE` on one line of about 8 files spread over the tree. Returns (files,
/// bytes, planted).
fn make_tree(dir: &Path, bytes: u64) -> Result<(u64, u64, u64)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let avg = 52 * KIB as usize;
    let (mut files, mut total, mut planted) = (0u64, 0u64, 0u64);
    let stride = (bytes / avg as u64 / 8).max(1);
    let mut buf = Vec::with_capacity(2 * avg);
    while total < bytes {
        let sub = dir.join(format!("d{:02}/m{:02}", files / 1000 % 20, files / 50 % 20));
        if files % 50 == 0 {
            fs::create_dir_all(&sub)?;
        }
        let len = avg / 2 + rng.below(avg);
        source_text(&mut rng, len, &mut buf);
        if files % stride == stride / 2 {
            let at = buf.len() / 2;
            let at = at
                + buf[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
            let line = format!("    let {RARE} = self.state;\n");
            buf.splice(at..at, line.bytes());
            planted += 1;
        }
        fs::write(sub.join(format!("f{files:05}.rs")), &buf)?;
        files += 1;
        total += buf.len() as u64;
    }
    Ok((files, total, planted))
}

/// How long `f` took.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

fn bench_grep(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let dir = tmp.sub("grep")?;
    let t = Instant::now();
    let (files, bytes, planted) = make_tree(&dir, o.grep_bytes)?;
    // Write the tree back now, so that writeback does not compete with the
    // first timed runs.
    rustix::fs::sync();
    let size = format!("{:.0} MiB in {files} files", mib(bytes));
    rep.info(
        format!("grep tree: {size}, generated"),
        format!("{:.1} s", t.elapsed().as_secs_f64()),
    );

    let scope = Scope::unconfined(dir.clone());
    let opts = GrepOptions {
        // What rg does without flags (Smart would search case-insensitively
        // here, which is slower for both).
        case: Case::Sensitive,
        ..GrepOptions::new(RARE)
    };
    let ours = || -> Result<()> {
        let r = grep::grep(&scope, &dir, &opts, PAGE)?;
        if r.total_matches != planted
            || r.matches.len() as u64 != planted
            || r.files_searched != files
        {
            return err(format!(
                "grep found {} matches ({} on the page) in {} files searched; planted {planted} in {files}",
                r.total_matches,
                r.matches.len(),
                r.files_searched
            ));
        }
        Ok(())
    };
    let rg = || -> Result<()> {
        let out = Command::new("rg")
            .args(["--no-config", "-c", "--", RARE])
            .arg(&dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return err(format!("rg exited with {}", out.status));
        }
        let found: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.parse::<u64>().ok())
            .sum();
        if found != planted {
            return err(format!("rg found {found} matches, planted {planted}"));
        }
        Ok(())
    };
    // Peak memory of our grep, from a process that has not run it yet:
    // reset this process's VmHWM to its current RSS first.
    let rss0 = mem(std::process::id()).map_or(0, |m| m.0);
    let reset = fs::write("/proc/self/clear_refs", "5").is_ok();
    // One warm-up each, then alternate so that both see the same machine.
    ours()?;
    let have_rg = match rg() {
        Ok(()) => true,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            rep.notes.push(
                "rg not found: `apt-get install ripgrep` to compare file grep with it".into(),
            );
            false
        }
        Err(e) => return Err(e),
    };
    let (mut mine, mut theirs) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        mine = mine.min(timed(ours)?.0);
        if have_rg {
            theirs = theirs.min(timed(rg)?.0);
        }
    }
    // rg runs in its own process, so this is ours alone.
    let growth = mem(std::process::id())
        .filter(|_| reset)
        .map(|(_, hwm)| hwm.saturating_sub(rss0));
    rep.info(
        format!("file grep {size}: library call, best of 3"),
        format!(
            "{:.3} s ({:.0} MiB/s)",
            mine.as_secs_f64(),
            mib(bytes) / mine.as_secs_f64()
        ),
    );
    match growth {
        Some(g) => rep.check(
            "file grep: bench process VmHWM growth",
            format!("{:.1} MiB", mib(g)),
            "<= 32 MiB",
            mib(g) <= 32.0,
        ),
        None => rep
            .notes
            .push("cannot reset VmHWM (/proc/self/clear_refs): grep memory not measured".into()),
    }
    if have_rg {
        rep.info(
            "rg --no-config -c over the same tree, best of 3",
            format!(
                "{:.3} s ({:.0} MiB/s)",
                theirs.as_secs_f64(),
                mib(bytes) / theirs.as_secs_f64()
            ),
        );
        let ratio = theirs.as_secs_f64() / mine.as_secs_f64();
        rep.check(
            "file grep speed relative to rg (rg time / ours)",
            format!("{ratio:.2}x"),
            ">= 0.8x rg",
            ratio >= 0.8,
        );
    }
    rep.notes.push(
        "file grep: warm page cache (the tree was just written and synced), runs alternate with rg"
            .into(),
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `file action=read` deep in a large file, through a server: the first page
/// at the target line (which builds the line index), then warm pages near
/// it; and the server's peak RSS across those reads and a `file grep` of the
/// whole file.
fn bench_file_read(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let dir = tmp.sub("read")?;
    let path = dir.join("big.log");
    let lines = o.read_line + o.read_line / 20;
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&path)?);
        for i in 1..=lines {
            writeln!(f, "line {i:>9} of a large log file, with some text")?;
        }
        f.flush()?;
    }
    let size = fs::metadata(&path)?.len();
    let state = tmp.sub("read-state")?;
    let (server, addr) = start_http(&o.server, &state, NO_AUTH, &[])?;
    let mut c = HttpClient::new(addr);
    c.initialize()?;
    let target = o.read_line;
    let mut page = |line: u64| -> Result<Duration> {
        let args = json!({"action": "read", "path": path, "offset": line, "limit": 50});
        let (d, r) = timed(|| c.call("file", args))?;
        let want = format!("{line:>6}\tline {line:>9} of");
        let text = r["structuredContent"]["content"]
            .as_str()
            .unwrap_or_default();
        if !text.starts_with(&want) {
            return err(format!(
                "page at line {line} starts {:?}",
                &text[..text.len().min(60)]
            ));
        }
        Ok(d)
    };
    let cold = page(target)?;
    let mut rng = Rng(7);
    let warm: Vec<Duration> = (0..o.page_reads)
        .map(|_| page(target - rng.below(100_000) as u64))
        .collect::<Result<_>>()?;
    let warm = Samples::new(warm);
    let (d, r) = timed(|| {
        c.call(
            "file",
            json!({"action": "grep", "path": dir, "fixed": true,
                   "pattern": format!("line {:>9} of", target - 1)}),
        )
    })?;
    if r["structuredContent"]["total_matches"].as_u64() != Some(1) {
        return err(format!(
            "grep of the large file returned {}",
            r["structuredContent"]
        ));
    }
    let hwm = mem(server.pid()).map_or(0, |m| m.1);
    let what = format!("{:.0} MiB, {lines} lines", mib(size));
    rep.info(
        format!("file read at line {target} of {what}: first call (builds the index)"),
        format!("{:.1} ms", ms(cold)),
    );
    rep.check(
        format!(
            "file read near line {target}, indexed, p50 / p99 (n={})",
            o.page_reads
        ),
        format!("{:.2} / {:.2} ms", ms(warm.pct(50.0)), ms(warm.pct(99.0))),
        "<= 20 ms",
        ms(warm.pct(50.0)) <= 20.0,
    );
    rep.info(
        format!(
            "file grep of the {:.0} MiB file through the server",
            mib(size)
        ),
        format!("{:.0} ms", ms(d)),
    );
    rep.check(
        "server peak RSS across file reads and grep (VmHWM)",
        format!("{:.1} MiB", mib(hwm)),
        "<= 64 MiB",
        mib(hwm) <= 64.0,
    );
    drop(server);
    fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// 7: auth

/// The user the auth section creates, and its password (>= 12 characters).
const AUTH_USER: &str = "owner";
const AUTH_PASSWORD: &str = "bench-owner-password-0";
const WRONG_PASSWORD: &str = "not-the-password-0";
/// The redirect URI the bench registers; nothing listens there, the code is
/// read from the `Location` header.
const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";
/// Longest the login flood may take.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);
/// Connections (each with its own thread and form token chain) in the flood.
const FLOOD_CONNS: usize = 4;

/// `mcpsh <args>` against `state`, `stdin` on its stdin; its stdout.
fn run_cli(exe: &Path, state: &Path, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Server::command(exe, state, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return err(format!(
            "mcpsh {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Create the bench's user in `state`.
fn create_user(exe: &Path, state: &Path) -> Result<()> {
    run_cli(
        exe,
        state,
        &["set-auth", AUTH_USER, "--password-stdin"],
        &format!("{AUTH_PASSWORD}\n"),
    )?;
    Ok(())
}

/// A TCP connection to `addr`, from `source` (any 127/8 address on
/// loopback) if given.
fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let Some(ip) = source else {
        return Ok(TcpStream::connect(addr)?);
    };
    let family = if ip.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &SocketAddr::new(ip, 0))?;
    rustix::net::connect(&fd, &addr)?;
    Ok(TcpStream::from(fd))
}

/// Requests to the OAuth endpoints on one keep-alive connection, from a
/// chosen source address.
struct Web {
    addr: SocketAddr,
    source: Option<IpAddr>,
    conn: Option<BufReader<TcpStream>>,
}

impl Web {
    fn new(addr: SocketAddr, source: Option<IpAddr>) -> Web {
        Web {
            addr,
            source,
            conn: None,
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        if self.conn.is_none() {
            let s = connect_from(self.addr, self.source)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.conn = Some(BufReader::with_capacity(16 * 1024, s));
        }
        let mut req = Vec::with_capacity(body.len() + 256);
        write!(req, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr)?;
        if method != "GET" {
            write!(req, "Content-Length: {}\r\n", body.len())?;
        }
        for (k, v) in headers {
            write!(req, "{k}: {v}\r\n")?;
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut().write_all(&req)?;
        let (resp, keep) = read_response(conn)?;
        if !keep {
            self.conn = None;
        }
        Ok(resp)
    }

    /// Register a client and return the path of its authorization request.
    fn authorize_path(&mut self) -> Result<String> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let meta = json!({"redirect_uris": [REDIRECT_URI], "client_name": "mcpsh-bench"});
        let r = self.send(
            "POST",
            "/register",
            &[("Content-Type", "application/json")],
            &serde_json::to_vec(&meta)?,
        )?;
        if r.status != 201 {
            return err(format!(
                "POST /register: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let v: Value = serde_json::from_slice(&r.body)?;
        let client_id = v["client_id"]
            .as_str()
            .ok_or_else(|| format!("no client_id in {v}"))?;
        let verifier = "mcpsh-bench-pkce-verifier-0123456789-abcdefghijklmnop";
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "x")
            .finish();
        Ok(format!("/authorize?{query}"))
    }

    /// GET the login page: a fresh form token.
    fn login_page(&mut self, path: &str) -> Result<LoginToken> {
        let r = self.send("GET", path, &[], b"")?;
        if r.status != 200 {
            return err(format!(
                "GET /authorize: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        LoginToken::from_page(&r).ok_or_else(|| "no form token on the login page".into())
    }

    /// POST the login form as the bench's user with `password`.
    fn login(&mut self, token: &LoginToken, password: &str) -> Result<HttpResponse> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &token.csrf)
            .append_pair("username", AUTH_USER)
            .append_pair("password", password)
            .append_pair("decision", "allow")
            .finish();
        self.send(
            "POST",
            "/authorize",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &token.cookie),
            ],
            body.as_bytes(),
        )
    }
}

/// A login page's single-use form token and the cookie that doubles it.
struct LoginToken {
    csrf: String,
    /// `mcpsh_csrf=TOKEN`, as the `Cookie` header sends it back.
    cookie: String,
}

impl LoginToken {
    /// The token of a login page (every answer to a login carries the next).
    fn from_page(r: &HttpResponse) -> Option<LoginToken> {
        let body = std::str::from_utf8(&r.body).ok()?;
        let csrf = body.split("name=csrf value=\"").nth(1)?.split('"').next()?;
        let cookie = r.set_cookie.as_deref()?.split(';').next()?.trim();
        (!csrf.is_empty() && cookie.starts_with("mcpsh_csrf=")).then(|| LoginToken {
            csrf: csrf.to_owned(),
            cookie: cookie.to_owned(),
        })
    }
}

/// What one flood connection saw.
#[derive(Default)]
struct Flood {
    sent: u64,
    unauthorized: u64,
    throttled: u64,
    /// Any other status, and the last one seen.
    other: u64,
    other_status: Option<u16>,
    /// Round trip of each 429 answer.
    throttled_rtt: Vec<Duration>,
}

/// Post wrong-password logins on one connection, each with the form token
/// the previous answer carried, until `total` have been claimed across all
/// connections or `deadline` passes.
fn flood_conn(
    addr: SocketAddr,
    path: &str,
    claimed: &AtomicU64,
    answered: &AtomicU64,
    total: u64,
    deadline: Instant,
) -> Result<Flood> {
    let mut web = Web::new(addr, None);
    let mut f = Flood::default();
    let mut next = None;
    while Instant::now() < deadline {
        let token = match next.take() {
            Some(t) => t,
            None => web.login_page(path)?,
        };
        if claimed.fetch_add(1, Ordering::Relaxed) >= total {
            break;
        }
        let t = Instant::now();
        let r = web.login(&token, WRONG_PASSWORD)?;
        let rtt = t.elapsed();
        answered.fetch_add(1, Ordering::Relaxed);
        f.sent += 1;
        match r.status {
            401 => f.unauthorized += 1,
            429 => {
                if r.retry_after.is_none() {
                    return err("a 429 answer without Retry-After");
                }
                f.throttled += 1;
                f.throttled_rtt.push(rtt);
            }
            s => {
                f.other += 1;
                f.other_status = Some(s);
            }
        }
        next = LoginToken::from_page(&r);
    }
    Ok(f)
}

/// The owner's login from 127.0.0.2 once `half` flood answers are in (or
/// the flood ended): GET the login page, POST the right password, expect a
/// 302 with a code. Returns the time and the flood answers before and after.
fn owner_login(
    addr: SocketAddr,
    path: &str,
    answered: &AtomicU64,
    flood_over: &AtomicBool,
    half: u64,
) -> Result<(Duration, u64, u64)> {
    while answered.load(Ordering::Relaxed) < half && !flood_over.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(1));
    }
    let before = answered.load(Ordering::Relaxed);
    let mut web = Web::new(addr, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    let t = Instant::now();
    let token = web.login_page(path)?;
    let r = web.login(&token, AUTH_PASSWORD)?;
    let d = t.elapsed();
    let after = answered.load(Ordering::Relaxed);
    if r.status != 302 || !r.location.as_deref().is_some_and(|l| l.contains("code=")) {
        return err(format!(
            "owner login from 127.0.0.2: HTTP {} (Location {:?})",
            r.status, r.location
        ));
    }
    Ok((d, before, after))
}

/// Login throttling under a flood of wrong passwords from one source while
/// the owner logs in from another, then the cost of a bearer token on `/mcp`.
fn bench_auth(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let state = tmp.sub("auth-flood")?;
    create_user(&o.server, &state)?;
    let (server, addr) = start_http(&o.server, &state, &[], &[])?;
    let path = Web::new(addr, None).authorize_path()?;
    let total = o.login_flood;
    let claimed = AtomicU64::new(0);
    let answered = AtomicU64::new(0);
    let flood_over = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + FLOOD_LIMIT;
    // Errors cross the threads as strings (the boxed error is not Send).
    let (floods, owner, elapsed) = thread::scope(|s| {
        let owner = s.spawn(|| {
            owner_login(addr, &path, &answered, &flood_over, total / 2).map_err(|e| e.to_string())
        });
        let conns: Vec<_> = (0..FLOOD_CONNS)
            .map(|_| {
                s.spawn(|| {
                    flood_conn(addr, &path, &claimed, &answered, total, deadline)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let floods: Vec<std::result::Result<Flood, String>> = conns
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("flood thread panicked".into()))
            })
            .collect();
        let elapsed = start.elapsed();
        flood_over.store(true, Ordering::Relaxed);
        let owner = owner
            .join()
            .unwrap_or_else(|_| Err("owner login thread panicked".into()));
        (floods, owner, elapsed)
    });
    let (owner_time, owner_from, owner_to) = owner?;
    let mut f = Flood::default();
    for one in floods {
        let one = one?;
        f.sent += one.sent;
        f.unauthorized += one.unauthorized;
        f.throttled += one.throttled;
        f.other += one.other;
        f.other_status = one.other_status.or(f.other_status);
        f.throttled_rtt.extend(one.throttled_rtt);
    }
    drop(server);
    let (mut hashed_fail, mut hashed_ok) = (0u64, 0u64);
    for line in run_cli(&o.server, &state, &["audit", "--json", "-n", "100000"], "")?.lines() {
        let row: Value = serde_json::from_str(line)?;
        match row["event"].as_str() {
            Some("login_fail") => hashed_fail += 1,
            Some("login_ok") => hashed_ok += 1,
            _ => {}
        }
    }
    if hashed_ok != 1 {
        return err(format!(
            "{hashed_ok} login_ok rows in the audit log, expected 1"
        ));
    }
    let rtt = Samples::new(f.throttled_rtt);
    rep.info(
        format!("auth flood: wrong-password logins from 127.0.0.1 ({FLOOD_CONNS} connections)"),
        format!(
            "{} in {:.1} s ({:.0}/s)",
            f.sent,
            elapsed.as_secs_f64(),
            f.sent as f64 / elapsed.as_secs_f64()
        ),
    );
    let other = match f.other_status {
        Some(s) => format!(" / {} (HTTP {s})", f.other),
        None => String::new(),
    };
    rep.info(
        format!(
            "auth flood: answers 429 / 401{}",
            if other.is_empty() { "" } else { " / other" }
        ),
        format!("{} / {}{other}", f.throttled, f.unauthorized),
    );
    rep.info(
        format!("auth flood: 429 answer p50 / p99 (n={})", f.throttled),
        format!("{:.3} / {:.3} ms", ms(rtt.pct(50.0)), ms(rtt.pct(99.0))),
    );
    rep.check(
        "auth flood: password checks that reached the hasher (login_fail rows)",
        hashed_fail.to_string(),
        "<= 50",
        hashed_fail <= 50,
    );
    rep.check(
        format!(
            "auth flood: owner login from 127.0.0.2, GET + POST -> 302 (flood answers {owner_from}..{owner_to})"
        ),
        format!("{:.1} ms", ms(owner_time)),
        "<= 1000 ms",
        owner_time <= Duration::from_secs(1),
    );
    if f.sent < total {
        rep.notes.push(format!(
            "auth flood: stopped after {} s with {} of {total} attempts sent",
            FLOOD_LIMIT.as_secs(),
            f.sent
        ));
    }
    bearer_overhead(rep, o, tmp)
}

/// `/mcp` round trips with a valid bearer token against a server without
/// auth, calls interleaved so that both see the same load.
fn bearer_overhead(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let on = tmp.sub("auth-bearer")?;
    create_user(&o.server, &on)?;
    let token = run_cli(
        &o.server,
        &on,
        &[
            "token",
            "create",
            "--name",
            "bench",
            "--scope",
            "exec,files:read",
            "--user",
            AUTH_USER,
        ],
        "",
    )?
    .trim()
    .to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return err(format!("token create printed {token:?}"));
    }
    let off = tmp.sub("auth-none")?;
    let (s_on, addr_on) = start_http(&o.server, &on, &[], &[])?;
    let (s_off, addr_off) = start_http(&o.server, &off, NO_AUTH, &[])?;
    let pids = [s_on.pid(), s_off.pid()];
    match HttpClient::new(addr_on).initialize() {
        Err(e) if e.to_string().contains("HTTP 401") => {}
        Err(e) => return Err(e),
        Ok(()) => return err("the OAuth server answered /mcp without a bearer token"),
    }
    let mut clients = [HttpClient::new(addr_on), HttpClient::new(addr_off)];
    clients[0].bearer = Some(token);
    let bash_args = json!({"cmd": "true", "wait": 10});
    let noop_args = json!({"action": "list", "limit": 1});
    let calls = [("job", &noop_args), ("bash", &bash_args)];
    let one = |c: &mut HttpClient, call: usize| -> Result<Duration> {
        let (tool, args) = calls[call];
        let t = Instant::now();
        let r = c.call(tool, args.clone())?;
        let d = t.elapsed();
        if tool == "bash" && r["structuredContent"]["exit_code"] != 0 {
            return err(format!("bash true did not exit 0: {r}"));
        }
        Ok(d)
    };
    for c in &mut clients {
        c.initialize()?;
    }
    for _ in 0..o.warmup {
        for c in &mut clients {
            one(c, 0)?;
            one(c, 1)?;
        }
    }
    // samples[server][call]; alternate which server and which call go first.
    let mut samples: [[Vec<Duration>; 2]; 2] = Default::default();
    for i in 0..o.calls {
        let servers = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        let order = if i % 4 < 2 { [0, 1] } else { [1, 0] };
        for call in order {
            for s in servers {
                samples[s][call].push(one(&mut clients[s], call)?);
            }
        }
    }
    // Server CPU per call (less sensitive to load than the round trip):
    // back-to-back runs of each call on each server.
    let m = o.calls.min(300);
    let mut cpu = [[None; 2]; 2];
    for (call, (tool, args)) in calls.iter().enumerate() {
        for s in [0, 1] {
            cpu[s][call] = cpu_per_call(&mut clients[s], pids[s], m, tool, args)?;
        }
    }
    let [with, without] = samples;
    let n = o.calls;
    for (call, ((name, a), b)) in ["no-op job list", "bash `true`"]
        .into_iter()
        .zip(with)
        .zip(without)
        .enumerate()
    {
        let (a, b) = (Samples::new(a), Samples::new(b));
        let p = |s: &Samples| format!("{:.3} / {:.3} ms", ms(s.pct(50.0)), ms(s.pct(99.0)));
        rep.info(format!("auth: {name} with bearer p50 / p99 (n={n})"), p(&a));
        rep.info(
            format!("auth: {name} without auth p50 / p99 (n={n})"),
            p(&b),
        );
        let (pa, pb) = (ms(a.pct(50.0)), ms(b.pct(50.0)));
        let ratio = pa / pb;
        rep.check(
            format!("auth: bearer overhead on {name} (p50 ratio, diff)"),
            format!("{ratio:.3}x ({:+.3} ms)", pa - pb),
            "<= 1.10x",
            ratio <= 1.10,
        );
        if let [Some(ca), Some(cb)] = [cpu[0][call], cpu[1][call]] {
            rep.info(
                format!("auth: server CPU per {name}, bearer / no auth (n={m})"),
                format!("{:.3} / {:.3} ms", ms(ca), ms(cb)),
            );
        }
    }
    rep.notes.push(format!(
        "auth: flood logins throttled per source ({FLOOD_CONNS} keep-alive connections, each following its own form token chain); bearer vs no-auth on two servers, calls interleaved"
    ));
    Ok(())
}

// ---------------------------------------------------------------------------

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> std::process::ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mcpsh-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let tmp = match TempDir::new() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcpsh-bench: cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "mcpsh-bench: server {}, {} calls (+{} warm-up), spool {:.0} MiB, job {:.0} MiB, {} CPUs",
        o.server.display(),
        o.calls,
        o.warmup,
        mib(o.spool_bytes),
        mib(o.job_bytes),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rep = Report::default();
    let load0 = loadavg();
    type Section = fn(&mut Report, &Opts, &TempDir) -> Result<()>;
    let sections: [(&str, Section); 10] = [
        ("HTTP round trips", bench_http),
        ("spawn floor", bench_floor),
        ("stdio round trips", bench_stdio),
        ("spool", bench_spool),
        ("server memory", bench_memory),
        ("file grep", bench_grep),
        ("file read", bench_file_read),
        ("auth", bench_auth),
        ("ssh", ssh_bench::bench_ssh),
        ("session", session_bench::bench_session),
    ];
    for (name, f) in sections {
        if o.only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        eprintln!("  {name}...");
        let t = Instant::now();
        if let Err(e) = f(&mut rep, &o, &tmp) {
            rep.failed(name, &e);
        }
        eprintln!("  {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    drop(tmp);
    if let Some(floor) = rep.floor {
        for (transport, cost) in rep.costs.clone() {
            let row = Row {
                metric: format!("{transport}: mcpsh overhead per command (cost - floor)"),
                value: format!("{:.3} ms", cost - floor),
                target: String::new(),
                ok: None,
            };
            let prefix = format!("{transport}: cost of running");
            match rep.rows.iter().position(|r| r.metric.starts_with(&prefix)) {
                Some(i) => rep.rows.insert(i + 1, row),
                None => rep.rows.push(row),
            }
        }
    }
    rep.notes.push(format!(
        "load average at start / end: {load0} / {}",
        loadavg()
    ));
    println!();
    rep.print();
    if rep.rows.iter().any(|r| r.value == "FAILED") {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_by_length_chunked_and_sse() {
        let sse = "data: 1\n\nevent: message\r\ndata: {\"a\":\ndata: 1}\n\n";
        let mut raw = Vec::new();
        raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        raw.extend_from_slice(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        );
        raw.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for (i, part) in [&sse[..5], &sse[5..20], &sse[20..]].iter().enumerate() {
            let ext = if i == 1 { ";x=y" } else { "" };
            raw.extend_from_slice(format!("{:x}{ext}\r\n{part}\r\n", part.len()).as_bytes());
        }
        raw.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        raw.extend_from_slice(
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        let mut r = &raw[..];
        let (a, keep) = read_response(&mut r).unwrap();
        assert_eq!((a.status, a.body.as_slice(), keep), (200, &b"{}"[..], true));
        let (b, keep) = read_response(&mut r).unwrap();
        assert!(keep && b.content_type.starts_with("text/event-stream"));
        assert_eq!(b.body, sse.as_bytes());
        assert_eq!(sse_events(&b.body), ["1", "{\"a\":\n1}"]);
        let (c, keep) = read_response(&mut r).unwrap();
        assert_eq!((c.status, c.body.len(), keep), (202, 0, false));
        assert!(r.is_empty());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.pct(50.0), Duration::from_millis(50));
        assert_eq!(s.pct(99.0), Duration::from_millis(99));
        assert_eq!(s.pct(100.0), Duration::from_millis(100));
    }
}
