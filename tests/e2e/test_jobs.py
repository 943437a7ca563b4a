"""Jobs: backgrounding, long-poll, interactive input, timeouts, kills and listing."""

import time

import anyio
import pytest
from conftest import alive, marker

pytestmark = pytest.mark.anyio


async def test_a_slow_command_returns_running_after_wait_then_poll_follows_it_to_the_end(mcp):
    started = time.monotonic()
    r = await mcp.bash("sleep 5; echo done", wait=1)
    assert time.monotonic() - started < 3
    assert r["status"] == "running" and r.is_error is False
    assert "exit_code" not in r

    end, new_output = await mcp.wait_done(r["job"])
    assert (end["status"], end["exit_code"]) == ("exited", 0)
    assert "done" in new_output


@pytest.mark.parametrize("transport,mode", [("http", "auto")])
async def test_sleep_30_backgrounds_after_1s_and_a_poll_with_wait_40_sees_it_finish(mcp):
    started = time.monotonic()
    r = await mcp.bash("sleep 30; echo done", wait=1)
    assert time.monotonic() - started < 3
    assert r["status"] == "running"

    end, new_output = await mcp.wait_done(r["job"], timeout=60)
    assert (end["status"], end["exit_code"]) == ("exited", 0)
    assert "done" in new_output


async def test_wait_0_backgrounds_at_once_and_returns_a_running_job(mcp):
    for _ in range(10):
        r = await mcp.bash("sleep 0.5", wait=0)
        assert r.is_error is False, r.text
        assert (r["status"], r["output"], r["total_bytes"]) == ("running", "", 0)


async def test_an_interactive_job_reads_what_job_write_types(mcp):
    r = await mcp.bash("read line; echo got:$line", interactive=True, wait=1)
    assert r["status"] == "running"

    w = await mcp.job("write", id=r["job"], text="hello", keys=["enter"])
    assert w.is_error is False and w["written_bytes"] >= len("hello")

    end, _ = await mcp.wait_done(r["job"])
    assert (end["status"], end["exit_code"]) == ("exited", 0)
    assert "got:hello" in await mcp.read_all(r["job"])


async def test_a_tty_job_output_is_rendered_without_escape_codes(mcp):
    r = await mcp.bash(r"printf '\033[31mred\033[0m\n'", tty=True, wait=10)
    assert (r["status"], r["exit_code"]) == ("exited", 0)
    assert "red" in r["output"]
    assert "\x1b" not in r["output"] and "[31m" not in r["output"]


async def test_timeout_kills_the_command_and_reports_timed_out(mcp):
    m = marker()
    started = time.monotonic()
    r = await mcp.bash(f"sleep 100.{m}", timeout=2, wait=10)
    assert time.monotonic() - started < 3
    assert r["status"] == "timed_out" and r.is_error is True
    assert alive(f"sleep 100.{m}") == []


async def test_kill_ends_a_tree_that_double_forks_and_calls_setsid(mcp):
    m = marker()
    sleeps = [f"sleep 1000.{m}{i}" for i in range(1, 5)]
    cmd = f"setsid bash -c '{sleeps[0]} & {sleeps[1]}' & ({sleeps[2]} &) ; {sleeps[3]}"
    r = await mcp.bash(cmd, wait=1)
    with anyio.fail_after(10):
        while any(alive(s) == [] for s in sleeps):  # all four are up
            await anyio.sleep(0.05)

    k = await mcp.job("kill", id=r["job"])
    assert k["status"] == "killed"
    assert k["kill"]["verified"] is True and k["kill"]["remaining"] == 0
    assert {s: alive(s) for s in sleeps} == {s: [] for s in sleeps}


async def test_list_shows_newest_first_and_pages_without_duplicates(mcp):
    started = [(await mcp.bash(f"echo {i}", title=f"list{i}"))["job"] for i in range(5)]

    seen, page, pages = [], None, 0
    while True:
        args = {"limit": 2} | ({"page": page} if page else {})
        r = await mcp.job("list", **args)
        assert r.is_error is False and len(r["jobs"]) <= 2
        seen += [j["job"] for j in r["jobs"]]
        pages += 1
        page = r.get("next_page")
        if not page:
            break
    assert seen == list(reversed(started))
    assert pages == 3


async def test_a_long_inline_wait_sends_progress_when_the_client_asks(mcp):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, message))

    r = await mcp.client.call_tool("bash", {"cmd": "sleep 3; echo ok", "wait": 10}, progress_callback=on_progress)
    assert r.structured_content["status"] == "exited"
    assert seen, "no progress notification during a 3 s inline wait"
    assert all(message and r.structured_content["job"] in message for _, message in seen)
