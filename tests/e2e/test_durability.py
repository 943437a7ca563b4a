"""Jobs outlive a crash of `mcpsh serve` and are re-adopted by the next server on the same state."""

import pytest

pytestmark = pytest.mark.anyio

SCRIPT = "for i in $(seq 1 50); do echo line $i; sleep 0.1; done; exit 7"


async def test_a_job_started_before_kill_9_of_the_server_finishes_after_a_restart(http_server, mode):
    async with http_server.connect(mode) as mcp:
        r = await mcp.bash(SCRIPT, wait=0)
        assert r["status"] == "running", r.text
    http_server.kill9()
    http_server.restart()

    async with http_server.connect(mode) as mcp:
        end, _ = await mcp.wait_done(r["job"], timeout=60)
        assert (end["status"], end.get("exit_code")) == ("exited", 7), end.text
        assert end.is_error is True
        lines = (await mcp.read_all(r["job"])).splitlines()
    assert lines == [f"line {i}" for i in range(1, 51)]
