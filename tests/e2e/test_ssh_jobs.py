"""`bash` and `job` on SSH hosts: the same semantics as on `local`, against real sshd
instances of the lab (see sshd.py), through a real MCP client."""

import asyncio
import hashlib
import time

import pytest
from conftest import marker

pytestmark = pytest.mark.anyio


@pytest.fixture
async def one_mcp(ssh_lab):
    """One stdio session on the lab, for slow connection-failure tests that need not run in
    every transport x mode combination (those paths do not depend on the transport)."""
    from conftest import Server
    server = Server("stdio")
    server.env = ssh_lab.env(server.env)
    try:
        async with server.connect("auto") as s:
            yield s
    finally:
        server.cleanup()


async def test_remote_echo_exit_codes_and_streams(ssh_mcp):
    r = await ssh_mcp.bash("echo hi; echo err >&2", host="web1")
    assert (r["status"], r["exit_code"]) == ("exited", 0), r.text
    assert sorted(r["output"].splitlines()) == ["err", "hi"]
    r = await ssh_mcp.bash("exit 3", host="web1")
    assert (r["status"], r["exit_code"], r.is_error) == ("exited", 3, True)
    r = await ssh_mcp.bash("echo $MCPSH_JOB; pwd", host="web1", cwd="/tmp", env={"A_B": "x y"})
    lines = r["output"].splitlines()
    assert lines[0] == r["job"] and lines[1] == "/tmp"
    r = await ssh_mcp.bash('printf "%s" "$A_B"', host="web1", env={"A_B": "it's $(x) `y`\n"})
    assert r["output"] == "it's $(x) `y`\n"


async def test_remote_stdin_closed_text_fed_and_interactive(ssh_mcp):
    started = time.monotonic()
    r = await ssh_mcp.bash("read x && echo got:$x", host="web1")
    assert time.monotonic() - started < 5 and r["exit_code"] != 0
    r = await ssh_mcp.bash("cat", host="web1", stdin="abc\n")
    assert r["output"] == "abc\n"
    r = await ssh_mcp.bash("read a; echo got:$a", host="web1", interactive=True, wait=0)
    w = await ssh_mcp.job("write", id=r["job"], text="hello", keys=["enter"])
    done, out = await ssh_mcp.wait_done(r["job"])
    assert done["exit_code"] == 0 and "got:hello" in w.get("output", "") + out


async def test_remote_tty_output_is_rendered(ssh_mcp):
    r = await ssh_mcp.bash("tty >/dev/null && echo is-a-tty; printf 'a\\rb\\n'", host="web1", tty=True)
    assert r["status"] == "exited" and r["exit_code"] == 0, r.text
    assert "is-a-tty" in r["output"] and "\x1b" not in r["output"]


async def test_remote_big_output_pages_reassemble_exactly(ssh_mcp):
    r = await ssh_mcp.bash("seq 1 200000", host="web1", wait=30)
    assert r["status"] == "exited"
    want = "".join(f"{i}\n" for i in range(1, 200001))
    assert r["total_bytes"] == len(want) and r["total_lines"] == 200000
    got = await ssh_mcp.read_all(r["job"])
    assert hashlib.sha256(got.encode()).hexdigest() == hashlib.sha256(want.encode()).hexdigest()


async def test_remote_background_then_poll(ssh_mcp):
    r = await ssh_mcp.bash("sleep 2; echo done", host="web1", wait=0.5)
    assert r["status"] == "running" and r["host"] == "web1"
    done, out = await ssh_mcp.wait_done(r["job"])
    assert (done["status"], done["exit_code"]) == ("exited", 0)
    assert "done" in out + done["output"]


async def test_remote_timeout_kills_the_whole_remote_tree(ssh_mcp, ssh_lab):
    m = marker()
    cmd = f"(setsid sh -c 'sleep 300.{m}' &) ; sleep 301.{m}"
    started = time.monotonic()
    r = await ssh_mcp.bash(cmd, host="web1", timeout=2, wait=20)
    assert r["status"] == "timed_out", r.text
    assert time.monotonic() - started < 8
    assert ssh_lab.wait_no_remote_pids(m, timeout=5) == []


