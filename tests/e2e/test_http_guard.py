"""`mcpsh serve` refuses foreign Host and Origin headers and insecure listening."""

import http.client
import json

import pytest
from conftest import BIN, free_port

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "guard-e2e", "version": "0"}},
}


def post(port, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"} | headers
        c.request("POST", "/mcp", body=json.dumps(INIT), headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_a_normal_request_is_served(http_server):
    status, body = post(http_server.port, {})
    assert status == 200, body
    assert b'"mcpsh"' in body


def test_a_foreign_host_header_is_refused_with_403(http_server):
    assert post(http_server.port, {"Host": "evil.example"})[0] == 403


def test_a_foreign_origin_is_refused_with_403(http_server):
    assert post(http_server.port, {"Origin": "https://evil.example"})[0] == 403


def test_serve_insecure_on_a_non_loopback_address_is_refused(http_server):
    r = http_server.cli("serve", "--insecure-no-auth", "--listen", f"0.0.0.0:{free_port()}", timeout=10)
    assert r.returncode != 0
    assert "loopback" in r.stderr
