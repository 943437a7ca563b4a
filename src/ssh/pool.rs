//! The connection pool: one authenticated connection per host, shared by all
//! of its channels, opened on demand, re-opened when it died, closed when
//! idle. Channels per connection are capped below sshd's `MaxSessions` and
//! further ones wait their turn; a server that still refuses a channel makes
//! the cap shrink and the open retried.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::client::{Handle, Msg};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::agent::{Agent, AgentProc, AgentState, Run};
use super::config::{HostConfig, Inventory, ResolveCtx};
use super::conn::{self, Client, ConnectTimings, SeenKey};
use super::known_hosts::KnownHosts;
use super::{SshError, lock};
use crate::config::SshConfig;

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: SshConfig,
    inventory: Mutex<Loaded>,
    agent_sock: Option<PathBuf>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    started: Instant,
}

/// The inventory and the state of the files it was read from.
struct Loaded {
    inventory: Arc<Inventory>,
    /// Why the files could not be read, while they cannot.
    problem: Option<String>,
    stamp: Vec<Option<(std::time::SystemTime, u64)>>,
    checked: Instant,
}

/// Modification time and size of each file the inventory comes from.
fn stamp(cfg: &SshConfig) -> Vec<Option<(std::time::SystemTime, u64)>> {
    [&cfg.config, &cfg.hosts_toml]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Where one host's connection lives; the async mutex makes concurrent
/// callers share one connect.
#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

/// A live connection.
pub(crate) struct Conn {
    handle: Handle<Client>,
    /// ProxyJump hops this connection is tunnelled through (kept open).
    _hops: Vec<Handle<Client>>,
    ended: Arc<Mutex<Option<String>>>,
    permits: Arc<Semaphore>,
    cap: AtomicUsize,
    /// Milliseconds since the pool started, at the last channel open or close.
    pub(crate) last_used: AtomicU64,
    connected_ms: u64,
    pub(crate) timings: ConnectTimings,
    pub(crate) key: SeenKey,
    /// The exec agent of this connection (see `agent.rs`).
    agent: Mutex<AgentState>,
    /// Commands running through the agent: they hold no channel slot but
    /// keep the connection from being closed as idle.
    pub(crate) agent_jobs: AtomicUsize,
}

impl Conn {
    fn in_use(&self) -> usize {
        self.cap
            .load(Ordering::Relaxed)
            .saturating_sub(self.permits.available_permits())
    }

    /// Why this connection ended, or `None` while it is open.
    pub(crate) fn ended(&self) -> Option<String> {
        if !self.handle.is_closed() {
            return None;
        }
        Some(
            lock(&self.ended)
                .clone()
                .unwrap_or_else(|| "the connection closed".into()),
        )
    }
}

/// A connection's state, for `hosts list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnState {
    pub connected: bool,
    /// Seconds since the connection was made.
    pub age_secs: u64,
    pub channels_in_use: usize,
    pub idle_secs: u64,
}

/// An open channel with its slot in the connection's cap.
pub struct Channel {
    pub(crate) read: russh::ChannelReadHalf,
    pub(crate) write: Arc<russh::ChannelWriteHalf<Msg>>,
    conn: Arc<Conn>,
    /// Its slot in the connection's cap (none for the agent's own channel).
    _permit: Option<OwnedSemaphorePermit>,
    pool: Pool,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.conn
            .last_used
            .store(self.pool.now_ms(), Ordering::Relaxed);
    }
}

/// A channel's byte stream that keeps its slot in the connection's cap.
pub struct SlotStream {
    inner: russh::ChannelStream<Msg>,
    _permit: OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for SlotStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlotStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a remote command sent, in order.
#[derive(Debug)]
pub enum Chunk {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    /// The command ended: its exit code, or the signal that ended it.
    Exit {
        code: Option<u32>,
        signal: Option<String>,
    },
}

/// How a remote command ended without an exit message.
#[derive(Debug, Clone)]
pub struct Vanished {
    pub reason: String,
}

/// Writes to a remote command's stdin; cheap to clone.
#[derive(Clone)]
pub struct Stdin {
    write: Arc<russh::ChannelWriteHalf<Msg>>,
}

impl Stdin {
    pub async fn write(&self, data: &[u8]) -> Result<(), String> {
        self.write
            .data_bytes(bytes::Bytes::copy_from_slice(data))
            .await
            .map_err(|e| format!("cannot write to the remote command: {e}"))
    }

