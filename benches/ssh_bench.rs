//! The `ssh` section: remote commands through a real OpenSSH `sshd` on
//! 127.0.0.1 (started here with generated keys), against the OpenSSH client.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{HttpClient, Opts, Report, Result, Rpc, Samples, TempDir, err, ms, start_http};

/// Host aliases of the fan-out measurement.
const ALIASES: usize = 50;

struct Sshd {
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn keygen(path: &Path) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mcpsh-bench", "-f"])
        .arg(path))?;
    Ok(fs::read_to_string(path.with_extension("pub"))?)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An sshd on 127.0.0.1 with a fresh host key, the login user's key, an
/// ssh_config with `ALIASES` aliases for it and a known_hosts.
struct Lab {
    dir: PathBuf,
    config: PathBuf,
    _sshd: Sshd,
}

fn lab(tmp: &TempDir) -> Result<Lab> {
    let dir = tmp.sub("ssh-lab")?;
    let sshd_bin = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("sshd is not installed (apt-get install openssh-server)")?;
    let _ = fs::create_dir_all("/run/sshd");
    let host_pub = keygen(&dir.join("host_ed25519"))?;
    let user_pub = keygen(&dir.join("id_ed25519"))?;
    fs::write(dir.join("authorized_keys"), &user_pub)?;
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            run(Command::new("id").arg("-un"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        });
    let port = free_port()?;
    let d = dir.display();
    fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             StrictModes no\nPermitRootLogin prohibit-password\nMaxStartups 200\nMaxSessions 10\n\
             PermitUserRC no\nSetEnv SHLVL=1\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        ),
    )?;
    let child = Command::new(&sshd_bin)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let sshd = Sshd { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return err("sshd did not start listening");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut key = host_pub.split_whitespace();
    let (kt, kb) = (key.next().unwrap_or(""), key.next().unwrap_or(""));
    fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {kt} {kb}\n"),
    )?;
    let mut cfg = String::new();
    for i in 1..=ALIASES {
        cfg.push_str(&format!(
            "Host h{i:02}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
             IdentityFile {d}/id_ed25519\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n\n"
        ));
    }
    let config = dir.join("ssh_config");
    fs::write(&config, cfg)?;
    Ok(Lab {
        dir,
        config,
        _sshd: sshd,
    })
}

fn env(lab: &Lab) -> Vec<(&'static str, String)> {
    vec![
        ("MCPSH_SSH_CONFIG", lab.config.display().to_string()),
        (
            "MCPSH_HOSTS_TOML",
            lab.dir.join("hosts.toml").display().to_string(),
        ),
        ("SSH_AUTH_SOCK", String::new()),
    ]
}

fn ok_bash(r: &Value) -> Result<()> {
    let s = &r["structuredContent"];
    if s["status"] != "exited" || s["exit_code"] != 0 {
        return err(format!("remote bash did not exit 0: {r}"));
    }
    Ok(())
}

/// Fan-out `uptime` on every alias; wall time and the count that answered.
fn fanout(c: &mut HttpClient) -> Result<(Duration, u64)> {
    let t = Instant::now();
    let r = c.request(
        "tools/call",
        json!({"name": "bash", "arguments": {"cmd": "uptime", "hosts": ["h*"], "wait": 50}}),
    )?;
    let took = t.elapsed();
    let ok = r["structuredContent"]["summary"]["ok"]
        .as_u64()
        .unwrap_or(0);
    Ok((took, ok))
}

fn p50_of(mut f: impl FnMut() -> Result<Duration>, n: usize) -> Result<Samples> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(Samples::new(v))
}

