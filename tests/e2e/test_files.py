"""The file tools through a real MCP client: `file` (read, list, grep, stat) and
`file_write` (write, append, edit, delete, move, copy), their errors and limits,
and confinement to configured roots."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import Server, Session

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fs(server: Server):
    """A session (auto mode) and a scratch directory outside the state dir."""
    work = server.base / "work"
    work.mkdir()
    async with server.connect("auto") as s:
        yield s, work


async def read(s: Session, path: Path | str, **args) -> dict:
    return await s.call("file", {"action": "read", "path": str(path), **args})


async def write(s: Session, action: str, path: Path | str, **args) -> dict:
    return await s.call("file_write", {"action": action, "path": str(path), **args})


def body(r) -> str:
    """The file text of a read page, without the line numbers."""
    return "".join(line.split("\t", 1)[1] + "\n" for line in r["content"].splitlines())


async def test_tools_are_listed_with_honest_annotations(fs):
    s, _ = fs
    tools = {t.name: t for t in (await s.client.list_tools()).tools}
    assert tools["file"].annotations.read_only_hint is True
    assert tools["file_write"].annotations.read_only_hint is False
    assert tools["file_write"].annotations.destructive_hint is True
    # The read-only tool cannot be talked into writing through any parameter.
    with pytest.raises(Exception, match="unknown variant `write`"):
        await s.call("file", {"action": "write", "path": "/tmp/x", "content": "x"})


async def test_write_read_and_page_with_line_numbers(fs):
    s, work = fs
    text = "".join(f"line {i}\n" for i in range(1, 5001))
    w = await write(s, "write", work / "a/b/notes.txt", content=text)
    assert not w.is_error and w["created"] is True
    assert w["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    r = await read(s, work / "a/b/notes.txt", offset=10, limit=3)
    assert r["content"] == "    10\tline 10\n    11\tline 11\n    12\tline 12\n"
    assert (r["start_line"], r["end_line"], r["next_offset"]) == (10, 12, 13)
    got, offset = "", 1
    while True:
        r = await read(s, work / "a/b/notes.txt", offset=offset, max_bytes=4096)
        assert len(r["content"].encode()) <= 4096
        got += body(r)
        if "next_offset" not in r:
            break
        offset = r["next_offset"]
    assert got == text and r["total_lines"] == 5000


async def test_write_if_hash_keeps_mode_and_append(fs):
    s, work = fs
    p = work / "conf"
    w = await write(s, "write", p, content="v1\n")
    os.chmod(p, 0o640)
    bad = await write(s, "write", p, content="v2\n", if_hash="0" * 64)
    assert bad.is_error and w["sha256"] in bad.text
    assert p.read_text() == "v1\n"
    ok = await write(s, "write", p, content="v2\n", if_hash=w["sha256"])
    assert not ok.is_error and p.read_text() == "v2\n"
    assert p.stat().st_mode & 0o7777 == 0o640
    await write(s, "append", p, content="v3\n")
    assert p.read_text() == "v2\nv3\n"
    raw = bytes(range(256))
    await write(s, "write", work / "bin", content=base64.b64encode(raw).decode(), encoding="base64")
    assert (work / "bin").read_bytes() == raw


async def test_edit_is_exact_unique_and_atomic(fs):
    s, work = fs
    p = work / "main.py"
    orig = "def a():\n    return 1\n\ndef b():\n    return 1\n"
    p.write_text(orig)
    amb = await write(s, "edit", p, edits=[{"old": "return 1", "new": "return 2"}])
    assert amb.is_error and "occurs 2 times" in amb.text and p.read_text() == orig
    miss = await write(s, "edit", p, edits=[{"old": "def a():", "new": "def a2():"}, {"old": "retrun 1", "new": "x"}])
    assert miss.is_error and "not found" in miss.text and "line 2" in miss.text and p.read_text() == orig
    ok = await write(s, "edit", p, edits=[{"old": "def a():", "new": "def a2():"}, {"old": "return 1", "new": "return 2", "count": 2}])
    assert not ok.is_error and ok["replacements"] == 3
    assert p.read_text() == "def a2():\n    return 2\n\ndef b():\n    return 2\n"


async def test_dash_names_and_patterns_are_data(fs):
    s, work = fs
    p = work / "-delete"
    await write(s, "write", p, content="x -> y\n-f/etc/shadow\n--help\n")
    st = await s.call("file", {"action": "stat", "path": str(p), "sha256": True})
    assert st["kind"] == "file" and st["size"] == 28
    for pattern, line in [("->", 1), ("-f/etc/shadow", 2), ("--help", 3)]:
        g = await s.call("file", {"action": "grep", "path": str(work), "pattern": pattern, "fixed": True})
        assert not g.is_error, g.text
        assert [(m["path"], m["line"]) for m in g["matches"]] == [("-delete", line)], pattern
    d = await write(s, "delete", p)
    assert not d.is_error and not p.exists() and work.exists()


async def test_list_and_grep_paginate(fs):
    s, work = fs
    for i in range(30):
        (work / "src" / f"m{i:02}").mkdir(parents=True)
        (work / "src" / f"m{i:02}" / "lib.rs").write_text(f"fn f{i}() {{ needle(); }}\n// needle again\n")
    (work / ".hidden").write_text("needle\n")
    entries, offset = [], 0
    while True:
        l = await s.call("file", {"action": "list", "path": str(work / "src"), "depth": 0, "limit": 7, "offset": offset})
        entries += [e["path"] for e in l["entries"]]
        if "next_offset" not in l or l["next_offset"] is None:
            break
        offset = l["next_offset"]
    assert len(entries) == 60 and entries == sorted(entries, key=lambda p: p.split("/"))
    only = await s.call("file", {"action": "list", "path": str(work), "depth": 0, "glob": "**/*.rs", "limit": 100})
    assert len([e for e in only["entries"] if e["kind"] == "file"]) == 30
    matches, offset = [], 0
    while True:
        g = await s.call("file", {"action": "grep", "path": str(work), "pattern": r"needle\(\)", "limit": 8, "offset": offset})
        assert g["total_matches"] == 30
        matches += [(m["path"], m["line"]) for m in g["matches"]]
        if g.get("next_offset") is None:
            break
        offset = g["next_offset"]
    assert matches == sorted(matches) and len(set(matches)) == 30


async def test_special_and_huge_files_answer_fast_and_bounded(fs):
    s, work = fs
    fifo = work / "fifo"
    os.mkfifo(fifo)
    sparse = work / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(10 << 30)
    for p in ["/dev/zero", "/dev/urandom", str(fifo), str(sparse)]:
        t = time.monotonic()
        r = await read(s, p)
        assert time.monotonic() - t < 2, p
        assert r.is_error, p
    r = await read(s, sparse, encoding="base64", byte_offset=5 << 30, max_bytes=4096)
    assert not r.is_error and len(r["content"]) <= 4096
    assert set(base64.b64decode(r["content"])) == {0}


async def test_move_and_copy_refuse_to_overwrite(fs):
    s, work = fs
    (work / "a").write_text("A")
    (work / "b").write_text("B")
    for action in ["move", "copy"]:
        r = await write(s, action, work / "a", to=str(work / "b"))
        assert r.is_error and "overwrite=true" in r.text
        assert (work / "a").read_text() == "A" and (work / "b").read_text() == "B"
    r = await write(s, "copy", work / "a", to=str(work / "c"))
    assert not r.is_error and (work / "c").read_text() == "A"
    r = await write(s, "move", work / "a", to=str(work / "b"), overwrite=True)
    assert not r.is_error and not (work / "a").exists() and (work / "b").read_text() == "A"


async def test_a_write_is_never_seen_half_done(fs):
    s, work = fs
    p = work / "big"
    versions = [bytes([65 + i]) * (1 << 20) for i in range(2)]
    p.write_bytes(versions[0])
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.add(hashlib.sha256(p.read_bytes()).hexdigest())

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(6):
            r = await write(s, "write", p, content=versions[(i + 1) % 2].decode())
            assert not r.is_error
    finally:
        stop.set()
        t.join()
    assert seen <= {hashlib.sha256(v).hexdigest() for v in versions}
    assert [n for n in os.listdir(work) if n != "big"] == []


@pytest.fixture
async def confined(server: Server):
    root = server.base / "root"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "ok").write_text("ok\n")
    (server.base / "root2").mkdir()
    (server.base / "root2" / "secret").write_text("secret\n")
    (server.base / "secret").write_text("secret\n")
    os.symlink("/etc", root / "etc")
    os.symlink("../secret", root / "up")
    server.env["MCPSH_FILE_ROOTS"] = str(root)
    if server.transport == "http":
        server.stop()
        server.start()
    async with server.connect("auto") as s:
        yield s, root


async def test_roots_confine_every_path(confined):
    s, root = confined
    r = await read(s, root / "inside/ok")
    assert not r.is_error and r["content"] == "     1\tok\n"
    for p in [
        f"{root}/../secret",
        f"{root}/inside/../../secret",
        f"{root}2/secret",
        f"{root}/up",
        f"{root}/etc/hostname",
        "/etc/hostname",
        "/proc/self/root/etc/hostname",
    ]:
        r = await read(s, p)
        assert r.is_error and "outside" in r.text, p
        w = await write(s, "write", p, content="pwned")
        assert w.is_error, p
    assert (root.parent / "secret").read_text() == "secret\n"
    g = await s.call("file", {"action": "grep", "path": str(root), "pattern": "secret"})
    assert g["total_matches"] == 0


async def test_paging_a_1_gib_file_by_lines_reassembles_it_exactly(http_server: Server):
    path = http_server.base / "big.log"
    want = hashlib.sha256()
    line = (b"x" * 1000) + b"\n"
    with open(path, "wb") as f:
        block = b"".join(b"%09d " % i + line for i in range(1024))
        for _ in range((1 << 30) // len(block) + 1):
            f.write(block)
            want.update(block)
    size = path.stat().st_size
    assert size >= 1 << 30
    got, offset, lines = hashlib.sha256(), 1, 0
    async with http_server.connect("auto") as s:
        while True:
            r = await read(s, path, offset=offset, limit=100_000, max_bytes=262144)
            assert not r.is_error, r.text
            page = body(r)
            got.update(page.encode())
            lines += page.count("\n")
            if r.get("next_offset") is None:
                break
            assert r["next_offset"] == r["end_line"] + 1
            offset = r["next_offset"]
    assert got.hexdigest() == want.hexdigest()
    assert r["total_lines"] == lines