    pub async fn eof(&self) -> Result<(), String> {
        self.write
            .eof()
            .await
            .map_err(|e| format!("cannot close the remote command's stdin: {e}"))
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), String> {
        self.write
            .window_change(cols.into(), rows.into(), 0, 0)
            .await
            .map_err(|e| format!("cannot resize the remote terminal: {e}"))
    }
}

impl Channel {
    pub fn stdin(&self) -> Stdin {
        Stdin {
            write: self.write.clone(),
        }
    }

    /// The next thing the command sent; `Err` when the channel closed
    /// without an exit (the connection died, or the server gave up).
    pub async fn next(&mut self) -> Result<Option<Chunk>, Vanished> {
        loop {
            match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => return Ok(Some(Chunk::Stdout(data))),
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    return Ok(Some(Chunk::Stderr(data)));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    return Ok(Some(Chunk::Exit {
                        code: Some(exit_status),
                        signal: None,
                    }));
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    return Ok(Some(Chunk::Exit {
                        code: None,
                        signal: Some(signal_name_str(&signal_name)),
                    }));
                }
                Some(ChannelMsg::Close) | None => {
                    // A channel that ends without an exit message: the
                    // connection is gone, or sshd could not run the command.
                    return Err(Vanished {
                        reason: self.conn.ended().unwrap_or_else(|| {
                            "the server closed the channel without an exit status".into()
                        }),
                    });
                }
                Some(_) => {}
            }
        }
    }

    /// Reads everything to the end: stdout and stderr capped at `cap` bytes
    /// each (the rest is counted, not kept).
    pub async fn collect(mut self, cap: usize) -> Result<Captured, Vanished> {
        let mut out = Captured::default();
        loop {
            match self.next().await {
                Ok(Some(Chunk::Stdout(d))) => keep(&mut out.stdout, &mut out.dropped, &d, cap),
                Ok(Some(Chunk::Stderr(d))) => keep(&mut out.stderr, &mut out.dropped, &d, cap),
                Ok(Some(Chunk::Exit { code, signal })) => {
                    out.code = code;
                    out.signal = signal;
                    // Output may still follow the exit message until close.
                }
                Ok(None) => return Ok(out),
                Err(v) if out.code.is_some() || out.signal.is_some() => {
                    let _ = v;
                    return Ok(out);
                }
                Err(v) => return Err(v),
            }
        }
    }
}

fn keep(buf: &mut Vec<u8>, dropped: &mut u64, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(buf.len()).min(data.len());
    buf.extend_from_slice(&data[..room]);
    *dropped += (data.len() - room) as u64;
}

fn signal_name_str(sig: &russh::Sig) -> String {
    let s = format!("{sig:?}");
    match s
        .strip_prefix("Custom(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        Some(custom) => custom.to_owned(),
        None => s,
    }
}

/// A finished short command.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub code: Option<u32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output bytes past the cap, not kept.
    pub dropped: u64,
}

/// The outcome of `hosts test`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    pub host: String,
    pub address: String,
    pub user: String,
    pub via: Vec<String>,
    pub host_key: String,
    pub resolve_ms: f64,
    pub timings: ConnectTimings,
    /// Round trip of `true` on the new connection.
    pub exec_ms: f64,
    pub total_ms: f64,
}