pub(super) fn bench_ssh(rep: &mut Report, o: &Opts, tmp: &TempDir) -> Result<()> {
    let lab = lab(tmp)?;
    let env = env(&lab);

    // Cold: a fresh server, first the fan-out over every alias.
    let state = tmp.sub("ssh-cold")?;
    let (_server, addr) = start_http(&o.server, &state, super::NO_AUTH, &env)?;
    let mut c = HttpClient::new(addr);
    c.initialize()?;
    let (cold, ok) = fanout(&mut c)?;
    if ok != ALIASES as u64 {
        return err(format!("cold fan-out: {ok} of {ALIASES} hosts answered"));
    }
    let (warm, ok) = fanout(&mut c)?;
    if ok != ALIASES as u64 {
        return err(format!("warm fan-out: {ok} of {ALIASES} hosts answered"));
    }
    let warm = p50_of(|| fanout(&mut c).map(|(d, _)| d), 5)?
        .pct(50.0)
        .min(warm);
    rep.check(
        format!("ssh: uptime on {ALIASES} aliases, cold (fresh server)"),
        format!("{:.0} ms", ms(cold)),
        "≤ 1500 ms",
        ms(cold) <= 1500.0,
    );
    rep.check(
        format!("ssh: uptime on {ALIASES} aliases, warm (p50 of 5)"),
        format!("{:.0} ms", ms(warm)),
        "≤ 150 ms",
        ms(warm) <= 150.0,
    );

    // Cold connect of one host, as `hosts test` times it.
    let mut connect = Vec::new();
    let mut handshake = Vec::new();
    for _ in 0..10 {
        let r = c.call("hosts", json!({"action": "test", "host": "h01"}))?;
        let t = &r["structuredContent"]["hosts"][0]["result"]["timings"];
        let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
        connect.push(Duration::from_secs_f64(
            (f("tcp_ms") + f("kex_ms") + f("auth_ms")) / 1e3,
        ));
        handshake.push(Duration::from_secs_f64(f("kex_ms") / 1e3));
    }
    let connect = Samples::new(connect);
    rep.check(
        "ssh: cold connect (TCP + key exchange + login), p50 of 10",
        format!(
            "{:.1} ms (handshake {:.1} ms)",
            ms(connect.pct(50.0)),
            ms(Samples::new(handshake).pct(50.0))
        ),
        "≤ 40 ms",
        ms(connect.pct(50.0)) <= 40.0,
    );

    // Warm round trips: remote `bash true` against a no-op call.
    let bash = json!({"cmd": "true", "host": "h01", "wait": 10});
    let noop = json!({"action": "list", "limit": 1});
    for _ in 0..o.warmup.min(50) {
        ok_bash(&c.call("bash", bash.clone())?)?;
    }
    let n = o.calls.min(500);
    let mut remote = Vec::with_capacity(n);
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ok_bash(&c.call("bash", bash.clone())?)?;
        remote.push(t.elapsed());
        let t = Instant::now();
        c.call("job", noop.clone())?;
        idle.push(t.elapsed());
    }
    let (remote, idle) = (Samples::new(remote), Samples::new(idle));
    rep.check(
        format!("ssh: remote bash true round trip over HTTP, warm (p50/p99 of {n})"),
        format!(
            "{:.2} / {:.2} ms",
            ms(remote.pct(50.0)),
            ms(remote.pct(99.0))
        ),
        "p50 ≤ 3 ms",
        ms(remote.pct(50.0)) <= 3.0,
    );
    rep.info(
        "ssh: no-op call in the same client (p50)",
        format!("{:.2} ms", ms(idle.pct(50.0))),
    );

    // The OpenSSH client for reference: a fresh `ssh` per command, and over
    // a ControlMaster connection.
    let ssh = |extra: &[String]| -> Result<Duration> {
        let t = Instant::now();
        run(Command::new("ssh")
            .arg("-F")
            .arg(&lab.config)
            .args(["-o", "BatchMode=yes"])
            .args(extra)
            .args(["--", "h01", "true"])
            .env_remove("SSH_AUTH_SOCK"))?;
        Ok(t.elapsed())
    };
    let fresh = p50_of(|| ssh(&[]), 10)?;
    let control = vec![
        "-o".to_owned(),
        "ControlMaster=auto".to_owned(),
        "-o".to_owned(),
        format!("ControlPath={}/cm-%C", lab.dir.display()),
        "-o".to_owned(),
        "ControlPersist=60".to_owned(),
    ];
    ssh(&control)?;
    let muxed = p50_of(|| ssh(&control), 20)?;
    let _ = Command::new("ssh")
        .arg("-F")
        .arg(&lab.config)
        .args(&control)
        .args(["-O", "exit", "h01"])
        .output();
    rep.info(
        "ssh: OpenSSH `ssh host true`, fresh connection each (p50 of 10)",
        format!("{:.1} ms", ms(fresh.pct(50.0))),
    );
    rep.info(
        "ssh: OpenSSH `ssh host true` over ControlMaster (p50 of 20)",
        format!("{:.1} ms", ms(muxed.pct(50.0))),
    );
    sftp_read(rep, &lab, o)?;
    rep.notes.push(
        "ssh: the bench sshd sets SHLVL=1 for sessions (as the test lab does), so the login \
         user's ~/.bashrc is not sourced for each command; a heavy ~/.bashrc adds its own cost \
         to every SSH command, for OpenSSH's client as for mcpsh"
            .into(),
    );
    Ok(())
}

/// Reads a large file from the host through mcpsh's SSH stack (pool, SFTP
/// channel, pipelined reads) and through `scp`, both to nowhere.
fn sftp_read(rep: &mut Report, lab: &Lab, o: &Opts) -> Result<()> {
    let size: u64 = (500u64 << 20).min(o.job_bytes);
    let path = lab.dir.join("big.bin");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(fs::File::create(&path)?);
        // Incompressible-looking bytes (an xorshift stream).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block)?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = mcpsh::config::SshConfig {
        config: lab.config.clone(),
        hosts_toml: lab.dir.join("hosts.toml"),
        ..Default::default()
    };
    let remote = path.display().to_string();
    let ours = rt.block_on(async {
        let pool = mcpsh::ssh::Pool::load(cfg).map_err(|e| e.to_string())?;
        let stream = pool.sftp_stream("h01").await.map_err(|e| e.to_string())?;
        let sftp = mcpsh::ssh::sftp::Sftp::new(stream)
            .await
            .map_err(|e| e.to_string())?;
        let file = sftp
            .open(&remote, mcpsh::ssh::sftp::OpenOptions::read())
            .await
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut at = 0u64;
        while at < size {
            let got = file.read_at(at, 4 << 20).await.map_err(|e| e.to_string())?;
            if got.is_empty() {
                break;
            }
            at += got.len() as u64;
        }
        let took = t.elapsed();
        if at != size {
            return Err(format!("read {at} of {size} bytes"));
        }
        Ok::<Duration, String>(took)
    })?;
    let t = Instant::now();
    run(Command::new("scp")
        .arg("-F")
        .arg(&lab.config)
        .args(["-q", "-o", "BatchMode=yes"])
        .arg(format!("h01:{remote}"))
        .arg("/dev/null")
        .env_remove("SSH_AUTH_SOCK"))?;
    let scp = t.elapsed();
    let _ = fs::remove_file(&path);
    let rate = |d: Duration| size as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let ratio = rate(ours) / rate(scp);
    rep.check(
        format!("ssh: read {} MiB over SFTP (mcpsh) vs scp", size >> 20),
        format!(
            "{:.0} vs {:.0} MiB/s ({:.2}x)",
            rate(ours),
            rate(scp),
            ratio
        ),
        "≥ 0.8x scp",
        ratio >= 0.8,
    );
    Ok(())
}
