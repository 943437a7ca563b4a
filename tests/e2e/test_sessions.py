"""Terminal sessions (`session` tool, `mcpsh terms`, `mcpsh attach`): a real bash on a real
pseudo-terminal, driven through a real MCP client, locally and on a real sshd."""

import os
import pty
import select
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, Server, alive, marker

pytestmark = pytest.mark.anyio


@pytest.fixture
async def one(stdio_server):
    """One stdio client: session semantics do not depend on the transport (the
    transport matrix is covered by the first test)."""
    async with stdio_server.connect("auto") as s:
        yield s


async def read_until(mcp, name: str, pred, timeout: float = 20.0, **args):
    """Read new output (long-poll) until `pred(all_text, last_result)` holds."""
    seen = ""
    deadline = time.monotonic() + timeout
    while True:
        r = await mcp.session("read", name=name, wait=1, **args)
        assert not r.is_error, r.text
        if r.get("text"):
            seen += r["text"]["head"] + r["text"].get("tail", "")
        if pred(seen, r):
            return seen, r
        if time.monotonic() >= deadline:
            screen = await mcp.session("read", name=name, screen=True, **{k: v for k, v in args.items() if k == "host"})
            procs = subprocess.run(["ps", "-eo", "pid,ppid,pgid,tpgid,stat,wchan:20,args"], capture_output=True, text=True).stdout
            raise AssertionError(
                f"still waiting after {timeout}s; seen {seen!r}, last {r.text!r}\nscreen:\n{screen.text}\nprocesses:\n{procs}"
            )


async def test_state_carries_over_between_execs(mcp):
    r = await mcp.session("open", name="s1")
    assert r["reused"] is False and r["shell_pid"] > 0, r.text
    r = await mcp.session("exec", name="s1", cmd="cd /tmp && export X=1")
    assert (r["state"], r["exit_code"], r["cwd"]) == ("exited", 0, "/tmp"), r.text
    r = await mcp.session("exec", name="s1", cmd="pwd; echo $X")
    assert r["output"]["head"] == "/tmp\n1\n", r.text
    assert r.is_error is False
    # A multi-line command is one command with one status (not flattened).
    r = await mcp.session("exec", name="s1", cmd="echo a\nif true; then\n  echo b\nfi\n(exit 4)")
    assert (r["output"]["head"], r["exit_code"], r.is_error) == ("a\nb\n", 4, True), r.text
    # open again: the same shell
    again = await mcp.session("open", name="s1")
    assert again["reused"] is True and again["shell_pid"] > 0


async def test_exit_codes_are_exact_even_when_output_imitates_the_markers(one):
    await one.session("open", name="codes")
    for cmd, code in [("false", 1), ("(exit 7)", 7), ("true", 0), ("sh -c 'kill -TERM $$'", 143)]:
        r = await one.session("exec", name="codes", cmd=cmd)
        assert (r["state"], r["exit_code"]) == ("exited", code), (cmd, r.text)
    # Marks and side records typed by hand: OSC 6973 with digits, NUL-separated
    # records, and the same as the shell echoes them.
    forged = (
        "printf '\\033]6973;1234567890\\007'; printf 'E\\0001\\0000\\000/\\000S\\0002\\000';"
        " printf '\\033]6973;99\\007done\\n'; (exit 3)"
    )
    r = await one.session("exec", name="codes", cmd=forged)
    assert (r["state"], r["exit_code"], r["cwd"]) == ("exited", 3, os.environ.get("HOME", "/root")), r.text
    assert r["output"]["head"].endswith("done\n"), r.text
    # The forged text printed *after* the command's own end cannot bleed into the next one.
    r = await one.session("exec", name="codes", cmd="echo next")
    assert (r["output"]["head"], r["exit_code"]) == ("next\n", 0), r.text


