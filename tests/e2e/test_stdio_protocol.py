"""`mcpsh stdio` writes protocol frames and nothing else to stdout."""

import json
import queue
import subprocess
import threading

from conftest import BIN

INIT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw-e2e", "version": "0"},
}


def pump(stream, q):
    def run():
        for line in stream:
            q.put(line)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_stdout_holds_only_json_rpc_messages(stdio_server):
    p = subprocess.Popen(
        [BIN, "stdio"], env=stdio_server.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lines: queue.Queue[bytes] = queue.Queue()
    reader = pump(p.stdout, lines)
    pump(p.stderr, queue.Queue())  # logs may go to stderr; drain it so the server never blocks
    seen = []

    def send(msg):
        p.stdin.write(json.dumps(msg).encode() + b"\n")
        p.stdin.flush()

    def response(id_):
        while True:
            raw = lines.get(timeout=30)
            seen.append(raw)
            msg = json.loads(raw)
            if msg.get("id") == id_:
                return msg

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT})
        assert response(1)["result"]["serverInfo"]["name"] == "mcpsh"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"name": "bash", "arguments": {"cmd": "echo hi; echo to-stderr >&2"}}
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        result = response(2)["result"]
        assert result["structuredContent"]["output"] == "hi\nto-stderr\n"
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        assert {t["name"] for t in response(3)["result"]["tools"]} >= {"bash", "job"}
        p.stdin.close()
        assert p.wait(timeout=15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(timeout=10)  # stdout is at EOF once the server has exited
    while not lines.empty():
        seen.append(lines.get())
    assert seen, "no output at all"
    for raw in seen:
        assert raw.endswith(b"\n")
        msg = json.loads(raw)  # every line is one JSON document ...
        assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0", raw  # ... and a JSON-RPC message
