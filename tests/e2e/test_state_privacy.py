"""State files are private: files 0600, directories 0700 (sockets aside)."""

import stat

import pytest

pytestmark = pytest.mark.anyio


async def test_every_state_file_is_0600_and_every_directory_0700(mcp, server):
    await mcp.bash("echo hi")
    await mcp.bash("seq 1 100000")
    await mcp.bash("printf tty", tty=True)
    r = await mcp.bash("read x", interactive=True, wait=1)
    await mcp.job("write", id=r["job"], text="x", keys=["enter"])
    await mcp.wait_done(r["job"])

    modes = {}
    for p in [server.state_dir, *server.state_dir.rglob("*")]:
        st = p.lstat()
        if stat.S_ISSOCK(st.st_mode):
            continue
        modes[str(p.relative_to(server.state_dir.parent))] = oct(stat.S_IMODE(st.st_mode))
    expected = {
        name: oct(0o700) if (server.state_dir.parent / name).is_dir() else oct(0o600) for name in modes
    }
    assert len(modes) > 5
    assert modes == expected
