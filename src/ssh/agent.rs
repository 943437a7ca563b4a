//! The exec agent: a small program that runs on a host for the life of one
//! pooled connection and starts commands itself. Nothing is installed: it is
//! sent in the exec request, as Python (`agent.py`, Python 3.8+) where the
//! host has it, else as Perl (`agent.pl`). Both speak the same frames. A
//! command through the agent costs one spawn on the host (Python's
//! `posix_spawn` is a vfork; Perl's fork copies the interpreter's memory
//! map, about 0.5 ms more); through a new channel it costs sshd's fork, the
//! login shell and `/bin/sh` as well (about 5 ms here).
//!
//! The agent is optional: it is started in the background after a
//! connection's first command, and hosts with neither interpreter (or whose
//! agent dies) keep the channel path. Only commands with stdin from `/dev/null` and no
//! terminal use it; their output and exit come back as the same [`Chunk`]s a
//! channel gives, the pid first as a line, as the channel wrapper prints it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::lock;
use super::pool::{Channel, Chunk, Conn, Pool, Stdin, Vanished};

const PERL: &str = include_str!("agent.pl");
const PYTHON: &str = include_str!("agent.py");
/// How long a starting agent may take to say it is ready.
const READY_WAIT: Duration = Duration::from_secs(5);
/// Largest frame accepted from a host (the agent sends at most 64 KiB of output).
const MAX_FRAME: usize = 1 << 20;

/// Where a connection's agent stands.
#[derive(Default)]
pub(crate) enum AgentState {
    #[default]
    Idle,
    Starting,
    Ready(Arc<Agent>),
    /// This host cannot run it (no Perl, or it failed to start).
    Unavailable,
}

/// What the agent runs: words as they are, or a command line for its shell.
pub enum Run {
    Argv(Vec<String>),
    Shell(String),
}

enum Frame {
    Pid(u32),
    Out(Bytes),
    Exit(Option<u32>, Option<String>),
}

/// A running agent.
pub(crate) struct Agent {
    input: Stdin,
    /// One frame at a time: a frame larger than an SSH packet must not
    /// interleave with another.
    writing: tokio::sync::Mutex<()>,
    jobs: Mutex<HashMap<u32, mpsc::Sender<Frame>>>,
    next: AtomicU32,
    /// `bash` when the host has it, else `sh`.
    shell: String,
    ended: Mutex<Option<String>>,
}

/// The exec string that starts the agent: the Python one when the host has
/// `python3` (an older Python hands over to Perl itself), else the Perl one.
pub(crate) fn command() -> String {
    let mut s = super::cmdline::Script::new();
    s.set("p_", PYTHON.as_bytes()).set("l_", PERL.as_bytes());
    s.raw(
        "if command -v python3 >/dev/null 2>&1; then exec python3 -c \"$p_\" \"$l_\"; fi; \
         exec perl -e \"$l_\"",
    );
    s.finish().unwrap_or_default()
}

impl Agent {
    /// Wait for the agent on `ch` (already running [`command`]) to be
    /// ready, then serve it from a task. Errors say why the host cannot.
    pub(crate) async fn start(mut ch: Channel) -> Result<Arc<Agent>, String> {
        let mut buf = BytesMut::new();
        let ready = tokio::time::timeout(READY_WAIT, async {
            loop {
                match ch.next().await {
                    Ok(Some(Chunk::Stdout(d))) => {
                        buf.extend_from_slice(&d);
                        if let Some((b'R', _, payload)) = take_frame(&mut buf)? {
                            return Ok(String::from_utf8_lossy(&payload).into_owned());
                        }
                    }
                    Ok(Some(Chunk::Stderr(d))) => {
                        return Err(String::from_utf8_lossy(&d).trim().to_owned());
                    }
                    Ok(Some(Chunk::Exit { code, .. })) => {
                        return Err(format!("the agent exited with {code:?}"));
                    }
                    Ok(None) => return Err("the agent's channel closed".into()),
                    Err(v) => return Err(v.reason),
                }
            }
        })
        .await
        .map_err(|_| "the agent did not start within 5 s".to_owned())??;
        let mut words = ready.split_whitespace().skip(1);
        let shell = match words.next() {
            Some("bash") => "bash",
            _ => "sh",
        };
        tracing::debug!(
            "exec agent ready ({}, commands through {shell})",
            words.next().unwrap_or("perl")
        );
        let agent = Arc::new(Agent {
            input: ch.stdin(),
            writing: tokio::sync::Mutex::new(()),
            jobs: Mutex::new(HashMap::new()),
            next: AtomicU32::new(1),
            shell: shell.to_owned(),
            ended: Mutex::new(None),
        });
        tokio::spawn(serve(agent.clone(), ch, buf));
        Ok(agent)
    }