async def test_a_command_that_never_returns_is_busy_then_ctrl_c_stops_it(one):
    m = marker()
    await one.session("open", name="long")
    r = await one.session("exec", name="long", cmd=f"sleep 3{m}", wait=1)
    assert r["state"] == "running", r.text
    assert alive(f"sleep 3{m}")
    busy = await one.session("exec", name="long", cmd="true")
    assert busy.is_error and "busy" in busy.text, busy.text
    await one.session("write", name="long", keys=["ctrl-c"])
    _, last = await read_until(
        one, "long", lambda _t, r: r["info"]["running"] is None and r["info"]["last"] is not None
    )
    assert last["info"]["last"]["exit_code"] == 130, last.text
    assert not alive(f"sleep 3{m}")
    r = await one.session("exec", name="long", cmd="echo after")
    assert (r["output"]["head"], r["exit_code"]) == ("after\n", 0), r.text


async def test_ctrl_c_works_when_the_server_was_started_with_sigint_ignored(tmp_path):
    # `mcpsh serve &` from a script (or CI) starts it with SIGINT ignored; commands
    # in sessions and jobs must still stop on Ctrl-C.
    server = Server("http")
    try:
        server.start(ignore_sigint=True)
        async with server.connect("auto") as mcp:
            await mcp.session("open", name="int")
            r = await mcp.session("exec", name="int", cmd="sleep 60", wait=1)
            assert r["state"] == "running", r.text
            await mcp.session("write", name="int", keys=["ctrl-c"])
            _, last = await read_until(mcp, "int", lambda _t, r: r["info"]["running"] is None)
            assert last["info"]["last"]["exit_code"] == 130, last.text
            j = await mcp.bash("sleep 60", wait=0, interactive=True)
            await mcp.job("write", id=j["job"], keys=["ctrl-c"])
            done, _ = await mcp.wait_done(j["job"], timeout=10)
            assert done.get("signal") == 2 or done.get("exit_code") == 130, done.text
    finally:
        server.cleanup()


async def test_a_python_repl_driven_by_write_and_read(one):
    await one.session("open", name="py")
    r = await one.session("exec", name="py", cmd="python3 -i -q", wait=10)
    assert r["state"] == "waiting_for_input", r.text
    assert ">>>" in r["screen"], r.text
    await one.session("write", name="py", text="x = 6\n")
    await one.session("write", name="py", text="print(x * 7)\n")
    seen, _ = await read_until(one, "py", lambda t, _r: "42" in t)
    assert "42\n" in seen
    await one.session("write", name="py", text="exit()", keys=["enter"])
    _, last = await read_until(one, "py", lambda _t, r: r["info"]["running"] is None)
    assert last["info"]["last"]["exit_code"] == 0, last.text


async def test_a_prompt_is_reported_as_waiting_for_input(one):
    await one.session("open", name="ask")
    r = await one.session("exec", name="ask", cmd='read -p "Continue? [y/N] " a; echo "got $a"', wait=10)
    assert r["state"] == "waiting_for_input", r.text
    assert "Continue? [y/N]" in r["screen"]
    await one.session("write", name="ask", text="y", keys=["enter"])
    seen, _ = await read_until(one, "ask", lambda t, _r: "got y" in t)
    assert "got y" in seen


async def test_a_pager_is_waiting_for_input_and_q_ends_it(one):
    await one.session("open", name="pager")
    r = await one.session("exec", name="pager", cmd="seq 1 500 | less", wait=10)
    assert r["state"] == "waiting_for_input", r.text
    await one.session("write", name="pager", text="q")
    _, last = await read_until(one, "pager", lambda _t, r: r["info"]["running"] is None)
    assert last["info"]["last"]["exit_code"] == 0, last.text


async def test_a_progress_bar_reads_as_its_final_screen(one):
    await one.session("open", name="bar")
    cmd = "for i in 1 2 3 4 5; do printf '\\r[%-5s] %d%%' $(printf '#%.0s' $(seq $i)) $((i*20)); sleep 0.05; done; echo"
    r = await one.session("exec", name="bar", cmd=cmd)
    assert r["exit_code"] == 0, r.text
    assert r["output"]["head"] == "[#####] 100%\n", r.text
    s = await one.session("read", name="bar", screen=True)
    assert "[#####] 100%" in s["screen"] and "20%" not in s["screen"], s["screen"]
    assert "\x1b" not in s["screen"]


