"""A scripted browser and OAuth client for the auth tests: registers clients,
walks `/authorize` (the HTML login and consent form, with its cookie and
single-use form token), exchanges codes, and opens MCP sessions with a bearer."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx2
from conftest import Session
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

REDIRECT = "http://127.0.0.1:53682/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_of(page: httpx2.Response) -> str:
    m = re.search(r'name=csrf value="([^"]+)"', page.text)
    assert m, f"no form token in the page ({page.status_code}): {page.text[:500]}"
    return m.group(1)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


class Browser:
    """One user agent: keeps cookies, never follows redirects (the test reads them)."""

    def __init__(self, base: str, source: str | None = None, **kw: Any):
        transport = httpx2.HTTPTransport(local_address=source) if source else None
        self.base = base
        self.http = httpx2.Client(base_url=base, follow_redirects=False, timeout=30, transport=transport, **kw)

    def close(self) -> None:
        self.http.close()

    def register(self, redirect_uris: list[str] | None = None, **meta: Any) -> httpx2.Response:
        body = {"redirect_uris": [REDIRECT] if redirect_uris is None else redirect_uris, "client_name": "e2e client", **meta}
        return self.http.post("/register", json=body)

    def client(self, redirect_uris: list[str] | None = None, **meta: Any) -> dict[str, Any]:
        r = self.register(redirect_uris, **meta)
        assert r.status_code == 201, r.text
        return r.json()

    def authorize(self, client_id: str, challenge: str, redirect_uri: str = REDIRECT, **extra: str) -> httpx2.Response:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st-123",
            **extra,
        }
        return self.http.get("/authorize", params={k: v for k, v in params.items() if v is not None})

    def login(self, page: httpx2.Response, user: str, password: str, decision: str = "allow") -> httpx2.Response:
        form = {"csrf": csrf_of(page), "username": user, "password": password, "decision": decision}
        return self.http.post("/authorize", data=form)

    def token(self, **form: str) -> httpx2.Response:
        return self.http.post("/token", data=form)

    def code(self, client_id: str, user: str, password: str, scope: str | None = None) -> tuple[str, str]:
        """Log in and approve; returns (code, verifier)."""
        verifier, challenge = pkce()
        page = self.authorize(client_id, challenge, **({"scope": scope} if scope else {}))
        assert page.status_code == 200, page.text
        r = self.login(page, user, password)
        assert r.status_code == 302, f"{r.status_code}: {r.text[:300]}"
        q = query_of(r.headers["location"])
        assert "code" in q, q
        return q["code"], verifier

    def tokens(self, client_id: str, user: str, password: str, scope: str | None = None) -> dict[str, Any]:
        code, verifier = self.code(client_id, user, password, scope)
        r = self.token(
            grant_type="authorization_code", code=code, code_verifier=verifier, client_id=client_id, redirect_uri=REDIRECT
        )
        assert r.status_code == 200, r.text
        return r.json()


def mcp_post(base: str, bearer: str | None, headers: dict[str, str] | None = None) -> httpx2.Response:
    """A raw MCP initialize POST, to see HTTP-level answers."""
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if bearer:
        h["Authorization"] = f"Bearer {bearer}"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
    }
    return httpx2.post(f"{base}/mcp", json=body, headers=h | (headers or {}), timeout=30)


@contextlib.asynccontextmanager
async def bearer_session(base: str, bearer: str, mode: str = "legacy") -> AsyncIterator[Session]:
    """An MCP session that presents `bearer` on every request."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=httpx2.Timeout(60, read=300))
    async with http:
        async with Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as c:
            yield Session(c, "http", mode)