async def test_remote_kill_reports_what_it_verified(ssh_mcp, ssh_lab):
    m = marker()
    r = await ssh_mcp.bash(
        f"(setsid sh -c 'sleep 300.{m}' & sleep 301.{m}) & sleep 302.{m}",
        host="web1", wait=1)
    assert r["status"] == "running"
    await asyncio.sleep(0.5)
    k = await ssh_mcp.job("kill", id=r["job"])
    assert k["status"] == "killed", k.text
    assert "3 terminated" in k.text or "terminated" in k.text, k.text
    assert ssh_lab.wait_no_remote_pids(m, timeout=5) == []


async def test_a_dead_connection_makes_the_job_lost_with_the_reason(one_mcp, ssh_lab):
    ssh_mcp = one_mcp
    r = await ssh_mcp.bash("sleep 120", host="web1", wait=1)
    assert r["status"] == "running"
    ssh_lab["web1"].kill()
    started = time.monotonic()
    done, _ = await ssh_mcp.wait_done(r["job"], timeout=40)
    assert done["status"] == "lost", done.text
    assert time.monotonic() - started < 30
    assert "web1" in done.text


async def test_fifty_concurrent_commands_on_one_host_all_succeed(ssh_mcp):
    rs = await asyncio.gather(*(ssh_mcp.bash(f"echo n{i}", host="web1", wait=40) for i in range(50)))
    for i, r in enumerate(rs):
        assert (r["status"], r["exit_code"], r["output"]) == ("exited", 0, f"n{i}\n"), r.text


async def test_proxyjump_host_runs_commands(ssh_mcp, ssh_lab):
    r = await ssh_mcp.bash("echo via-hop", host="behind-hop")
    assert (r["exit_code"], r["output"]) == (0, "via-hop\n"), r.text


async def test_unknown_changed_and_revoked_keys_are_refused_with_the_fingerprint(ssh_lab, ssh_server):
    web1 = ssh_lab["web1"]
    fp = web1.fingerprint("ed25519")
    cases = {
        "unknown": [],
        "changed": [ssh_lab.known_hosts_line(web1, key="ed25519", changed=True)],
        "revoked": [ssh_lab.known_hosts_line(web1, key="ed25519", marker="@revoked"),
                    ssh_lab.known_hosts_line(web1, key="ed25519")],
    }
    for case, lines in cases.items():
        ssh_lab.write_known_hosts(lines)
        async with ssh_server.connect("auto") as s:
            r = await s.bash("echo should-not-run", host="web1")
        assert r.is_error, (case, r.text)
        assert "should-not-run" not in r.text
        assert "REFUSED" in r.text and fp.split(":", 1)[1] in r.text, (case, r.text)
        if case != "revoked":
            assert "mcpsh hosts trust web1" in r.text


async def test_hashed_and_wildcard_known_hosts_entries_are_accepted(ssh_lab, ssh_server):
    web1 = ssh_lab["web1"]
    for line in (ssh_lab.known_hosts_line(web1, key="ed25519", hashed=True),
                 ssh_lab.known_hosts_line(web1, key="ed25519", pattern="[127.0.0.*]:{port}")):
        ssh_lab.write_known_hosts([line])
        async with ssh_server.connect("auto") as s:
            r = await s.bash("echo ok", host="web1")
        assert r["output"] == "ok\n", (line, r.text)


async def test_injection_through_host_names_never_runs_anything(ssh_mcp, tmp_path):
    canary = tmp_path / "pwned"
    hostile = [
        "-oProxyCommand=touch " + str(canary), "-F/dev/null", "web1;touch " + str(canary),
        "web1 && touch " + str(canary), "$(touch " + str(canary) + ")", "`touch " + str(canary) + "`",
        "web1|sh", "web1\ntouch", "web1'", 'web1"', "-", "--", "-V", "web1 -oX=1",
        "../web1", "web1/..", "user@web1", "web1:22", "[web1]", "*", "web?", "web1\x00",
    ]
    for name in hostile:
        r = await ssh_mcp.bash("echo ran", host=name)
        assert r.is_error and "ran\n" not in r.text, (name, r.text)
    assert not canary.exists()


