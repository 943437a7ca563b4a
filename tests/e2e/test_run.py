"""`bash` runs a command and reports status, exit code and output (over stdio and HTTP, auto and legacy)."""

import time

import pytest

pytestmark = pytest.mark.anyio


async def test_server_identifies_itself_as_mcpsh_with_a_version(mcp):
    info = mcp.client.server_info
    assert info is not None and info.name == "mcpsh"
    assert info.version and info.version[0].isdigit()


async def test_echo_exits_0_with_its_output(mcp):
    r = await mcp.bash("echo hi")
    assert (r["status"], r["exit_code"], r["output"]) == ("exited", 0, "hi\n")
    assert r.is_error is False
    assert (r["total_bytes"], r["total_lines"]) == (3, 1)


async def test_non_zero_exit_is_reported_with_is_error(mcp):
    r = await mcp.bash("exit 3")
    assert (r["status"], r["exit_code"]) == ("exited", 3)
    assert r.is_error is True


async def test_stdin_is_closed_so_a_prompt_fails_fast(mcp):
    started = time.monotonic()
    r = await mcp.bash("read x && echo got:$x", wait=10)
    assert time.monotonic() - started < 2
    assert r["status"] == "exited" and r["exit_code"] != 0
    assert "got:" not in r["output"]


async def test_stdin_text_is_fed_then_eof(mcp):
    r = await mcp.bash("cat", stdin="abc\n")
    assert (r["status"], r["exit_code"], r["output"]) == ("exited", 0, "abc\n")
