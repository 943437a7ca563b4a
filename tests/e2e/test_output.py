"""Output economy: bounded excerpts with exact totals, lossless paging, tail and grep."""

import hashlib
import subprocess

import pytest

pytestmark = pytest.mark.anyio

SEQ = subprocess.run(["seq", "1", "2000000"], capture_output=True, check=True).stdout


async def test_huge_output_is_an_excerpt_with_exact_totals_and_pages_back_losslessly(mcp):
    r = await mcp.bash("seq 1 2000000", wait=50)
    assert (r["status"], r["exit_code"]) == ("exited", 0)
    assert (r["total_bytes"], r["total_lines"]) == (len(SEQ), 2000000)
    assert len(r["output"].encode()) <= 16384 + 300  # the default budget + one marker line
    assert r["output"].startswith("1\n2\n3\n") and r["output"].endswith("1999999\n2000000\n")
    o = r["omitted"]
    assert 0 < o["from"] < o["to"] < len(SEQ) and o["bytes"] == o["to"] - o["from"]
    assert f"{o['from']}" in r["output"] and f"cursor={o['from']}" in r["output"]
    # head + omitted + tail is exactly the output
    head, tail = SEQ[: o["from"]], SEQ[o["to"] :]
    assert r["output"].encode().startswith(head) and r["output"].encode().endswith(tail)

    pages = await mcp.pages(r["job"])
    assert [p["start"] for p in pages[1:]] == [p["next_cursor"] for p in pages[:-1]]
    assert pages[-1]["next_cursor"] == len(SEQ)
    everything = "".join(p["output"] for p in pages).encode()
    assert hashlib.sha256(everything).hexdigest() == hashlib.sha256(SEQ).hexdigest()


async def test_poll_reads_the_omitted_range_by_cursor(mcp):
    r = await mcp.bash("seq 1 100000", wait=50, max_output=1024)
    o = r["omitted"]
    p = await mcp.job("poll", id=r["job"], cursor=o["from"], max_output=1024)
    assert p["start"] == o["from"] and p["first_line"] == o["first_line"]
    assert p["output"].startswith(f"{o['first_line']}\n")
    assert p["output"].endswith("\n") and len(p["output"]) <= 1024


async def test_poll_tail_returns_the_last_n_lines(mcp):
    r = await mcp.bash("seq 1 1000")
    p = await mcp.job("poll", id=r["job"], tail=5)
    assert p["output"] == "996\n997\n998\n999\n1000\n"
    assert p["first_line"] == 996


async def test_poll_grep_returns_matching_lines_with_their_numbers(mcp):
    r = await mcp.bash("seq 1 1000")
    p = await mcp.job("poll", id=r["job"], grep="^99")
    expected = ["99: 99"] + [f"{n}: {n}" for n in range(990, 1000)]
    assert p["output"].splitlines() == expected
    assert p["matches"] == 11


async def test_poll_without_cursor_returns_only_new_output(mcp):
    r = await mcp.bash("echo one; sleep 1; echo two", wait=0.5)
    assert r["status"] == "running" and r["output"] == "one\n"
    end, new_output = await mcp.wait_done(r["job"])
    assert new_output == "two\n"
    assert await mcp.read_all(r["job"]) == "one\ntwo\n"