async def test_cli_hosts_list_test_and_trust(ssh_lab, ssh_server):
    out = ssh_server.cli("hosts", "list", "-l")
    assert out.returncode == 0 and "web1" in out.stdout and "behind-hop" in out.stdout, out
    ssh_lab.write_known_hosts([])
    t = ssh_server.cli("hosts", "test", "web1")
    assert t.returncode != 0 and "REFUSED" in t.stdout, t
    # Without a terminal and without --yes nothing is added.
    n = ssh_server.cli("hosts", "trust", "web1")
    assert n.returncode != 0 and ssh_lab.known_hosts.read_text() == ""
    y = ssh_server.cli("hosts", "trust", "web1", "--yes")
    assert y.returncode == 0 and ssh_lab["web1"].fingerprint("ed25519") in y.stdout, y
    t = ssh_server.cli("hosts", "test", "web1")
    assert t.returncode == 0 and "ok" in t.stdout, t


def _fleet(ssh_lab):
    """12 aliases: web-01..web-10 (tag web) on web1, `dead` (nothing listens), and
    `silent` (accepts TCP but never speaks SSH; ConnectTimeout 2)."""
    import socket
    web1 = ssh_lab["web1"]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    entries = {f"web-{i:02}": web1 for i in range(1, 11)}
    entries["dead"] = {"port": dead_port}
    entries["silent"] = {"port": silent.getsockname()[1], "extra": "ConnectTimeout 2"}
    ssh_lab.add_hosts(entries)
    ssh_lab.write_hosts_toml([{"name": f"web-{i:02}", "tags": ["web"]} for i in range(1, 11)])
    return silent


async def test_fanout_runs_in_parallel_and_dead_hosts_do_not_hold_back_others(ssh_lab, ssh_server):
    silent = _fleet(ssh_lab)
    time.sleep(1.1)  # the server re-reads its inventory when the files change (checked each second)
    try:
        async with ssh_server.connect("auto") as s:
            started = time.monotonic()
            r = await s.bash("sleep 1; echo up-$MCPSH_JOB", hosts=["tag:web", "dead", "silent"], wait=20)
            took = time.monotonic() - started
    finally:
        silent.close()
    assert r.is_error  # two hosts failed
    summary = r["summary"]
    assert (summary["hosts"], summary["ok"], summary["failed"]) == (12, 10, 2), r.text
    by_host = {e["host"]: e for e in r["hosts"]}
    for i in range(1, 11):
        job = by_host[f"web-{i:02}"]["job"]
        assert job["exit_code"] == 0 and job["output"] == f"up-{job['job']}\n"
    assert "dead" in by_host and "error" in by_host["dead"]
    assert "refused" in by_host["dead"]["error"].lower(), by_host["dead"]
    assert "silent" in by_host and "error" in by_host["silent"]
    # Ten one-second commands in parallel, and the silent host's 2 s connect timeout:
    # far less than the 10+ s a host-after-host loop would need.
    assert took < 6, took


async def test_fanout_selectors_globs_and_errors(ssh_lab, ssh_server):
    _fleet(ssh_lab).close()
    time.sleep(1.1)
    async with ssh_server.connect("auto") as s:
        r = await s.bash("hostname >/dev/null && echo ok", hosts=["web-0*"])
        assert r["summary"]["hosts"] == 9 and r["summary"]["ok"] == 9, r.text
        r = await s.bash("echo x", hosts=["nosuch-*"])
        assert r.is_error and "matches no host" in r.text
        r = await s.bash("echo x", hosts=["tag:nope"])
        assert r.is_error and "no host has tag" in r.text
        r = await s.bash("echo x", hosts=["-oProxyCommand=x"])
        assert r.is_error and "refused" in r.text
        r = await s.bash("echo x", host="web-01", hosts=["web-02"])
        assert r.is_error and "not both" in r.text


