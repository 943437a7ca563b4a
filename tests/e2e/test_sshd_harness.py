"""The SSH lab itself (sshd.py), checked with the real OpenSSH client: the servers, keys,
known_hosts lines and configs that the mcpsh SSH tests rely on behave as OpenSSH's do."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterable

import pytest
from conftest import marker
from sshd import SSH_KEYGEN, SSHD, SshLab, hash_host, missing_binaries

STRICT = ["StrictHostKeyChecking=yes"]


def spawn(lab: SshLab, alias: str, cmd: str | None, options: Iterable[str] = (), **kw) -> subprocess.Popen[str]:
    """The OpenSSH client running `cmd` on `alias`, in the background."""
    return subprocess.Popen(lab.ssh_argv(alias, cmd, options), env=lab.env(), text=True,
                            stdin=kw.pop("stdin", subprocess.DEVNULL), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --------------------------------------------------------------------------- connections


def test_alias_logs_in_as_the_current_user(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    r = ssh_lab.ssh("web1", "echo hello; id -un; echo $SSHLAB_INSTANCE", options=STRICT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hello", ssh_lab.user, web1.token]
    # Every instance has its own port and its own host keys.
    hop = ssh_lab["hop"]
    assert web1.port != hop.port
    assert {web1.public_key(k) for k in ("ed25519", "ecdsa", "rsa")}.isdisjoint(
        {hop.public_key(k) for k in ("ed25519", "ecdsa", "rsa")})


def test_sftp_subsystem(ssh_lab: SshLab, tmp_path):
    sftp = shutil.which("sftp")
    if sftp is None:
        pytest.skip("no sftp client")
    (tmp_path / "f.txt").write_text("over sftp\n")
    batch = tmp_path / "batch"
    batch.write_text(f"get {tmp_path / 'f.txt'} {tmp_path / 'g.txt'}\n")
    r = subprocess.run([sftp, "-F", str(ssh_lab.ssh_config), "-o", "BatchMode=yes", "-b", str(batch), "web1"],
                       env=ssh_lab.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.txt").read_text() == "over sftp\n"


def test_proxy_jump_goes_through_the_hop(ssh_lab: SshLab):
    web1, hop = ssh_lab["web1"], ssh_lab["hop"]
    m = f"sleep 30.{marker()}"
    client = spawn(ssh_lab, "behind-hop", f"echo $SSH_CONNECTION; {m}")
    try:
        wait_for(lambda: ssh_lab.remote_pids(m, web1), what="the session on web1")
        # One connection to each: the client's to hop, and hop's forwarded one to web1.
        assert len(hop.connections()) == 1 and len(web1.connections()) == 1
        assert ssh_lab.remote_pids(m, hop) == []
    finally:
        client.kill()
        client.wait()
    line = client.stdout.readline().split()
    assert line[2:] == ["127.0.0.1", str(web1.port)], line
    # Without the hop, behind-hop is unreachable while web1 itself is fine.
    hop.kill()
    r = ssh_lab.ssh("behind-hop", "true")
    assert r.returncode == 255, r
    assert ssh_lab.ssh("web1", "true").returncode == 0


def test_web1_allows_ten_sessions_per_connection(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    effective = subprocess.run([SSHD, "-T", "-f", str(web1.config)], capture_output=True, text=True, check=True)
    assert "maxsessions 10" in effective.stdout.splitlines()
    # Ten sessions multiplexed over one connection run; the server refuses an eleventh.
    d = tempfile.mkdtemp(prefix="sshlab-cm-")  # a short path: ControlPath is a unix socket
    ctl = f"{d}/c"
    mux = ["ControlMaster=no", f"ControlPath={ctl}"]
    master_argv = ssh_lab.ssh_argv("web1", None, ["ControlMaster=yes", f"ControlPath={ctl}"])
    master_argv.insert(1, "-N")
    master = subprocess.Popen(master_argv, env=ssh_lab.env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clients = []
    try:
        wait_for(lambda: os.path.exists(ctl), what="the control socket")
        m = f"sleep 30.{marker()}"
        # `exec`: one process per session whatever the login shell.
        clients = [spawn(ssh_lab, "web1", f"exec {m}", mux) for _ in range(10)]
        wait_for(lambda: len(ssh_lab.remote_pids(m, web1)) == 10, what="10 sessions")
        assert len(web1.connections()) == 1
        # (ssh then falls back to a connection of its own, so only the refusal is checked.)
        r = ssh_lab.ssh("web1", "true", options=mux)
        assert "Session open refused by peer" in r.stderr, r
    finally:
        for c in clients:
            c.kill()
            c.wait()
        master.kill()
        master.wait()
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- known_hosts


def test_unknown_host_is_refused(ssh_lab: SshLab):
    ssh_lab.write_known_hosts([ssh_lab.known_hosts_line(ssh_lab["hop"])])
    r = ssh_lab.ssh("web1", "true", options=STRICT)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr, r


def test_hashed_entry_is_accepted(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    line = ssh_lab.known_hosts_line(web1, hashed=True)
    assert line.startswith("|1|") and str(web1.port) not in line.split()[0]
    ssh_lab.write_known_hosts([line])
    # ssh-keygen finds the host under its hashed name, so the HMAC is OpenSSH's.
    found = subprocess.run([SSH_KEYGEN, "-F", web1.host_pattern, "-f", str(ssh_lab.known_hosts)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and line in found.stdout, found
    r = ssh_lab.ssh("web1", "echo ok", options=STRICT)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_hash_host_matches_ssh_keygen(tmp_path):
    if missing_binaries():
        pytest.skip("OpenSSH is not installed")
    kh = tmp_path / "kh"
    kh.write_text("[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    subprocess.run([SSH_KEYGEN, "-H", "-f", str(kh)], capture_output=True, check=True)
    hashed = kh.read_text().split()[0]
    salt = base64.b64decode(hashed.split("|")[2])
    assert hash_host("[127.0.0.1]:2222", salt) == hashed


def test_changed_key_is_refused_with_the_servers_fingerprint(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    line = ssh_lab.known_hosts_line(web1, changed=True)
    assert line.split()[:2] == [web1.host_pattern, "ssh-ed25519"] and web1.public_key() not in line
    ssh_lab.write_known_hosts([line])
    r = ssh_lab.ssh("web1", "true")
    assert r.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr, r
    assert web1.fingerprint("ed25519") in r.stderr


def test_revoked_key_is_refused_even_with_a_valid_line(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    ssh_lab.write_known_hosts([
        ssh_lab.known_hosts_line(web1, marker="@revoked", pattern="*"),
        ssh_lab.known_hosts_line(web1),
    ])
    r = ssh_lab.ssh("web1", "true", options=["HostKeyAlgorithms=ssh-ed25519"])
    assert r.returncode == 255 and "REVOKED" in r.stderr, r


def test_wildcard_entry_is_accepted(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    line = ssh_lab.known_hosts_line(web1, pattern="[127.0.0.*]:{port}")
    assert line.startswith(f"[127.0.0.*]:{web1.port} ")
    ssh_lab.write_known_hosts([line])
    r = ssh_lab.ssh("web1", "true", options=STRICT)
    assert r.returncode == 0, r.stderr


def test_cert_authority_trusts_certified_hosts_only(ssh_lab: SshLab):
    certified = ssh_lab.start_sshd("certified", host_certs=True)
    ssh_lab.add_hosts({"certified": certified})
    ssh_lab.write_known_hosts([])
    line = ssh_lab.known_hosts_add_ca()
    assert line.startswith("@cert-authority [127.0.0.1]:* ssh-ed25519 ")
    r = ssh_lab.ssh("certified", "echo ok", options=STRICT)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    # web1 has no certificate: the CA line says nothing about its plain key.
    assert ssh_lab.ssh("web1", "true", options=STRICT).returncode == 255


def test_several_known_hosts_files(ssh_lab: SshLab, tmp_path):
    web1 = ssh_lab["web1"]
    other = tmp_path / "known_hosts2"
    ssh_lab.write_known_hosts([])
    ssh_lab.known_hosts_add(web1, path=other)
    ssh_lab.write_ssh_config({"web1": {"sshd": web1, "known_hosts": [ssh_lab.known_hosts, other]}})
    assert ssh_lab.ssh("web1", "true", options=STRICT).returncode == 0


# --------------------------------------------------------------------------- lifecycle


def test_restart_keeps_port_and_keys_and_open_sessions(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    port, pid, keys = web1.port, web1.proc.pid, [web1.public_key(k) for k in ("ed25519", "ecdsa", "rsa")]
    session = spawn(ssh_lab, "web1", "cat; echo survived", stdin=subprocess.PIPE)
    wait_for(lambda: web1.connections(), what="the session")
    web1.restart()
    assert web1.port == port and web1.proc.pid != pid and web1.running
    assert [web1.public_key(k) for k in ("ed25519", "ecdsa", "rsa")] == keys
    # The key actually served is the same one (ssh-keyscan asks the server).
    keyscan = shutil.which("ssh-keyscan")
    if keyscan:
        scan = subprocess.run([keyscan, "-t", "ed25519", "-p", str(port), "127.0.0.1"], capture_output=True,
                              text=True, timeout=20)
        assert keys[0] in scan.stdout, scan
    assert ssh_lab.ssh("web1", "true", options=STRICT).returncode == 0
    # Like `systemctl restart ssh`: the session opened before is still up.
    out, err = session.communicate("typed\n", timeout=20)
    assert session.returncode == 0 and out == "typed\nsurvived\n", err


def test_new_host_keys_then_restart_is_a_changed_key(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    old = web1.fingerprint()
    web1.new_host_keys()
    web1.restart()
    assert web1.fingerprint() != old
    r = ssh_lab.ssh("web1", "true")
    assert r.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr, r


def test_kill_drops_connections_and_their_processes(ssh_lab: SshLab):
    web1 = ssh_lab["web1"]
    m = f"sleep 60.{marker()}"
    client = spawn(ssh_lab, "web1", m)
    remote = wait_for(lambda: ssh_lab.remote_pids(m, web1), what="the remote sleep")
    # The local ssh client carries the command in its argv too, but it is not web1's.
    assert client.pid in ssh_lab.remote_pids(m) and client.pid not in remote
    web1.kill()
    assert client.wait(timeout=10) == 255
    assert ssh_lab.wait_no_remote_pids(m) == []
    assert not web1.running and web1.pids() == []
    r = ssh_lab.ssh("web1", "true")
    assert r.returncode == 255 and "refused" in r.stderr, r
    # And it comes back on the same port.
    web1.start(port=web1.port)
    assert ssh_lab.ssh("web1", "true", options=STRICT).returncode == 0


def test_close_kills_everything_even_orphaned_sessions(tmp_path):
    if missing_binaries():
        pytest.skip("OpenSSH is not installed")
    lab = SshLab(tmp_path)
    m = f"sleep 60.{marker()}"
    try:
        web1 = lab.start_sshd("web1")
        lab.known_hosts_add(web1, key="all")
        lab.write_ssh_config({"web1": web1})
        # Start a remote command that outlives its ssh client (nohup, in the background).
        r = lab.ssh("web1", f"nohup {m} >/dev/null 2>&1 &", check=True)
        assert r.returncode == 0
        wait_for(lambda: lab.remote_pids(m, web1), what="the detached sleep")
        # A crash of the sshd processes alone leaves the detached process running, found by token.
        web1.kill(sessions=False)
        assert lab.remote_pids(m, web1), "the detached process should have survived"
        lab.start_agent()
    finally:
        lab.close()
    assert lab.wait_no_remote_pids(m, timeout=5) == []
    assert all(p.poll() is not None for p in lab._agents)


# --------------------------------------------------------------------------- client side


def test_agent_unlocks_the_encrypted_key(ssh_lab: SshLab, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
    assert "SSH_AUTH_SOCK" not in ssh_lab.env()
    ssh_lab.add_hosts({"web1-enc": {"sshd": ssh_lab["web1"], "identity": ssh_lab.encrypted_key}})
    # In batch mode, nothing can ask for the passphrase.
    r = ssh_lab.ssh("web1-enc", "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr, r
    sock = ssh_lab.start_agent(ssh_lab.encrypted_key)
    assert ssh_lab.env()["SSH_AUTH_SOCK"] == str(sock)
    r = ssh_lab.ssh("web1-enc", "echo ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_env_and_hosts_toml_for_mcpsh(ssh_lab: SshLab):
    env = ssh_lab.env({"PATH": "/usr/bin", "MCPSH_STATE_DIR": "/x", "SSH_AUTH_SOCK": "/y"})
    assert env == {
        "PATH": "/usr/bin",
        "MCPSH_STATE_DIR": "/x",
        "MCPSH_SSH_CONFIG": str(ssh_lab.ssh_config),
        "MCPSH_HOSTS_TOML": str(ssh_lab.hosts_toml),
    }
    web1 = ssh_lab["web1"]
    path = ssh_lab.write_hosts_toml([
        {"name": "db-1", "address": "127.0.0.1", "port": web1.port, "user": ssh_lab.user,
         "key": str(ssh_lab.user_key), "tags": ["db", "prod"]},
        {"name": "web1", "tags": ["web"]},
    ])
    assert path == ssh_lab.hosts_toml
    parsed = tomllib.loads(path.read_text())
    assert parsed["host"][0]["port"] == web1.port and parsed["host"][0]["tags"] == ["db", "prod"]
    assert parsed["host"][1] == {"name": "web1", "tags": ["web"]}


def test_ssh_config_resolves_as_written(ssh_lab: SshLab):
    ssh = shutil.which("ssh")
    g = subprocess.run([ssh, "-G", "-F", str(ssh_lab.ssh_config), "behind-hop"], capture_output=True, text=True,
                       check=True).stdout.splitlines()
    web1 = ssh_lab["web1"]
    for want in ("hostname 127.0.0.1", f"port {web1.port}", f"user {ssh_lab.user}", "proxyjump hop",
                 "identitiesonly yes", f"identityfile {ssh_lab.user_key}",
                 f"userknownhostsfile {ssh_lab.known_hosts}"):
        assert want in g, want


def test_extra_config_overrides_and_match_blocks_go_last(ssh_lab: SshLab):
    custom = ssh_lab.start_sshd("custom", max_sessions=3, extra_config="\n".join([
        "MaxSessions 2",
        "SetEnv LAB_EXTRA=1",
        "Match User nobody",
        "  AllowTcpForwarding no",
    ]))
    effective = subprocess.run([SSHD, "-T", "-f", str(custom.config)], capture_output=True, text=True, check=True)
    lines = effective.stdout.splitlines()
    assert "maxsessions 2" in lines and "allowtcpforwarding yes" in lines
    ssh_lab.add_hosts({"custom": custom})
    ssh_lab.known_hosts_add(custom)
    r = ssh_lab.ssh("custom", "echo $LAB_EXTRA $SSHLAB_INSTANCE", check=True)
    assert r.stdout.split() == ["1", custom.token]


def test_sessions_skip_the_users_bashrc_unless_asked(ssh_lab: SshLab):
    # Debian's bash sources ~/.bashrc for a command run by sshd; the lab's sessions set
    # SHLVL=1 so it does not (this machine's dotfiles are not part of the lab).
    probe = "echo $SHLVL; shopt -q login_shell && echo login || echo not-login"
    r = ssh_lab.ssh("web1", probe, check=True)
    assert r.stdout.split() == ["2", "not-login"], r.stdout
    with_rc = ssh_lab.start_sshd("with-rc", user_rc=True)
    assert "SHLVL" not in with_rc.config.read_text()
