"""The CLI reads and acts on the same state as a running server."""

import pytest
from conftest import marker

pytestmark = pytest.mark.anyio


async def test_jobs_lists_running_jobs_and_all_lists_finished_ones_too(mcp, server):
    done = (await mcp.bash("echo finished"))["job"]
    running = (await mcp.bash(f"sleep 1000.{marker()}", wait=1))["job"]

    jobs = server.cli("jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert running in jobs.stdout and "running" in jobs.stdout
    assert done not in jobs.stdout

    every = server.cli("jobs", "--all")
    assert every.returncode == 0, every.stderr
    assert running in every.stdout and done in every.stdout


async def test_job_tail_prints_the_last_lines_of_a_job(mcp, server):
    job = (await mcp.bash("seq 1 30"))["job"]
    r = server.cli("job", "tail", job)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(n) for n in range(11, 31)]


async def test_job_kill_from_the_cli_kills_a_job_the_server_started(mcp, server):
    m = marker()
    job = (await mcp.bash(f"sleep 1000.{m}", wait=1))["job"]
    r = server.cli("job", "kill", job)
    assert r.returncode == 0, r.stderr
    assert "killed" in r.stdout
    p = await mcp.job("poll", id=job)
    assert p["status"] == "killed"


async def test_config_show_prints_the_effective_configuration(mcp, server):
    r = server.cli("config", "show")
    assert r.returncode == 0, r.stderr
    assert f'state_dir = "{server.state_dir}"' in r.stdout


def test_cli_on_an_unknown_job_fails_with_a_one_line_error(stdio_server):
    r = stdio_server.cli("job", "tail", "no-such-job")
    assert r.returncode != 0
    assert "no-such-job" in r.stderr and len(r.stderr.strip().splitlines()) == 1