async def test_hosts_tool_list_test_and_info(ssh_mcp, ssh_lab):
    r = await ssh_mcp.call("hosts", {"action": "list"})
    names = [h["name"] for h in r["hosts"]]
    assert names == ["web1", "hop", "behind-hop"], r.text
    assert not any(h["connected"] for h in r["hosts"])
    t = await ssh_mcp.call("hosts", {"action": "test", "hosts": ["web1", "behind-hop"]})
    assert t["failed"] == 0, t.text
    for e in t["hosts"]:
        assert e["ok"] and e["result"]["timings"]["auth_method"].startswith("key ")
        assert ssh_lab["web1"].fingerprint("ed25519").split(":", 1)[1] in e["result"]["host_key"]
    assert t["hosts"][1]["result"]["via"] == ["hop"]
    i = await ssh_mcp.call("hosts", {"action": "info", "host": "web1"})
    facts = i["hosts"][0]["result"]
    assert facts["cpus"] >= 1 and facts["mem_total_kib"] > 0 and facts["kernel"].startswith("Linux")
    assert any(d["mount"] == "/" for d in facts["disks"]), facts
    await ssh_mcp.bash("true", host="web1")
    r = await ssh_mcp.call("hosts", {"action": "list"})
    assert {h["name"]: h["connected"] for h in r["hosts"]}["web1"] is True
    bad = await ssh_mcp.call("hosts", {"action": "info", "host": "nope"})
    assert bad.is_error and "unknown host" in bad.text


async def test_encrypted_key_needs_the_agent_and_works_through_it(ssh_lab):
    from conftest import Server
    ssh_lab.add_hosts({"locked": {"sshd": ssh_lab["web1"], "identity": ssh_lab.encrypted_key}})
    server = Server("stdio")
    try:
        server.env = ssh_lab.env(server.env)
        async with server.connect("auto") as s:
            r = await s.bash("echo in", host="locked")
        assert r.is_error and "encrypted" in r.text and "ssh-add" in r.text, r.text
        ssh_lab.start_agent(key=ssh_lab.encrypted_key, passphrase=ssh_lab.passphrase)
        server.env = ssh_lab.env(server.env)
        async with server.connect("auto") as s:
            r = await s.bash("echo in", host="locked")
            assert (r["exit_code"], r["output"]) == (0, "in\n"), r.text
            t = await s.call("hosts", {"action": "test", "host": "locked"})
            assert t["hosts"][0]["result"]["timings"]["auth_method"].startswith("agent SHA256:"), t.text
    finally:
        server.cleanup()


async def test_a_silent_peer_is_detected_by_keepalives_within_30s(one_mcp, ssh_lab):
    """The host stops answering without closing anything (SIGSTOP of every sshd process):
    only keepalives can tell, and the job must end `lost` with no hung call."""
    import contextlib
    import os
    import signal
    ssh_mcp = one_mcp
    r = await ssh_mcp.bash("sleep 120", host="web1", wait=1)
    assert r["status"] == "running"
    frozen = ssh_lab["web1"].pids(sessions=True)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done, _ = await ssh_mcp.wait_done(r["job"], timeout=45)
        took = time.monotonic() - started
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert done["status"] == "lost", done.text
    assert took <= 30, took


async def test_the_pool_reconnects_after_the_host_restarts(one_mcp, ssh_lab):
    ssh_mcp = one_mcp
    r = await ssh_mcp.bash("echo one", host="web1")
    assert r["output"] == "one\n"
    ssh_lab["web1"].kill()
    ssh_lab["web1"].start(port=ssh_lab["web1"].port)
    r = await ssh_mcp.bash("echo two", host="web1")
    assert (r["exit_code"], r["output"]) == (0, "two\n"), r.text


async def test_injection_through_users_and_addresses_never_runs_anything(ssh_lab, tmp_path):
    """Hostile values in hosts.toml and the ssh config (users, addresses, keys, jumps,
    commands) are refused or inert: nothing runs locally, no ssh option is injected, and a
    refused hosts.toml is reported as such rather than silently dropped."""
    from conftest import Server
    canary = tmp_path / "pwned"
    touch = f"touch {canary}"
    web1 = ssh_lab["web1"]
    hostile_toml = [
        [{"name": "u1", "address": "127.0.0.1", "port": web1.port, "user": f"$({touch})"}],
        [{"name": "u2", "address": "127.0.0.1", "port": web1.port, "user": f"root;{touch}"}],
        [{"name": "u3", "address": "127.0.0.1", "port": web1.port, "user": "-oProxyCommand=" + touch}],
        [{"name": "a1", "address": "-oProxyCommand=" + touch}],
        [{"name": "a2", "address": f"127.0.0.1;{touch}"}],
        [{"name": "k1", "address": "127.0.0.1", "port": web1.port, "key": f"$({touch})"}],
    ]
    ssh_lab.add_hosts({
        "c1": {"sshd": web1, "user": f"$(id>{canary})"},
        "c2": {"sshd": web1, "extra": f"ProxyCommand {touch}"},
        "c3": {"sshd": web1, "extra": f"LocalCommand {touch}\nPermitLocalCommand yes"},
        "c4": {"sshd": web1, "proxy_jump": f"-oProxyCommand={touch}"},
        "c5": {"sshd": web1, "extra": f"KnownHostsCommand {touch}"},
    })
    server = Server("stdio")
    try:
        server.env = ssh_lab.env(server.env)
        for entries in hostile_toml:
            ssh_lab.write_hosts_toml(entries)
            async with server.connect("auto") as s:
                r = await s.bash("echo ran", host=entries[0]["name"])
            assert r.is_error and "ran\n" not in r.text, (entries, r.text)
        ssh_lab.write_hosts_toml([])
        async with server.connect("auto") as s:
            for name in ["c1", "c2", "c3", "c4", "c5"]:
                r = await s.bash("echo ran", host=name)
                if name in ("c3", "c5"):
                    # LocalCommand and KnownHostsCommand are ignored, never run.
                    assert r["exit_code"] == 0, (name, r.text)
                else:
                    assert r.is_error and "ran\n" not in r.text, (name, r.text)
    finally:
        server.cleanup()
    assert not canary.exists()


