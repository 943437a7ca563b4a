"""The official MCP conformance suite's authorization-server scenarios against a real
`mcpsh serve` with OAuth on (tests/conformance/run plays the browser on the login page)."""

from __future__ import annotations

import subprocess

from conftest import BIN, REPO, Server, free_port

PASSWORD = "conformance password 1"


def test_official_conformance_authorization_server_scenarios():
    s = Server("http", auth=True)
    try:
        r = subprocess.run(
            [BIN, "set-auth", "conf", "--password-stdin"], input=PASSWORD + "\n", env=s.env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        s.start()
        env = {**s.env, "MCPSH_USER": "conf", "MCPSH_PASSWORD": PASSWORD, "CONFORMANCE_PORT": str(free_port())}
        run = subprocess.run(
            [str(REPO / "tests/conformance/run"), s.base_url], env=env, capture_output=True, text=True, timeout=600
        )
        out = run.stdout + run.stderr
        assert run.returncode == 0, out
        assert "FAILED" not in out, out
        # Both scenarios ran and passed (the grant one is skipped without a client id, which the
        # suite counts as no failure; here it must have completed a real login).
        assert "authorization-server-metadata-endpoint: 2 passed, 0 failed" in out, out
        assert "authorization-code-grant: 1 passed, 0 failed" in out, out
    finally:
        s.cleanup()
