"""`file` and `file_write` on an SSH host (the lab's sshd; SFTP plus `rg`/`grep` there),
answering as they do on `local`."""

import base64
import hashlib
import os

import pytest

pytestmark = pytest.mark.anyio


async def both(mcp, tool, args):
    """The same call on local and on web1 (the lab host is this machine, so the paths are
    the same files)."""
    local = await mcp.call(tool, {**args, "host": "local"})
    remote = await mcp.call(tool, {**args, "host": "web1"})
    return local, remote


async def test_every_read_action_matches_local(ssh_mcp, tmp_path):
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "a.rs").write_text("".join(f"fn f{i}() {{}} // line {i}\n" for i in range(1, 3001)))
    (tree / "README").write_text("hello\nneedle here\n")
    (tree / "bin.dat").write_bytes(bytes(range(256)) * 4)
    local, remote = await both(ssh_mcp, "file", {"action": "read", "path": str(tree / "src/a.rs"), "offset": 2500, "limit": 20})
    assert not remote.is_error, remote.text
    assert remote["content"] == local["content"] and "line 2500" in remote["content"]
    local, remote = await both(ssh_mcp, "file", {"action": "list", "path": str(tree), "depth": 0})
    assert sorted(e["path"] for e in remote["entries"]) == sorted(e["path"] for e in local["entries"])
    local, remote = await both(ssh_mcp, "file", {"action": "grep", "path": str(tree), "pattern": "line 2[0-9]{3}$", "limit": 5})
    assert remote["total_matches"] == local["total_matches"] == 1000, remote.text
    local, remote = await both(ssh_mcp, "file", {"action": "stat", "path": str(tree / "README"), "sha256": True})
    assert remote["sha256"] == local["sha256"] == hashlib.sha256(b"hello\nneedle here\n").hexdigest()
    r = await ssh_mcp.call("file", {"action": "read", "path": str(tree / "bin.dat"), "host": "web1"})
    assert r.is_error and "base64" in r.text
    r = await ssh_mcp.call("file", {"action": "read", "path": str(tree / "bin.dat"), "host": "web1",
                                    "encoding": "base64", "byte_offset": 256, "byte_length": 256})
    assert base64.b64decode(r["content"]) == bytes(range(256))


async def test_every_write_action_on_the_host(ssh_mcp, tmp_path):
    d = tmp_path / "w"
    f = d / "deep" / "x.txt"
    w = await ssh_mcp.call("file_write", {"action": "write", "path": str(f), "content": "one\ntwo\n", "host": "web1"})
    assert not w.is_error and f.read_text() == "one\ntwo\n", w.text
    os.chmod(f, 0o640)
    w = await ssh_mcp.call("file_write", {"action": "write", "path": str(f), "content": "uno\ntwo\n", "host": "web1",
                                          "if_hash": hashlib.sha256(b"one\ntwo\n").hexdigest()})
    assert not w.is_error and f.read_text() == "uno\ntwo\n" and (f.stat().st_mode & 0o777) == 0o640, w.text
    stale = await ssh_mcp.call("file_write", {"action": "write", "path": str(f), "content": "x", "host": "web1",
                                              "if_hash": hashlib.sha256(b"one\ntwo\n").hexdigest()})
    assert stale.is_error and f.read_text() == "uno\ntwo\n"
    await ssh_mcp.call("file_write", {"action": "append", "path": str(f), "content": "three\n", "host": "web1"})
    e = await ssh_mcp.call("file_write", {"action": "edit", "path": str(f), "host": "web1",
                                          "edits": [{"old": "two", "new": "dos"}]})
    assert not e.is_error and f.read_text() == "uno\ndos\nthree\n", e.text
    miss = await ssh_mcp.call("file_write", {"action": "edit", "path": str(f), "host": "web1",
                                             "edits": [{"old": "doss", "new": "x"}]})
    assert miss.is_error and f.read_text() == "uno\ndos\nthree\n"
    c = await ssh_mcp.call("file_write", {"action": "copy", "path": str(f), "to": str(d / "y.txt"), "host": "web1"})
    assert not c.is_error and (d / "y.txt").read_text() == f.read_text()
    again = await ssh_mcp.call("file_write", {"action": "copy", "path": str(f), "to": str(d / "y.txt"), "host": "web1"})
    assert again.is_error, "no overwrite unless asked"
    m = await ssh_mcp.call("file_write", {"action": "move", "path": str(d / "y.txt"), "to": str(d / "z.txt"), "host": "web1"})
    assert not m.is_error and (d / "z.txt").exists() and not (d / "y.txt").exists()
    nd = await ssh_mcp.call("file_write", {"action": "delete", "path": str(d / "deep"), "host": "web1"})
    assert nd.is_error and f.exists(), "directories need recursive"
    rd = await ssh_mcp.call("file_write", {"action": "delete", "path": str(d / "deep"), "recursive": True, "host": "web1"})
    assert not rd.is_error and not (d / "deep").exists()


async def test_hostile_paths_and_patterns_are_data_on_the_host(ssh_mcp, tmp_path):
    canary = tmp_path / "pwned"
    d = tmp_path / "h"
    d.mkdir()
    for name in ["-rf", "--help", "a b", "$(touch x)", "-e"]:
        (d / name).write_text(f"touch {canary}\n")
    for pattern in ["-rf", "--pre=sh", f"$(touch {canary})", f"`touch {canary}`", "--files", "-e", "--"]:
        r = await ssh_mcp.call("file", {"action": "grep", "path": str(d), "pattern": pattern, "fixed": True, "host": "web1"})
        assert not r.is_error, (pattern, r.text)
    r = await ssh_mcp.call("file", {"action": "read", "path": str(d / "-rf"), "host": "web1"})
    assert "\ttouch " in r["content"], r.text
    r = await ssh_mcp.call("file", {"action": "grep", "path": str(d), "pattern": "touch", "host": "web1"})
    assert r["total_matches"] == 5, r.text
    assert not canary.exists()