    pub(crate) fn alive(&self) -> bool {
        lock(&self.ended).is_none()
    }

    /// Start `run` in `cwd` with `env`; its output and exit come from the
    /// returned process.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        cwd: Option<&str>,
        env: &[(String, String)],
        run: Run,
        conn: Arc<Conn>,
        pool: Pool,
    ) -> Result<AgentProc, String> {
        let argv = match run {
            Run::Argv(a) => a,
            Run::Shell(cmd) => vec![self.shell.clone(), "-c".into(), cmd],
        };
        let fields = std::iter::once(cwd.unwrap_or("").to_owned())
            .chain(std::iter::once(env.len().to_string()))
            .chain(env.iter().flat_map(|(k, v)| [k.clone(), v.clone()]))
            .chain(std::iter::once(argv.len().to_string()))
            .chain(argv);
        let mut payload = Vec::new();
        for f in fields {
            if f.contains('\0') {
                return Err("a NUL byte cannot be passed to a command".into());
            }
            payload.extend_from_slice(f.as_bytes());
            payload.push(0);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        lock(&self.jobs).insert(id, tx);
        conn.agent_jobs.fetch_add(1, Ordering::Relaxed);
        let proc = AgentProc {
            id,
            rx,
            agent: self.clone(),
            conn,
            pool,
            pid_sent: false,
        };
        let _one = self.writing.lock().await;
        self.input
            .write(&frame(b'S', id, &payload))
            .await
            .map_err(|e| format!("the agent is gone: {e}"))?;
        Ok(proc)
    }
}

fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(5 + payload.len() as u32).to_be_bytes());
    f.push(kind);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One whole frame off the front of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut) -> Result<Option<(u8, u32, Bytes)>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(5..=MAX_FRAME).contains(&len) {
        return Err(format!("the agent sent a bad frame (length {len})"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let mut f = buf.split_to(len);
    let kind = f[0];
    let id = u32::from_be_bytes([f[1], f[2], f[3], f[4]]);
    f.advance(5);
    Ok(Some((kind, id, f.freeze())))
}

/// Read the agent's frames and hand each to its command, until the channel ends.
async fn serve(agent: Arc<Agent>, mut ch: Channel, mut buf: BytesMut) {
    let why = loop {
        loop {
            match take_frame(&mut buf) {
                Ok(Some((kind, id, payload))) => dispatch(&agent, kind, id, payload).await,
                Ok(None) => break,
                Err(e) => {
                    buf.clear();
                    tracing::warn!("{e}");
                    break;
                }
            }
        }
        match ch.next().await {
            Ok(Some(Chunk::Stdout(d))) => buf.extend_from_slice(&d),
            Ok(Some(Chunk::Stderr(d))) => {
                tracing::debug!("exec agent: {}", String::from_utf8_lossy(&d).trim());
            }
            Ok(Some(Chunk::Exit { code, .. })) => {
                break format!("the exec agent exited ({code:?})");
            }
            Ok(None) => break "the exec agent's channel closed".to_owned(),
            Err(v) => break v.reason,
        }
    };
    *lock(&agent.ended) = Some(why);
    // Commands still running hear that the agent is gone.
    lock(&agent.jobs).clear();
}

async fn dispatch(agent: &Agent, kind: u8, id: u32, payload: Bytes) {
    let frame = match kind {
        b'P' => match std::str::from_utf8(&payload)
            .ok()
            .and_then(|p| p.parse().ok())
        {
            Some(pid) => Frame::Pid(pid),
            None => return,
        },
        b'O' => Frame::Out(payload),
        b'X' => {
            let text = String::from_utf8_lossy(&payload);
            let (code, signal) = match text.split_at_checked(1) {
                Some(("c", n)) => (n.parse().ok(), None),
                Some(("s", n)) => (None, n.parse().ok().map(super::signal_name)),
                _ => (None, None),
            };
            Frame::Exit(code, signal)
        }
        _ => return,
    };
    let tx = lock(&agent.jobs).get(&id).cloned();
    if let Some(tx) = tx {
        let last = matches!(frame, Frame::Exit(..));
        // Waits while the job's reader is behind: the agent's output then
        // waits in the SSH window, never in memory here.
        let _ = tx.send(frame).await;
        if last {
            lock(&agent.jobs).remove(&id);
        }
    }
}

/// A remote command: on its own channel, or started by the exec agent.
pub enum RemoteProc {
    Channel(Channel),
    Agent(AgentProc),
}

impl RemoteProc {
    /// The next thing the command sent (see [`Channel::next`]).
    pub async fn next(&mut self) -> Result<Option<Chunk>, Vanished> {
        match self {
            RemoteProc::Channel(c) => c.next().await,
            RemoteProc::Agent(a) => a.next().await,
        }
    }
}

/// A command started by the agent.
pub struct AgentProc {
    id: u32,
    rx: mpsc::Receiver<Frame>,
    agent: Arc<Agent>,
    conn: Arc<Conn>,
    pool: Pool,
    pid_sent: bool,
}

impl AgentProc {
    /// The next thing the command sent, as a channel would give it: its pid
    /// as a first line, output, the exit, then `None`.
    pub async fn next(&mut self) -> Result<Option<Chunk>, Vanished> {
        match self.rx.recv().await {
            Some(Frame::Pid(pid)) if !self.pid_sent => {
                self.pid_sent = true;
                Ok(Some(Chunk::Stdout(Bytes::from(format!("{pid}\n")))))
            }
            Some(Frame::Pid(_)) => Ok(Some(Chunk::Stdout(Bytes::new()))),
            Some(Frame::Out(d)) => Ok(Some(Chunk::Stdout(d))),
            Some(Frame::Exit(code, signal)) => Ok(Some(Chunk::Exit { code, signal })),
            None if self.agent.alive() => Ok(None),
            None => Err(Vanished {
                reason: self
                    .conn
                    .ended()
                    .or_else(|| lock(&self.agent.ended).clone())
                    .unwrap_or_else(|| "the exec agent ended".into()),
            }),
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        lock(&self.agent.jobs).remove(&self.id);
        self.conn.agent_jobs.fetch_sub(1, Ordering::Relaxed);
        self.conn
            .last_used
            .store(self.pool.now_ms(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let mut all = frame(b'P', 7, b"123");
        all.extend(frame(b'O', 7, b"hi\n"));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all {
            buf.extend_from_slice(&[b]);
            while let Some((k, id, p)) = take_frame(&mut buf).unwrap() {
                got.push((k, id, p.to_vec()));
            }
        }
        assert_eq!(
            got,
            vec![(b'P', 7, b"123".to_vec()), (b'O', 7, b"hi\n".to_vec())]
        );
        let mut bad = BytesMut::from(&[0u8, 0, 0, 2, 1, 2][..]);
        assert!(take_frame(&mut bad).is_err());
    }

    use std::io::{Read, Write};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::mpsc as std_mpsc;

    /// An agent running here as a child process, driven through its frames.
    struct Local {
        child: Child,
        input: Option<ChildStdin>,
        frames: std_mpsc::Receiver<(u8, u32, Vec<u8>)>,
    }

    impl Local {
        fn start(cmd: &mut Command) -> Local {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut out = child.stdout.take().unwrap();
            let (tx, frames) = std_mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = out.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some((k, id, p))) = take_frame(&mut buf) {
                        let _ = tx.send((k, id, p.to_vec()));
                    }
                }
            });
            let input = child.stdin.take();
            Local {
                child,
                input,
                frames,
            }
        }

        fn next(&self) -> (u8, u32, Vec<u8>) {
            self.frames
                .recv_timeout(Duration::from_secs(10))
                .expect("no frame from the agent within 10 s")
        }

        fn run(&mut self, id: u32, cwd: &str, env: &[(&str, &str)], argv: &[&str]) {
            let mut fields = vec![cwd.to_owned(), env.len().to_string()];
            for (k, v) in env {
                fields.extend([k.to_string(), v.to_string()]);
            }
            fields.push(argv.len().to_string());
            fields.extend(argv.iter().map(|a| a.to_string()));
            let payload: Vec<u8> = fields
                .iter()
                .flat_map(|f| f.bytes().chain(std::iter::once(0)))
                .collect();
            let input = self.input.as_mut().unwrap();
            input.write_all(&frame(b'S', id, &payload)).unwrap();
            input.flush().unwrap();
        }

        /// Job `id`'s frames up to its exit: (pid, output, exit).
        fn finish(&self, id: u32) -> (Option<u32>, String, String) {
            let (mut pid, mut out) = (None, String::new());
            loop {
                let (k, got, p) = self.next();
                assert_eq!(got, id, "frames of one job at a time here");
                let text = String::from_utf8_lossy(&p).into_owned();
                match k {
                    b'P' => {
                        assert!(pid.is_none() && out.is_empty(), "the pid comes first, once");
                        pid = Some(text.parse().unwrap());
                    }
                    b'O' => out.push_str(&text),
                    b'X' => return (pid, out, text),
                    other => panic!("unexpected frame {:?}", other as char),
                }
            }
        }
    }

    impl Drop for Local {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn have(program: &str) -> bool {
        Command::new(program).arg("--version").output().is_ok()
    }

    /// Everything the server relies on, asked of one agent.
    fn exercise(mut agent: Local, name: &str) {
        let (k, _, ready) = agent.next();
        assert_eq!(
            (k, String::from_utf8_lossy(&ready).into_owned()),
            (b'R', format!("1 bash {name}"))
        );
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().to_str().unwrap();

        // env, cwd, stdout and stderr merged, the exit code, the pid first.
        agent.run(
            1,
            here,
            &[("A_", "x y")],
            &["bash", "-c", "echo \"$A_\"; pwd; echo err >&2; exit 3"],
        );
        let (pid, out, exit) = agent.finish(1);
        assert!(pid.is_some_and(|p| p > 1), "{name}: no pid");
        assert_eq!(
            (out.as_str(), exit.as_str()),
            (format!("x y\n{here}\nerr\n").as_str(), "c3"),
            "{name}"
        );
        // No cwd: where the agent started, whatever the last job's was.
        agent.run(2, "", &[], &["pwd"]);
        let (_, out, exit) = agent.finish(2);
        assert_eq!(
            (out.trim(), exit.as_str()),
            (std::env::current_dir().unwrap().to_str().unwrap(), "c0"),
            "{name}"
        );
        // stdin is /dev/null: a read ends at once.
        agent.run(3, "", &[], &["bash", "-c", "read x; echo read=$?"]);
        assert_eq!(agent.finish(3).1, "read=1\n", "{name}");
        // The command leads its own session.
        agent.run(4, "", &[], &["bash", "-c", "ps -o sid= -p $$; echo $$"]);
        let out = agent.finish(4).1;
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words.len(), 2, "{name}: {out}");
        assert_eq!(words[0], words[1], "{name}: not a session leader");
        // Failures, as a shell reports them.
        agent.run(5, "/nonexistent-dir", &[], &["pwd"]);
        let (_, out, exit) = agent.finish(5);
        assert_eq!(
            (out.as_str(), exit.as_str()),
            ("cd: /nonexistent-dir: No such file or directory\n", "c126"),
            "{name}"
        );
        agent.run(6, "", &[], &["no-such-program-here"]);
        let (_, out, exit) = agent.finish(6);
        assert_eq!(
            (out.as_str(), exit.as_str()),
            ("no-such-program-here: No such file or directory\n", "c127"),
            "{name}"
        );
        agent.run(7, "", &[], &["bash", "-c", "kill -TERM $$"]);
        assert_eq!(agent.finish(7).2, "s15", "{name}");
        // SIGPIPE is the default again in commands (the agents ignore it).
        agent.run(
            8,
            "",
            &[],
            &["bash", "-c", "yes | head -1; echo ${PIPESTATUS[0]}"],
        );
        assert_eq!(agent.finish(8).1, "y\n141\n", "{name}");
        // The job's own PATH finds its program.
        std::fs::write(dir.path().join("mine"), "#!/bin/sh\necho mine\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("mine"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        agent.run(
            9,
            "",
            &[("PATH", &format!("{here}:/usr/bin:/bin"))],
            &["mine"],
        );
        assert_eq!(agent.finish(9).1, "mine\n", "{name}");
        // A background process keeping the output open does not hold the exit.
        let t = std::time::Instant::now();
        agent.run(10, "", &[], &["bash", "-c", "sleep 29.5 & echo started"]);
        let (pid, out, exit) = agent.finish(10);
        // The sleep is in the command's session and process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", pid.unwrap())])
            .status();
        assert_eq!((out.as_str(), exit.as_str()), ("started\n", "c0"), "{name}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name}: exit held by a background process"
        );
        // EOF on stdin ends the agent.
        drop(agent.input.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while agent.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: agent alive after EOF"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_python_agent_runs_commands_as_the_server_expects() {
        if !have("python3") {
            return; // hosts without it run the Perl agent, tested below
        }
        exercise(
            Local::start(Command::new("python3").args(["-c", PYTHON, PERL])),
            "python",
        );
    }

    #[test]
    fn the_perl_agent_runs_commands_as_the_server_expects() {
        if !have("perl") {
            return;
        }
        exercise(
            Local::start(Command::new("perl").args(["-e", PERL])),
            "perl",
        );
    }

    /// What sshd runs (`$SHELL -c` of the exec string) picks Python, or
    /// Perl on a host without `python3`.
    #[test]
    fn the_exec_string_starts_python_where_it_can_and_perl_elsewhere() {
        if !have("python3") || !have("perl") {
            return;
        }
        let ready = |path: &str| {
            let agent = Local::start(
                Command::new("/bin/sh")
                    .args(["-c", &command()])
                    .env("PATH", path),
            );
            String::from_utf8_lossy(&agent.next().2).into_owned()
        };
        assert!(ready("/usr/local/bin:/usr/bin:/bin").ends_with(" python"));
        let bin = tempfile::tempdir().unwrap();
        let perl = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v perl"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::os::unix::fs::symlink(perl.trim(), bin.path().join("perl")).unwrap();
        assert_eq!(ready(bin.path().to_str().unwrap()), "1 sh perl");
    }
}
