"""Shared harness for the end-to-end tests of mcpsh.

Every test gets its own state directory and talks to a real `mcpsh` binary
through the official Python MCP client, over stdio or Streamable HTTP, in
`auto` (2026-era, discover first) or `legacy` (initialize handshake) mode.

Jobs deliberately outlive the server (their supervisors run in their own
session), so every server started here carries a unique `MCPSH_E2E_TOKEN` in
its environment; job processes inherit it, and teardown kills exactly the
processes that carry this test's token.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from sshd import SshLab, SshLabError, missing_binaries

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MCPSH_BIN") or str(REPO / "target" / "debug" / "mcpsh")

# The largest page `job poll` may return (the server's max_output_limit).
MAX_PAGE = 262144
# Upper bound for any single tool call, so a hung server fails a test instead of the suite.
CALL_TIMEOUT = 120.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- results


class Result(dict):
    """A tool result: the structured content as a dict, plus `is_error` and the text rendering."""

    is_error: bool
    text: str

    @classmethod
    def of(cls, r: Any) -> Result:
        out = cls(r.structured_content or {})
        out.is_error = bool(r.is_error)
        out.text = "".join(getattr(c, "text", "") for c in r.content)
        return out

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"{key!r} not in the result (is_error={self.is_error}): {self.text!r}")


class Session:
    """A connected MCP client with helpers for the `bash` and `job` tools."""

    def __init__(self, client: Client, transport: str, mode: str):
        self.client = client
        self.transport = transport
        self.mode = mode

    async def call(self, tool: str, args: dict[str, Any], deadline: float = CALL_TIMEOUT) -> Result:
        with anyio.fail_after(deadline):
            return Result.of(await self.client.call_tool(tool, args))

    async def bash(self, cmd: str, **args: Any) -> Result:
        return await self.call("bash", {"cmd": cmd, **args})

    async def job(self, action: str, **args: Any) -> Result:
        return await self.call("job", {"action": action, **args})

    async def session(self, action: str, **args: Any) -> Result:
        return await self.call("session", {"action": action, **args})

    async def wait_done(self, job_id: str, timeout: float = 90.0) -> tuple[Result, str]:
        """Long-poll a job until it is no longer running.

        Returns the last poll result and all output the polls returned (the
        output new since the previous poll, as the agent would see it)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"job {job_id} still running after {timeout}s"
            r = await self.job("poll", id=job_id, wait=min(40.0, max(left, 0.1)))
            seen.append(r.get("output", ""))
            if r["status"] != "running":
                return r, "".join(seen)

    async def pages(self, job_id: str, max_output: int = MAX_PAGE) -> list[Result]:
        """Every page of a job's output, read by cursor from 0 until next_cursor == total_bytes."""
        out: list[Result] = []
        cursor = 0
        while True:
            r = await self.job("poll", id=job_id, cursor=cursor, max_output=max_output)
            out.append(r)
            assert "output" in r, r.text  # a page (isError may be set: it mirrors the exit code)
            if r["next_cursor"] >= r["total_bytes"]:
                return out
            assert r["next_cursor"] > cursor, f"paging made no progress at cursor {cursor}: {r.text}"
            cursor = r["next_cursor"]

    async def read_all(self, job_id: str) -> str:
        return "".join(p["output"] for p in await self.pages(job_id))