/// The key a host presents and what known_hosts says of it.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub host: HostConfig,
    /// The known_hosts name (`host` or `[host]:port`).
    pub name: String,
    pub key_type: String,
    pub blob: Vec<u8>,
    pub fingerprint: String,
    pub verdict: super::known_hosts::Verdict,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn load_known(host: &HostConfig) -> Result<Arc<KnownHosts>, SshError> {
    let files: Vec<PathBuf> = host
        .user_known_hosts_files
        .iter()
        .chain(&host.global_known_hosts_files)
        .cloned()
        .collect();
    let known = KnownHosts::load(&files).map_err(|e| SshError::Config(e.to_string()))?;
    for p in known.problems() {
        tracing::warn!("known_hosts: {p}");
    }
    Ok(Arc::new(known))
}

impl Pool {
    /// A pool over `inventory`. `SSH_AUTH_SOCK`, when set, is the agent.
    pub fn new(cfg: SshConfig, inventory: Inventory) -> Pool {
        let files = stamp(&cfg);
        Pool {
            inner: Arc::new(Inner {
                cfg,
                inventory: Mutex::new(Loaded {
                    inventory: Arc::new(inventory),
                    problem: None,
                    stamp: files,
                    checked: Instant::now(),
                }),
                agent_sock: std::env::var_os("SSH_AUTH_SOCK")
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                slots: Mutex::new(HashMap::new()),
                started: Instant::now(),
            }),
        }
    }

    /// Loads the inventory `cfg` names and builds the pool.
    pub fn load(cfg: SshConfig) -> Result<Pool, SshError> {
        let inv = Inventory::load(&cfg.config, Some(&cfg.hosts_toml))
            .map_err(|e| SshError::Config(e.to_string()))?;
        Ok(Pool::new(cfg, inv))
    }

    /// Like [`Pool::load`], but a server keeps running when the files are
    /// wrong: the pool starts with no hosts, says why ([`Pool::problem`]),
    /// and reads the files again once they change.
    pub fn load_or_empty(cfg: SshConfig) -> Result<Pool, SshError> {
        match Inventory::load(&cfg.config, Some(&cfg.hosts_toml)) {
            Ok(inv) => Ok(Pool::new(cfg, inv)),
            Err(e) => {
                let missing = cfg.hosts_toml.with_extension("mcpsh-none");
                let empty =
                    Inventory::load(&missing, None).map_err(|e| SshError::Config(e.to_string()))?;
                let pool = Pool::new(cfg, empty);
                lock(&pool.inner.inventory).problem = Some(e.to_string());
                Ok(pool)
            }
        }
    }

    /// Why the ssh config or hosts.toml cannot be used right now, if so.
    pub fn problem(&self) -> Option<String> {
        self.inventory();
        lock(&self.inner.inventory).problem.clone()
    }

    pub fn config(&self) -> &SshConfig {
        &self.inner.cfg
    }

    /// The inventory, re-read when the ssh config or hosts.toml changed
    /// (checked at most once a second), so edits need no restart.
    pub fn inventory(&self) -> Arc<Inventory> {
        let mut loaded = lock(&self.inner.inventory);
        if loaded.checked.elapsed() >= Duration::from_secs(1) {
            loaded.checked = Instant::now();
            let now = stamp(&self.inner.cfg);
            if now != loaded.stamp {
                let cfg = &self.inner.cfg;
                match Inventory::load(&cfg.config, Some(&cfg.hosts_toml)) {
                    Ok(inv) => {
                        loaded.inventory = Arc::new(inv);
                        loaded.problem = None;
                    }
                    Err(e) => {
                        tracing::warn!("keeping the previous SSH inventory: {e}");
                        loaded.problem = Some(e.to_string());
                    }
                }
                loaded.stamp = now;
            }
        }
        loaded.inventory.clone()
    }