async def agent_up(mcp, lab, host: str = "web1") -> None:
    """Use the connection twice (the second use starts its exec agent) and wait for the agent."""
    await mcp.bash("true", host=host)
    assert not lab.remote_pids("mcpsh exec agent"), "a host reached once gets no agent"
    await mcp.bash("true", host=host)
    deadline = time.monotonic() + 10
    while not lab.remote_pids("mcpsh exec agent"):
        assert time.monotonic() < deadline, "the exec agent did not start"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # its ready frame


async def test_commands_run_through_the_exec_agent_with_the_same_semantics(one_mcp, ssh_lab):
    mcp = one_mcp
    await agent_up(mcp, ssh_lab)
    r = await mcp.bash("ps -o comm= -p $PPID", host="web1")
    # Python where the host has it (agent.py), else Perl (agent.pl); both
    # are tested on their own in src/ssh/agent.rs.
    assert r["output"].strip() in ("python3", "perl"), f"not started by the agent: {r.text}"
    r = await mcp.bash("echo $MCPSH_JOB; pwd; echo $A_B", host="web1", cwd="/tmp", env={"A_B": "it's $(x)"})
    assert r["output"].splitlines() == [r["job"], "/tmp", "it's $(x)"], r.text
    r = await mcp.bash("exit 3", host="web1")
    assert (r["status"], r["exit_code"], r.is_error) == ("exited", 3, True)
    r = await mcp.bash("kill -TERM $$", host="web1")
    assert r["status"] in ("exited", "failed") and r.is_error, r.text
    r = await mcp.bash("true", host="web1", cwd="/does/not/exist")
    assert r["exit_code"] == 126 and "/does/not/exist" in r["output"], r.text
    r = await mcp.bash("no-such-command-xyz", host="web1")
    assert r["exit_code"] == 127, r.text
    r = await mcp.bash("read x", host="web1")
    assert r["exit_code"] != 0, "stdin is /dev/null through the agent too"
    r = await mcp.bash("seq 1 200000 | sha256sum; echo err >&2", host="web1", wait=30)
    assert r["exit_code"] == 0 and "err" in r["output"], r.text
    # timeout and kill end the whole remote tree, as on a channel
    m = marker()
    r = await mcp.bash(f"(setsid sh -c 'sleep 300.{m}' &) ; sleep 301.{m}", host="web1", timeout=2, wait=20)
    assert r["status"] == "timed_out", r.text
    assert ssh_lab.wait_no_remote_pids(m, timeout=5) == []
    rs = await asyncio.gather(*(mcp.bash(f"echo n{i}", host="web1", wait=40) for i in range(50)))
    assert [x["output"] for x in rs] == [f"n{i}\n" for i in range(50)]
    # the connection dies: a running agent job is lost with the reason
    r = await mcp.bash("sleep 120", host="web1", wait=1)
    assert r["status"] == "running"
    ssh_lab["web1"].kill()
    done, _ = await mcp.wait_done(r["job"], timeout=40)
    assert done["status"] == "lost" and "web1" in done.text, done.text