# --------------------------------------------------------------------------- servers


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_with(needle: bytes, where: str = "environ") -> list[int]:
    """Live (non-zombie) processes whose /proc/PID/<where> contains `needle`."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            data = (d / where).read_bytes()
            if where == "cmdline":
                data = data.replace(b"\0", b" ")
            if needle not in data:
                continue
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            pids.append(int(d.name))
    return pids


def alive(marker: str) -> list[int]:
    """Live processes whose command line contains `marker`."""
    return processes_with(marker.encode(), "cmdline")


class Server:
    """One state directory, and for HTTP one `mcpsh serve` process on it.

    Over stdio every `connect()` spawns a fresh `mcpsh stdio` (as a client would)."""

    def __init__(self, transport: str, auth: bool = False):
        self.transport = transport
        # With auth, `serve` runs as a user would start it (OAuth on); the
        # first start prints the generated admin password, kept here.
        self.auth = auth
        self.password: str | None = None
        # Short paths: job control sockets live under the state dir (sun_path is 108 bytes).
        self.base = Path(tempfile.mkdtemp(prefix="mcpsh-e2e-"))
        self.state_dir = self.base / "state"  # not created: mcpsh must create it privately
        self.token = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "MCPSH_STATE_DIR": str(self.state_dir),
            "MCPSH_E2E_TOKEN": self.token,
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        self.env.pop("MCPSH_CONFIG", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log = self.base / f"{transport}.log"

    # -- HTTP process control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, port: int | None = None, timeout: float = 20.0, extra: tuple[str, ...] = (), ignore_sigint: bool = False
    ) -> None:
        """Start `mcpsh serve`. With `ignore_sigint`, as a non-interactive shell starts a
        background command (`mcpsh serve &`): SIGINT and SIGQUIT ignored."""
        assert self.transport == "http"
        flags = [] if self.auth else ["--insecure-no-auth"]
        for _ in range(5):
            self.port = port or free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [BIN, "serve", *flags, "--listen", f"127.0.0.1:{self.port}", *extra],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_ignore_sigint if ignore_sigint else None,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_open(self.port) and "serving MCP at" in self.log.read_text(errors="replace"):
                    if self.auth and self.password is None:
                        m = re.search(r'with password: (\S+)', self.log.read_text(errors="replace"))
                        self.password = m.group(1) if m else None
                    return
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"mcpsh serve did not listen within {timeout}s; see {self.log}")
            if port is not None:
                time.sleep(0.2)  # a fixed port may still be held by the previous process
        raise RuntimeError(f"mcpsh serve exited at start:\n{self.log.read_text(errors='replace')}")

    def kill9(self) -> None:
        """Crash the server (SIGKILL): no graceful shutdown at all."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        self.start(port=self.port)

    # -- clients

    @contextlib.asynccontextmanager
    async def connect(self, mode: str) -> AsyncIterator[Session]:
        if self.transport == "http":
            target: Any = self.url
            async with Client(target, mode=mode) as c:
                yield Session(c, self.transport, mode)
        else:
            params = StdioServerParameters(command=BIN, args=["stdio"], env=self.env)
            with open(self.log, "a") as errlog:
                async with Client(stdio_client(params, errlog=errlog), mode=mode) as c:
                    yield Session(c, self.transport, mode)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run the mcpsh CLI against this server's state directory."""
        return subprocess.run(
            [BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    # -- teardown

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        needle = f"MCPSH_E2E_TOKEN={self.token}".encode()
        # SIGTERM first: a start-up file caught midway then runs its exit trap.
        # Killed outright, `pyenv rehash` (run by pyenv's shell init in a
        # session's bash) leaves its lock behind, and every later interactive
        # shell of this user waits 60 s for it.
        for attempt in range(6):
            pids = processes_with(needle)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM if attempt == 0 else signal.SIGKILL)
            time.sleep(0.3 if attempt == 0 else 0.1)
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def _server(transport: str):
    s = Server(transport)
    try:
        if transport == "http":
            s.start()
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def server(transport: str):
    """A state dir, with `mcpsh serve` running on it for the HTTP transport."""
    yield from _server(transport)


@pytest.fixture
def http_server():
    """`mcpsh serve --insecure-no-auth` on a free loopback port with its own state dir."""
    yield from _server("http")


@pytest.fixture
def stdio_server():
    """A state dir for clients that spawn `mcpsh stdio` themselves."""
    yield from _server("stdio")


@pytest.fixture
async def mcp(server: Server, mode: str) -> AsyncIterator[Session]:
    """A connected MCP session, for every transport x mode combination."""
    async with server.connect(mode) as s:
        yield s


def marker() -> str:
    """A unique number usable as a fractional `sleep` duration suffix to find processes by."""
    return str(uuid.uuid4().int % 10**9).rjust(9, "1")


# --------------------------------------------------------------------------- SSH lab
# Real OpenSSH servers on 127.0.0.1 for the SSH tests (see sshd.py). `./scripts/test`
# installs OpenSSH and sets MCPSH_E2E_REQUIRE_SSHD=1, so there a missing or broken sshd
# fails the tests; elsewhere (a bare `pytest` on a machine without it) they are skipped.


def _no_sshd(why: str) -> NoReturn:
    if os.environ.get("MCPSH_E2E_REQUIRE_SSHD"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def ssh_lab(tmp_path: Path):
    """An SshLab with two running sshd instances (~0.1 s to set up, so one per test):

    - `web1`: stock settings, MaxSessions 10;
    - `hop`: used as a ProxyJump hop;

    a known_hosts with every host key of both (as ssh-keyscan would give), and an
    ssh_config with the aliases `web1`, `hop` and `behind-hop` (web1 reached through
    `ProxyJump hop`). `ssh_lab.env()` is the environment that points mcpsh at it."""
    missing = missing_binaries()
    if missing:
        _no_sshd(f"OpenSSH is not installed (missing {', '.join(missing)}); ./scripts/test installs it")
    lab = SshLab(tmp_path)
    try:
        try:
            web1 = lab.start_sshd("web1", max_sessions=10)
            hop = lab.start_sshd("hop")
        except SshLabError as e:
            _no_sshd(f"sshd cannot run here: {e}")
        for sshd in (web1, hop):
            lab.known_hosts_add(sshd, key="all")
        lab.write_ssh_config({
            "web1": web1,
            "hop": hop,
            "behind-hop": {"sshd": web1, "proxy_jump": "hop"},
        })
        yield lab
    finally:
        lab.close()


@pytest.fixture
def ssh_server(transport: str, ssh_lab: SshLab):
    """Like `server`, with mcpsh pointed at `ssh_lab` (MCPSH_SSH_CONFIG, MCPSH_HOSTS_TOML,
    no SSH_AUTH_SOCK). Over stdio each connect reads `ssh_server.env`, so a test may still
    change it (e.g. `ssh_server.env = ssh_lab.env(ssh_server.env)` after `start_agent()`);
    an HTTP server needs `restart()` for that."""
    s = Server(transport)
    s.env = ssh_lab.env(s.env)
    try:
        if transport == "http":
            s.start()
        yield s
    finally:
        s.cleanup()


@pytest.fixture
async def ssh_mcp(ssh_server: Server, mode: str) -> AsyncIterator[Session]:
    """A connected MCP session to an mcpsh that knows the `ssh_lab` hosts."""
    async with ssh_server.connect(mode) as s:
        yield s