    /// Whether `name` is a host of the inventory.
    pub fn knows(&self, name: &str) -> bool {
        self.inventory().get(name).is_some()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// Closes idle connections until `cancel`.
    pub fn start_reaper(&self, tracker: &TaskTracker, cancel: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    _ = cancel.cancelled() => return,
                }
                this.close_idle().await;
            }
        });
    }

    async fn close_idle(&self) {
        let idle_ms = self.inner.cfg.idle_secs * 1000;
        let now = self.now_ms();
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            let Ok(mut guard) = slot.conn.try_lock() else {
                continue;
            };
            let close = guard.as_ref().is_some_and(|c| {
                c.ended().is_some()
                    || (c.in_use() == 0
                        && c.agent_jobs.load(Ordering::Relaxed) == 0
                        && now.saturating_sub(c.last_used.load(Ordering::Relaxed)) >= idle_ms)
            });
            if close && let Some(c) = guard.take() {
                let _ = c
                    .handle
                    .disconnect(russh::Disconnect::ByApplication, "idle", "en")
                    .await;
            }
        }
    }

    /// Connection state of `alias` (none before the first use).
    pub fn state(&self, alias: &str) -> Option<ConnState> {
        let slot = lock(&self.inner.slots).get(alias).cloned()?;
        let guard = slot.conn.try_lock().ok()?;
        let c = guard.as_ref()?;
        Some(ConnState {
            connected: c.ended().is_none(),
            age_secs: self.now_ms().saturating_sub(c.connected_ms) / 1000,
            channels_in_use: c.in_use(),
            idle_secs: self
                .now_ms()
                .saturating_sub(c.last_used.load(Ordering::Relaxed))
                / 1000,
        })
    }

    /// Resolves `alias` as ssh would (blocking `ssh -G` off the runtime).
    pub async fn resolve(&self, alias: &str) -> Result<HostConfig, SshError> {
        let inv = self.inventory();
        if inv.get(alias).is_none() {
            return Err(SshError::Unknown {
                name: alias.to_owned(),
                known: inv.hosts().iter().map(|h| h.name.clone()).collect(),
            });
        }
        let alias = alias.to_owned();
        blocking(move || {
            let ctx = ResolveCtx::new(&inv);
            super::config::resolve(&alias, &ctx).map_err(|e| SshError::Config(e.to_string()))
        })
        .await
    }

    /// Opens a new connection to `host` (through its hops), not pooled.
    async fn connect(&self, host: &HostConfig) -> Result<Conn, SshError> {
        let limit = Duration::from_secs(self.inner.cfg.connect_timeout_secs.max(1));
        let limit = host.connect_timeout.map_or(limit, |t| t.min(limit));
        match tokio::time::timeout(limit, self.connect_inner(host)).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Connect {
                alias: host.alias.clone(),
                address: format!("{}:{}", host.host_name, host.port),
                message: format!(
                    "no answer within {} s (is the host up and reachable?)",
                    limit.as_secs()
                ),
            }),
        }
    }

    async fn connect_inner(&self, host: &HostConfig) -> Result<Conn, SshError> {
        let agent = self.inner.agent_sock.as_deref();
        let mut hops: Vec<Handle<Client>> = Vec::new();
        let mut prev: Option<Handle<Client>> = None;
        let chain: Vec<&HostConfig> = host
            .proxy_jump
            .iter()
            .map(|j| &j.config)
            .chain(std::iter::once(host))
            .collect();
        let mut last = None;
        for hop in chain {
            let h = hop.clone();
            let known = blocking(move || load_known(&h)).await?;
            let t = Instant::now();
            let connected = match &prev {
                None => {
                    let stream = tcp(hop).await?;
                    conn::handshake(hop, stream, known, t.elapsed(), agent).await?
                }
                Some(via) => {
                    let stream = via
                        .channel_open_direct_tcpip(
                            hop.host_name.clone(),
                            hop.port.into(),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| SshError::Connect {
                            alias: hop.alias.clone(),
                            address: format!("{}:{}", hop.host_name, hop.port),
                            message: format!("the jump host could not forward to it: {e}"),
                        })?
                        .into_stream();
                    conn::handshake(hop, stream, known, t.elapsed(), agent).await?
                }
            };
            if let Some(p) = prev.replace(connected.handle) {
                hops.push(p);
            }
            last = Some((connected.ended, connected.seen, connected.timings));
        }
        let (Some(handle), Some((ended, key, timings))) = (prev, last) else {
            return Err(SshError::Config("empty connection chain".into()));
        };
        let cap = self.inner.cfg.max_channels.max(1);
        Ok(Conn {
            handle,
            _hops: hops,
            ended,
            permits: Arc::new(Semaphore::new(cap)),
            cap: AtomicUsize::new(cap),
            last_used: AtomicU64::new(self.now_ms()),
            connected_ms: self.now_ms(),
            timings,
            key,
            agent: Mutex::new(AgentState::Idle),
            agent_jobs: AtomicUsize::new(0),
        })
    }

    /// The live connection to `alias`, connecting when there is none.
    pub(crate) async fn conn(&self, alias: &str) -> Result<Arc<Conn>, SshError> {
        let slot = lock(&self.inner.slots)
            .entry(alias.to_owned())
            .or_default()
            .clone();
        let mut guard = slot.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.ended().is_none()
        {
            return Ok(c.clone());
        }
        let host = self.resolve(alias).await?;
        let conn = Arc::new(self.connect(&host).await?);
        tracing::debug!(
            host = alias,
            "connected in {:.1} ms",
            conn.timings.tcp_ms + conn.timings.kex_ms + conn.timings.auth_ms
        );
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets `conn` if it is still the pooled connection of `alias`.
    async fn forget(&self, alias: &str, conn: &Arc<Conn>) {
        let slot = lock(&self.inner.slots).get(alias).cloned();
        if let Some(slot) = slot {
            let mut guard = slot.conn.lock().await;
            if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *guard = None;
            }
        }
    }

    /// Opens a session channel on `alias`'s connection, waiting for a free
    /// slot, reconnecting once if the connection died, and shrinking the cap
    /// when the server refuses more sessions.
    pub async fn channel(&self, alias: &str) -> Result<Channel, SshError> {
        let (ch, conn, permit) = self.open(alias).await?;
        let (read, write) = ch.split();
        Ok(Channel {
            read,
            write: Arc::new(write),
            conn,
            _permit: Some(permit),
            pool: self.clone(),
        })
    }

    async fn open(
        &self,
        alias: &str,
    ) -> Result<(russh::Channel<Msg>, Arc<Conn>, OwnedSemaphorePermit), SshError> {
        let mut reconnected = false;
        let mut refused = 0u32;
        loop {
            let conn = self.conn(alias).await?;
            let permit =
                conn.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SshError::Channel {
                        alias: alias.to_owned(),
                        message: "the connection is closing".into(),
                    })?;
            match conn.handle.channel_open_session().await {
                Ok(ch) => {
                    conn.last_used.store(self.now_ms(), Ordering::Relaxed);
                    return Ok((ch, conn, permit));
                }
                Err(russh::Error::ChannelOpenFailure(why)) if refused < 50 => {
                    // The server allows fewer sessions than our cap (or is
                    // still tearing down a closed one): take one slot out for
                    // good when more than one is in use, then retry.
                    refused += 1;
                    if conn.in_use() > 1 && conn.cap.load(Ordering::Relaxed) > 1 {
                        conn.cap.fetch_sub(1, Ordering::Relaxed);
                        permit.forget();
                        tracing::info!(
                            host = alias,
                            "server refused a channel ({why:?}); fewer channels at once from now"
                        );
                    } else {
                        drop(permit);
                    }
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(refused.min(20)))).await;
                }
                Err(e) => {
                    drop(permit);
                    if conn.ended().is_some() && !reconnected {
                        self.forget(alias, &conn).await;
                        reconnected = true;
                        continue;
                    }
                    return Err(SshError::Channel {
                        alias: alias.to_owned(),
                        message: conn.ended().unwrap_or_else(|| e.to_string()),
                    });
                }
            }
        }
    }

    /// Starts `run` through the exec agent of `alias`'s connection when it
    /// is ready (no channel, login shell or `sh`: one fork and exec on the
    /// host), for a command with stdin from `/dev/null` and no terminal.
    /// `None` means use [`Pool::exec`]. Never connects: a connection's agent
    /// is started (in the background) when the connection is used a second
    /// time, so a host reached once costs nothing more.
    pub async fn fast(
        &self,
        alias: &str,
        cwd: Option<&str>,
        env: &[(String, String)],
        run: Run,
    ) -> Option<AgentProc> {
        let conn = self.live_conn(alias)?;
        let agent = {
            let mut state = lock(&conn.agent);
            match &*state {
                AgentState::Ready(a) if a.alive() => Some(a.clone()),
                AgentState::Ready(_) | AgentState::Idle => {
                    *state = AgentState::Starting;
                    let (pool, conn) = (self.clone(), conn.clone());
                    tokio::spawn(async move {
                        let started = match pool.agent_channel(&conn).await {
                            Ok(ch) => Agent::start(ch).await,
                            Err(e) => Err(e.to_string()),
                        };
                        *lock(&conn.agent) = match started {
                            Ok(a) => AgentState::Ready(a),
                            Err(why) => {
                                tracing::info!(
                                    "exec agent unavailable ({why}); commands use channels"
                                );
                                AgentState::Unavailable
                            }
                        };
                    });
                    None
                }
                AgentState::Starting | AgentState::Unavailable => None,
            }
        }?;
        agent.spawn(cwd, env, run, conn, self.clone()).await.ok()
    }

    /// The pooled connection of `alias` if it is up (never waits or connects).
    fn live_conn(&self, alias: &str) -> Option<Arc<Conn>> {
        let slot = lock(&self.inner.slots).get(alias).cloned()?;
        let guard = slot.conn.try_lock().ok()?;
        guard.as_ref().filter(|c| c.ended().is_none()).cloned()
    }

    /// A channel running the exec agent; it takes no slot of the cap (the cap
    /// stays below sshd's `MaxSessions` by more than one).
    async fn agent_channel(&self, conn: &Arc<Conn>) -> Result<Channel, SshError> {
        let fail = |e: russh::Error| SshError::Channel {
            alias: String::new(),
            message: e.to_string(),
        };
        let ch = conn.handle.channel_open_session().await.map_err(fail)?;
        let (read, write) = ch.split();
        write
            .exec(false, super::agent::command().as_bytes())
            .await
            .map_err(fail)?;
        Ok(Channel {
            read,
            write: Arc::new(write),
            conn: conn.clone(),
            _permit: None,
            pool: self.clone(),
        })
    }

    /// Starts `exec` (a string from [`super::cmdline`]) on `alias`, under a
    /// pseudo-terminal of `pty` (cols, rows) when given.
    pub async fn exec(
        &self,
        alias: &str,
        exec: &str,
        pty: Option<(u16, u16)>,
    ) -> Result<Channel, SshError> {
        let ch = self.channel(alias).await?;
        let fail = |e: russh::Error| SshError::Channel {
            alias: alias.to_owned(),
            message: e.to_string(),
        };
        if let Some((cols, rows)) = pty {
            ch.write
                .request_pty(false, "xterm-256color", cols.into(), rows.into(), 0, 0, &[])
                .await
                .map_err(fail)?;
        }
        ch.write.exec(false, exec.as_bytes()).await.map_err(fail)?;
        Ok(ch)
    }

    /// Runs `exec` to its end with `stdin` (then EOF), keeping at most `cap`
    /// bytes of each output stream.
    pub async fn run(
        &self,
        alias: &str,
        exec: &str,
        stdin: &[u8],
        cap: usize,
    ) -> Result<Captured, SshError> {
        let ch = self.exec(alias, exec, None).await?;
        let input = ch.stdin();
        if !stdin.is_empty() {
            input.write(stdin).await.map_err(|m| SshError::Channel {
                alias: alias.to_owned(),
                message: m,
            })?;
        }
        let _ = input.eof().await;
        ch.collect(cap).await.map_err(|v| SshError::Lost {
            alias: alias.to_owned(),
            reason: v.reason,
        })
    }

    /// A byte stream to the `sftp` subsystem of `alias`, holding its channel
    /// slot while it lives.
    pub async fn sftp_stream(&self, alias: &str) -> Result<SlotStream, SshError> {
        let (ch, _conn, permit) = self.open(alias).await?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| SshError::Channel {
                alias: alias.to_owned(),
                message: format!("the sftp subsystem is not available: {e}"),
            })?;
        Ok(SlotStream {
            inner: ch.into_stream(),
            _permit: permit,
        })
    }

    /// Connects afresh (not pooled) and reports how long each step took.
    pub async fn test(&self, alias: &str) -> Result<TestReport, SshError> {
        let t0 = Instant::now();
        let host = self.resolve(alias).await?;
        let resolve_ms = ms(t0.elapsed());
        let conn = self.connect(&host).await?;
        let t = Instant::now();
        let ch = conn
            .handle
            .channel_open_session()
            .await
            .map_err(|e| SshError::Channel {
                alias: alias.to_owned(),
                message: e.to_string(),
            })?;
        ch.exec(
            true,
            super::cmdline::argv(&["true"])
                .unwrap_or_default()
                .as_bytes(),
        )
        .await
        .map_err(|e| SshError::Channel {
            alias: alias.to_owned(),
            message: e.to_string(),
        })?;
        let (mut read, _write) = ch.split();
        while let Some(msg) = read.wait().await {
            if matches!(msg, ChannelMsg::ExitStatus { .. } | ChannelMsg::Close) {
                break;
            }
        }
        let exec_ms = ms(t.elapsed());
        let _ = conn
            .handle
            .disconnect(russh::Disconnect::ByApplication, "test done", "en")
            .await;
        Ok(TestReport {
            host: alias.to_owned(),
            address: format!("{}:{}", host.host_name, host.port),
            user: host.user.clone(),
            via: host.proxy_jump.iter().map(|j| j.spec.clone()).collect(),
            host_key: conn.key.verdict.message(alias),
            resolve_ms,
            timings: conn.timings.clone(),
            exec_ms,
            total_ms: ms(t0.elapsed()),
        })
    }

    /// Reads the key `alias` presents (its jump hosts must already be
    /// trusted), for `mcpsh hosts trust`.
    pub async fn scan(&self, alias: &str) -> Result<Scanned, SshError> {
        let host = self.resolve(alias).await?;
        let h = host.clone();
        let known = blocking(move || load_known(&h)).await?;
        let seen = match host.proxy_jump.last() {
            None => conn::scan_key(&host, tcp(&host).await?, known).await?,
            Some(_) => {
                // Reach the target through its (verified) hops.
                let mut through = host.clone();
                let last = through.proxy_jump.pop().map(|j| j.config);
                let mut hop = last.unwrap_or_else(|| host.clone());
                hop.proxy_jump = through.proxy_jump;
                let via = self.connect(&hop).await?;
                let stream = via
                    .handle
                    .channel_open_direct_tcpip(
                        host.host_name.clone(),
                        host.port.into(),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| SshError::Connect {
                        alias: alias.to_owned(),
                        address: format!("{}:{}", host.host_name, host.port),
                        message: format!("the jump host could not forward to it: {e}"),
                    })?
                    .into_stream();
                conn::scan_key(&host, stream, known).await?
            }
        };
        let p = seen.verdict.presented().clone();
        Ok(Scanned {
            name: p.name,
            fingerprint: p.fingerprint,
            verdict: seen.verdict,
            key_type: seen.key_type,
            blob: seen.blob,
            host,
        })
    }
}

async fn tcp(host: &HostConfig) -> Result<tokio::net::TcpStream, SshError> {
    let s = tokio::net::TcpStream::connect((host.host_name.as_str(), host.port))
        .await
        .map_err(|e| SshError::Connect {
            alias: host.alias.clone(),
            address: format!("{}:{}", host.host_name, host.port),
            message: e.to_string(),
        })?;
    // Nagle would hold each small request back ~40 ms.
    let _ = s.set_nodelay(true);
    Ok(s)
}