async def test_list_close_and_private_transcript(one, stdio_server):
    m = marker()
    r = await one.session("open", name="lc", cwd="/tmp")
    transcript = Path(r["transcript"])
    await one.session("exec", name="lc", cmd=f"sleep 3{m} &")
    lst = await one.session("list")
    entry = next(s for s in lst["sessions"] if s["name"] == "lc")
    assert entry["open"] and entry["state"]["cwd"] == "/tmp", lst.text
    cli = stdio_server.cli("terms")
    assert cli.returncode == 0 and "lc" in cli.stdout and "idle in /tmp" in cli.stdout, cli.stdout
    assert stat.S_IMODE(transcript.parent.stat().st_mode) == 0o700
    for f in transcript.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    c = await one.session("close", name="lc")
    assert c["closed"] is True, c.text
    deadline = time.monotonic() + 5
    while alive(f"sleep 3{m}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(f"sleep 3{m}"), "closing a session ends its processes"
    r = await one.session("exec", name="lc", cmd="true")
    assert r.is_error and "no open session" in r.text, r.text
    lst = await one.session("list")
    entry = next(s for s in lst["sessions"] if s["name"] == "lc")
    assert entry["open"] is False and entry["exit_reason"] == "closed"


async def test_resize_and_another_shell(one):
    await one.session("open", name="size", cols=90, rows=20)
    r = await one.session("exec", name="size", cmd="stty size")
    assert r["output"]["head"] == "20 90\n", r.text
    await one.session("resize", name="size", cols=132, rows=43)
    r = await one.session("exec", name="size", cmd="stty size; echo $COLUMNS")
    assert r["output"]["head"] == "43 132\n132\n", r.text
    # A shell without the hooks: write/read work, exec says why it cannot.
    await one.session("open", name="plain", shell="/bin/sh")
    r = await one.session("exec", name="plain", cmd="true")
    assert r.is_error and "needs a bash session" in r.text, r.text
    await one.session("write", name="plain", text="echo from-sh-$((6*7))\n")
    seen, _ = await read_until(one, "plain", lambda t, _r: "from-sh-42" in t)


async def test_bad_input_gets_clear_errors(one):
    r = await one.session("exec", name="nope", cmd="true")
    assert r.is_error and "session action=open" in r.text
    r = await one.session("open", name="-x")
    assert r.is_error and "not valid" in r.text
    r = await one.session("open", name="ok", cwd="/does/not/exist")
    assert r.is_error and "not a directory" in r.text
    r = await one.session("open", name="ok", env={"A B": "1"})
    assert r.is_error and "not a valid variable name" in r.text
    await one.session("open", name="ok")
    r = await one.session("write", name="ok", keys=["hyper-x"])
    assert r.is_error and "unknown key" in r.text


async def test_idle_sessions_close(stdio_server):
    stdio_server.env["MCPSH_SESSION_IDLE_SECS"] = "2"
    async with stdio_server.connect("auto") as mcp:
        await mcp.session("open", name="idle")
        deadline = time.monotonic() + 15
        while True:
            lst = await mcp.session("list")
            entry = next(s for s in lst["sessions"] if s["name"] == "idle")
            if not entry["open"]:
                break
            assert time.monotonic() < deadline, lst.text
            time.sleep(0.5)
        assert "idle" in entry["exit_reason"], entry


async def test_a_session_survives_kill_9_of_the_server(http_server):
    async with http_server.connect("auto") as mcp:
        r = await mcp.session("open", name="keep")
        pid = r["shell_pid"]
        await mcp.session("exec", name="keep", cmd="cd /tmp && export KEPT=yes")
    http_server.kill9()
    http_server.restart()
    async with http_server.connect("auto") as mcp:
        r = await mcp.session("open", name="keep")
        assert (r["reused"], r["shell_pid"]) == (True, pid), r.text
        r = await mcp.session("exec", name="keep", cmd="echo $PWD $KEPT")
        assert r["output"]["head"] == "/tmp yes\n", r.text


def _pty_run(args: list[str], env: dict[str, str]):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(BIN, [BIN, *args], env)
    return pid, fd


def _pty_read_until(fd: int, needle: bytes, timeout: float = 15.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not shown; got {out[-2000:]!r}"
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


async def test_attach_shows_what_the_agent_runs_and_rw_types(one, stdio_server):
    m = marker()
    await one.session("open", name="watch")
    pid, fd = _pty_run(["attach", "watch"], stdio_server.env)
    try:
        _pty_read_until(fd, b"Ctrl-] detaches")
        await one.session("exec", name="watch", cmd=f"echo agent-{m}")
        _pty_read_until(fd, f"agent-{m}".encode())
        os.write(fd, b"echo ignored\r")  # read-only: not typed
        os.write(fd, b"\x1d")
        _pty_read_until(fd, b"detached")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with_kill(pid)
        os.close(fd)
    r = await one.session("exec", name="watch", cmd="history | tail -3")
    assert "ignored" not in r["output"]["head"], r.text

    pid, fd = _pty_run(["attach", "--rw", "watch"], stdio_server.env)
    try:
        _pty_read_until(fd, b"typing goes to the session")
        os.write(fd, f"echo typed-{m}\r".encode())
        seen, _ = await read_until(one, "watch", lambda t, _r: f"typed-{m}\n" in t)
        os.write(fd, b"\x1d")
        _pty_read_until(fd, b"detached")
        os.waitpid(pid, 0)
    finally:
        with_kill(pid)
        os.close(fd)


def with_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


async def test_the_same_session_on_an_ssh_host(ssh_lab):
    server = Server("stdio")
    server.env = ssh_lab.env(server.env)
    m = marker()
    try:
        async with server.connect("auto") as mcp:
            r = await mcp.session("open", name="bad", host="web1", cwd="/does/not/exist")
            assert r.is_error and "did not start" in r.text and "/does/not/exist" in r.text, r.text
            r = await mcp.session("open", name="r1", host="web1")
            assert not r.is_error and r["reused"] is False, r.text
            r = await mcp.session("exec", name="r1", host="web1", cmd="cd /tmp && export Y=2")
            assert (r["exit_code"], r["cwd"]) == (0, "/tmp"), r.text
            r = await mcp.session("exec", name="r1", host="web1", cmd="pwd; echo $Y; (exit 5)")
            assert (r["output"]["head"], r["exit_code"]) == ("/tmp\n2\n", 5), r.text
            r = await mcp.session("exec", name="r1", host="web1", cmd=f"sleep 3{m}", wait=1)
            assert r["state"] == "running", r.text
            await mcp.session("write", name="r1", host="web1", keys=["ctrl-c"])
            _, last = await read_until(
                mcp, "r1", lambda _t, r: r["info"]["running"] is None, host="web1"
            )
            assert last["info"]["last"]["exit_code"] == 130
            # A prompt on the remote terminal is reported too (from the screen there).
            r = await mcp.session("exec", name="r1", host="web1", cmd='read -p "Proceed? [y/N] " a; echo "got $a"', wait=10)
            assert r["state"] == "waiting_for_input", r.text
            await mcp.session("write", name="r1", host="web1", text="y", keys=["enter"])
            seen, _ = await read_until(mcp, "r1", lambda t, _r: "got y" in t, host="web1")
            # The side channel's FIFO was removed right after the shell opened it.
            r = await mcp.session("exec", name="r1", host="web1", cmd="ls -d ${TMPDIR:-/tmp}/mcpsh.* 2>/dev/null | wc -l")
            assert r["output"]["head"].strip() == "0", r.text
            # The agent's session, watched by a person.
            pid, fd = _pty_run(["attach", "--host", "web1", "r1"], server.env)
            try:
                _pty_read_until(fd, b"Ctrl-] detaches")
                await mcp.session("exec", name="r1", host="web1", cmd=f"echo remote-{m}")
                _pty_read_until(fd, f"remote-{m}".encode())
                os.write(fd, b"\x1d")
                _pty_read_until(fd, b"detached")
            finally:
                with_kill(pid)
                os.close(fd)
            await mcp.session("exec", name="r1", host="web1", cmd=f"sleep 4{m} &")
            assert ssh_lab.remote_pids(f"sleep 4{m}")
            c = await mcp.session("close", name="r1", host="web1")
            assert c["closed"] is True, c.text
            assert ssh_lab.wait_no_remote_pids(f"sleep 4{m}") == []
    finally:
        server.cleanup()
