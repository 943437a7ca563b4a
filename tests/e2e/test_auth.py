"""OAuth 2.1 and access control of `mcpsh serve`, driven against the real binary:
metadata, registration, the login form, codes, PKCE, refresh rotation, scopes,
personal tokens, audit, throttling and what is (not) stored at rest."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import BIN, Server, free_port
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from oauthkit import REDIRECT, Browser, bearer_session, mcp_post, pkce, query_of

PASSWORD = "correct horse battery staple"


@pytest.fixture
def auth_server():
    """`mcpsh serve` with OAuth on, and a user `ann` set with `set-auth --password-stdin`."""
    s = Server("http", auth=True)
    try:
        r = subprocess.run(
            [BIN, "set-auth", "ann", "--password-stdin"], input=PASSWORD + "\n", env=s.env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        s.start()
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def browser(auth_server):
    b = Browser(auth_server.base_url)
    yield b
    b.close()


def pat(server: Server, scope: str, hosts: str = "*", name: str = "t") -> str:
    r = server.cli("token", "create", "--name", name, "--scope", scope, "--hosts", hosts, "--user", "ann")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# --------------------------------------------------------------------------- discovery


def test_mcp_needs_a_bearer_and_points_at_the_metadata(auth_server, browser):
    r = mcp_post(auth_server.base_url, None)
    assert r.status_code == 401
    www = r.headers["www-authenticate"]
    prm_url = f"{auth_server.base_url}/.well-known/oauth-protected-resource/mcp"
    assert www.startswith("Bearer ") and f'resource_metadata="{prm_url}"' in www
    bad = mcp_post(auth_server.base_url, "mcpsh_at_not-a-real-token")
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    basic = httpx2.post(f"{auth_server.base_url}/mcp", headers={"Authorization": "Basic YW5uOng="}, json={})
    assert basic.status_code == 401

    prm = browser.http.get(prm_url).json()
    assert prm["resource"] == f"{auth_server.base_url}/mcp"
    assert prm["authorization_servers"] == [auth_server.base_url]
    asm = browser.http.get("/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == auth_server.base_url
    assert asm["code_challenge_methods_supported"] == ["S256"]
    assert asm["response_types_supported"] == ["code"]
    assert set(asm["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert "client_secret_basic" not in asm["token_endpoint_auth_methods_supported"]
    assert asm["authorization_response_iss_parameter_supported"] is True
    for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint"):
        assert asm[key].startswith(auth_server.base_url + "/")


# --------------------------------------------------------------------------- the official client


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_official_client_logs_in_headlessly_and_refreshes(auth_server, mode):
    """401 -> metadata -> registration -> login form -> code -> token -> tool call, then a refresh."""
    storage = MemoryStorage()
    codes: list[AuthorizationCodeResult] = []

    async def redirect_handler(url: str) -> None:
        # The "person": open the page, type the password, press Allow.
        b = Browser(auth_server.base_url)
        try:
            page = b.http.get(url)
            assert page.status_code == 200, page.text
            assert "e2e oauth client" in page.text and "127.0.0.1" in page.text
            r = b.login(page, "ann", PASSWORD)
            assert r.status_code == 302, r.text
            q = query_of(r.headers["location"])
            assert q["iss"] == auth_server.base_url
            codes.append(AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss")))
        finally:
            b.close()

    async def callback_handler() -> AuthorizationCodeResult:
        return codes[-1]

    provider = OAuthClientProvider(
        server_url=f"{auth_server.base_url}/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="e2e oauth client", redirect_uris=[REDIRECT], grant_types=["authorization_code", "refresh_token"]
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    http = httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(60, read=300))
    async with http:
        async with Client(streamable_http_client(f"{auth_server.base_url}/mcp", http_client=http), mode=mode) as c:
            r = await c.call_tool("bash", {"cmd": "echo hi"})
            assert not r.is_error and r.structured_content["exit_code"] == 0
        assert len(codes) == 1
        first = storage.tokens
        assert first is not None and first.refresh_token

        # Make the access token look expired: the provider must refresh, not log in again.
        provider.context.token_expiry_time = 1.0
        async with Client(streamable_http_client(f"{auth_server.base_url}/mcp", http_client=http), mode=mode) as c:
            r = await c.call_tool("bash", {"cmd": "echo again"})
            assert not r.is_error
    assert len(codes) == 1, "a refresh, not a second login"
    assert storage.tokens.access_token != first.access_token
    assert storage.tokens.refresh_token != first.refresh_token
    assert mcp_post(auth_server.base_url, first.access_token).status_code == 200, "the old access token lives on until expiry"


# --------------------------------------------------------------------------- redirect URIs

REGISTERED = ["https://app.example.com/callback", "http://127.0.0.1:3000/cb"]

REFUSED_REDIRECTS = [
    "https://APP.example.com/callback",
    "https://app.EXAMPLE.com/callback",
    "https://app.example.com/Callback",
    "https://app.example.com/CALLBACK",
    "https://app.example.com/callback/",
    "https://app.example.com/callback?",
    "https://app.example.com/callback?x=1",
    "https://app.example.com/callback?code=evil",
    "https://app.example.com/callback#",
    "https://app.example.com/callback#frag",
    "https://user@app.example.com/callback",
    "https://user:pw@app.example.com/callback",
    "https://app.example.com@evil.com/callback",
    "https://app.example.com.evil.com/callback",
    "https://evil.com/callback",
    "https://evilapp.example.com/callback",
    "https://app-example.com/callback",
    "https://app.example.co/callback",
    "https://app.example.com./callback",
    "http://app.example.com/callback",
    "https://app.example.com:443/callback",
    "https://app.example.com:8443/callback",
    "https://app.example.com/callback/../callback",
    "https://app.example.com/./callback",
    "https://app.example.com//callback",
    "https://app.example.com/callback%2F",
    "https://app.example.com/%63allback",
    "https://app.example.com/callbac",
    "https://app.example.com/callbackx",
    " https://app.example.com/callback",
    "https://app.example.com/callback ",
    "https://app.example.com\\callback",
    "//app.example.com/callback",
    "app.example.com/callback",
    "javascript:alert(1)//https://app.example.com/callback",
    "data:text/html,https://app.example.com/callback",
    "http://127.0.0.1:3000/cb/",
    "http://127.0.0.1:3000/CB",
    "http://127.0.0.1:3000/cb?x=1",
    "http://127.0.0.1:3000/cb#x",
    "http://127.0.0.2:3000/cb",
    "http://localhost:3000/cb",
    "http://[::1]:3000/cb",
    "https://127.0.0.1:3000/cb",
    "http://127.0.0.1:3000@evil.com/cb",
    "http://127.0.0.1.evil.com:3000/cb",
    "http://user@127.0.0.1:3000/cb",
    "http://127.0.0.1:0/cb",
    "http://127.0.0.1:99999/cb",
    "http://0x7f000001:3000/cb",
    "",
]


def test_at_least_forty_redirect_uri_variants_are_refused_without_a_redirect(auth_server, browser):
    assert len(REFUSED_REDIRECTS) >= 40
    client = browser.client(REGISTERED)
    _, challenge = pkce()
    for uri in REFUSED_REDIRECTS:
        r = browser.authorize(client["client_id"], challenge, redirect_uri=uri)
        assert r.status_code == 400, f"{uri!r} -> {r.status_code}"
        assert "location" not in r.headers, f"{uri!r} redirected to {r.headers.get('location')}"
        assert "name=csrf" not in r.text, uri
    # An unknown client is refused the same way.
    r = browser.authorize("client-unknown", challenge, redirect_uri=REGISTERED[0])
    assert r.status_code == 400 and "unknown client" in r.text and "location" not in r.headers


def test_exact_redirects_work_and_only_the_loopback_port_may_vary(auth_server, browser):
    client = browser.client(REGISTERED)
    _, challenge = pkce()
    for uri in REGISTERED + ["http://127.0.0.1:51234/cb", "http://127.0.0.1/cb"]:
        r = browser.authorize(client["client_id"], challenge, redirect_uri=uri)
        assert r.status_code == 200 and "name=csrf" in r.text, uri


@pytest.mark.parametrize(
    "uris",
    [
        ["http://app.example.com/cb"],
        ["https://app.example.com/cb#x"],
        ["javascript:alert(1)"],
        ["https://u@app.example.com/cb"],
        ["/relative"],
        [],
        ["https://ok.example.com/cb", "file:///etc/passwd"],
    ],
)
def test_registration_refuses_unsafe_redirect_uris(auth_server, browser, uris):
    r = browser.register(uris)
    assert r.status_code == 400
    assert r.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")


def test_registration_refuses_basic_and_other_grants(auth_server, browser):
    r = browser.register(token_endpoint_auth_method="client_secret_basic")
    assert r.status_code == 400 and "Basic" in r.json()["error_description"]
    r = browser.register(grant_types=["password"])
    assert r.status_code == 400
    r = browser.register(grant_types=["implicit"], response_types=["token"])
    assert r.status_code == 400
    r = browser.http.post("/register", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


# --------------------------------------------------------------------------- PKCE and codes


def test_pkce_is_required_and_only_s256(auth_server, browser):
    client = browser.client()
    cid = client["client_id"]
    v, challenge = pkce()
    cases = [
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "exec root"}, "invalid_scope"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
    ]
    for extra, error in cases:
        params = {"code_challenge": challenge, **extra}
        challenge_arg = params.pop("code_challenge")
        r = browser.authorize(cid, challenge_arg, **params)
        assert r.status_code == 302, (extra, r.status_code, r.text[:200])
        q = query_of(r.headers["location"])
        assert q["error"] == error, (extra, q)
        assert q["state"] == "st-123" and q["iss"] == auth_server.base_url

    # At the token endpoint: a wrong, missing or malformed verifier never gets tokens.
    for verifier, error in [("A" * 43, "invalid_grant"), (None, "invalid_request"), ("short", "invalid_grant"), ("x" * 129, "invalid_grant")]:
        code, _ = browser.code(cid, "ann", PASSWORD)
        form = {"grant_type": "authorization_code", "code": code, "client_id": cid, "redirect_uri": REDIRECT}
        if verifier is not None:
            form["code_verifier"] = verifier
        r = browser.token(**form)
        assert r.status_code == 400 and r.json()["error"] == error, (verifier, r.text)


def test_a_code_is_single_use_and_a_replay_revokes_its_tokens(auth_server, browser):
    client = browser.client()
    cid = client["client_id"]
    code, verifier = browser.code(cid, "ann", PASSWORD)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": cid, "redirect_uri": REDIRECT}
    first = browser.token(**form)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    tokens = first.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] <= 3600
    assert mcp_post(auth_server.base_url, tokens["access_token"]).status_code == 200
    again = browser.token(**form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert mcp_post(auth_server.base_url, tokens["access_token"]).status_code == 401, "replay revokes what the code gave"
    r = browser.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=cid)
    assert r.status_code == 400


def test_a_code_is_bound_to_its_client_and_redirect_uri(auth_server, browser):
    a = browser.client()
    b = browser.client()
    code, verifier = browser.code(a["client_id"], "ann", PASSWORD)
    r = browser.token(grant_type="authorization_code", code=code, code_verifier=verifier, client_id=b["client_id"], redirect_uri=REDIRECT)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    code, verifier = browser.code(a["client_id"], "ann", PASSWORD)
    r = browser.token(
        grant_type="authorization_code", code=code, code_verifier=verifier, client_id=a["client_id"], redirect_uri=REDIRECT + "x"
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = browser.token(grant_type="password", username="ann", password=PASSWORD, client_id=a["client_id"])
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    dup = browser.http.post("/token", content=b"grant_type=authorization_code&code=a&code=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert dup.status_code == 400 and "repeated" in dup.json()["error_description"]


def test_http_basic_is_refused_at_the_token_endpoint(auth_server, browser):
    client = browser.client()
    code, verifier = browser.code(client["client_id"], "ann", PASSWORD)
    r = browser.http.post(
        "/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT},
        auth=(client["client_id"], "x"),
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_a_confidential_client_must_send_its_secret_in_the_body(auth_server, browser):
    client = browser.client(token_endpoint_auth_method="client_secret_post")
    secret = client["client_secret"]
    code, verifier = browser.code(client["client_id"], "ann", PASSWORD)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client["client_id"], "redirect_uri": REDIRECT}
    r = browser.token(**form, client_secret=secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = browser.token(**form, client_secret=secret)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- refresh


def test_refresh_rotates_and_reuse_revokes_the_whole_family(auth_server, browser):
    cid = browser.client()["client_id"]
    t1 = browser.tokens(cid, "ann", PASSWORD)
    r = browser.token(grant_type="refresh_token", refresh_token=t1["refresh_token"], client_id=cid)
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert t2["refresh_token"] != t1["refresh_token"] and t2["access_token"] != t1["access_token"]
    assert mcp_post(auth_server.base_url, t2["access_token"]).status_code == 200
    # The old refresh token comes back: someone stole it. Everything of this login dies.
    r = browser.token(grant_type="refresh_token", refresh_token=t1["refresh_token"], client_id=cid)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    for access in (t1["access_token"], t2["access_token"]):
        assert mcp_post(auth_server.base_url, access).status_code == 401
    r = browser.token(grant_type="refresh_token", refresh_token=t2["refresh_token"], client_id=cid)
    assert r.status_code == 400
    audit = auth_server.cli("audit", "--json").stdout
    assert '"token_reuse"' in audit


def test_refresh_may_only_narrow_scopes_and_is_bound_to_the_client(auth_server, browser):
    cid = browser.client()["client_id"]
    other = browser.client()["client_id"]
    t = browser.tokens(cid, "ann", PASSWORD, scope="exec files:read")
    assert t["scope"] == "exec files:read"
    r = browser.token(grant_type="refresh_token", refresh_token=t["refresh_token"], client_id=cid, scope="exec files:write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = browser.token(grant_type="refresh_token", refresh_token=t["refresh_token"], client_id=other)
    assert r.status_code == 400
    r = browser.token(grant_type="refresh_token", refresh_token=t["refresh_token"], client_id=cid)
    assert r.status_code == 400, "presenting it from another client burned the family"


def test_revocation_endpoint(auth_server, browser):
    cid = browser.client()["client_id"]
    t = browser.tokens(cid, "ann", PASSWORD)
    r = browser.http.post("/revoke", data={"token": t["refresh_token"], "client_id": cid})
    assert r.status_code == 200
    assert mcp_post(auth_server.base_url, t["access_token"]).status_code == 401
    assert browser.http.post("/revoke", data={"token": "nonsense"}).status_code == 200


# --------------------------------------------------------------------------- the login form


def test_the_login_page_is_safe_to_show(auth_server, browser):
    cid = browser.client(client_name='<script>alert("x")</script>')["client_id"]
    _, challenge = pkce()
    page = browser.authorize(cid, challenge, scope="exec files:read")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;" in page.text
    assert "127.0.0.1" in page.text and "exec" in page.text and "files:read" in page.text
    assert "files:write" not in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_form_posts_without_the_matching_token_are_refused(auth_server, browser):
    cid = browser.client()["client_id"]
    _, challenge = pkce()
    page = browser.authorize(cid, challenge)
    from oauthkit import csrf_of

    token = csrf_of(page)
    bare = httpx2.Client(base_url=auth_server.base_url, follow_redirects=False)
    try:
        # A cross-site post carries no cookie.
        r = bare.post("/authorize", data={"csrf": token, "username": "ann", "password": PASSWORD, "decision": "allow"})
        assert r.status_code == 403 and "location" not in r.headers
        # No form token at all.
        r = browser.http.post("/authorize", data={"username": "ann", "password": PASSWORD, "decision": "allow"})
        assert r.status_code == 403
        # A form token that is not this browser's.
        r = browser.http.post("/authorize", data={"csrf": "A" * 43, "username": "ann", "password": PASSWORD, "decision": "allow"})
        assert r.status_code == 403
        # A foreign Origin on the post.
        r = browser.http.post(
            "/authorize",
            data={"csrf": token, "username": "ann", "password": PASSWORD, "decision": "allow"},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
    finally:
        bare.close()
    # The real form still works once; the same token used again is refused.
    r = browser.login(page, "ann", PASSWORD)
    assert r.status_code == 302 and "code" in query_of(r.headers["location"])
    r = browser.http.post("/authorize", data={"csrf": token, "username": "ann", "password": PASSWORD, "decision": "allow"})
    assert r.status_code in (400, 403) and "location" not in r.headers


def test_wrong_password_and_deny(auth_server, browser):
    cid = browser.client()["client_id"]
    _, challenge = pkce()
    page = browser.authorize(cid, challenge)
    r = browser.login(page, "ann", "wrong password!")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r2 = browser.login(r, "nobody", PASSWORD)
    assert r2.status_code == 401
    r3 = browser.login(r2, "ann", PASSWORD, decision="deny")
    assert r3.status_code == 302
    q = query_of(r3.headers["location"])
    assert q["error"] == "access_denied" and "code" not in q


# --------------------------------------------------------------------------- Host / Origin


ROUTES = [
    ("GET", "/.well-known/oauth-protected-resource/mcp"),
    ("GET", "/.well-known/oauth-protected-resource"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("POST", "/register"),
    ("GET", "/authorize"),
    ("POST", "/authorize"),
    ("POST", "/token"),
    ("POST", "/revoke"),
    ("POST", "/mcp"),
    ("GET", "/nonexistent"),
]


@pytest.mark.parametrize("method,path", ROUTES)
def test_foreign_host_or_origin_is_refused_on_every_route(auth_server, method, path):
    url = f"{auth_server.base_url}{path}"
    for headers in ({"Host": "evil.example"}, {"Host": f"evil.example:{auth_server.port}"}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        r = httpx2.request(method, url, headers=headers, timeout=10)
        assert r.status_code == 403, (method, path, headers, r.status_code)


# --------------------------------------------------------------------------- scopes


TOOL_CALLS = [
    ("bash", {"cmd": "true"}, "exec"),
    ("job", {"action": "list"}, "exec"),
    ("hosts", {"action": "list"}, "exec"),
    ("session", {"action": "list"}, "exec"),
    ("session", {"action": "read", "name": "none"}, "exec"),
    ("file", {"action": "read", "path": "/etc/hostname"}, "files:read"),
    ("file", {"action": "list", "path": "/tmp"}, "files:read"),
    ("file", {"action": "stat", "path": "/tmp"}, "files:read"),
    ("file", {"action": "grep", "path": "/etc/hostname", "pattern": "x"}, "files:read"),
    ("file_write", {"action": "write", "path": "{tmp}/w.txt", "content": "x"}, "files:write"),
    ("file_write", {"action": "append", "path": "{tmp}/w.txt", "content": "x"}, "files:write"),
    ("file_write", {"action": "edit", "path": "{tmp}/w.txt", "edits": [{"old": "x", "new": "y"}]}, "files:write"),
    ("file_write", {"action": "copy", "path": "{tmp}/w.txt", "to": "{tmp}/c.txt"}, "files:write"),
    ("file_write", {"action": "move", "path": "{tmp}/c.txt", "to": "{tmp}/m.txt"}, "files:write"),
    ("file_write", {"action": "delete", "path": "{tmp}/m.txt"}, "files:write"),
    # A write action smuggled into the read tool stays a read-tool call (and is refused as such).
    ("file", {"action": "write", "path": "{tmp}/w.txt", "content": "x"}, "files:read"),
]

SCOPE_SETS = ["exec", "files:read", "files:write", "files:read,files:write", "transfer,forward", "exec,files:read,files:write"]


@pytest.mark.anyio
@pytest.mark.parametrize("scopes", SCOPE_SETS)
async def test_scope_by_action_matrix(auth_server, tmp_path, scopes):
    bearer = pat(auth_server, scopes, name=scopes.replace(",", "+"))
    held = set(scopes.split(","))
    (tmp_path / "w.txt").write_text("x")
    async with bearer_session(auth_server.base_url, bearer) as s:
        listed = {t.name for t in (await s.client.list_tools()).tools}
        expect_listed = {tool for tool, _, need in TOOL_CALLS if need in held}
        assert listed == expect_listed, (scopes, listed)
        for tool, args, need in TOOL_CALLS:
            args = {k: (v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v) for k, v in args.items()}
            try:
                r = await s.call(tool, args)
                refused = r.is_error and "not allowed" in r.text
            except Exception as e:  # a protocol error (e.g. the smuggled write) is also a refusal
                refused, r = True, e
            if need in held:
                assert not (refused and "not allowed" in str(getattr(r, "text", r))), (scopes, tool, args)
            else:
                assert refused, f"{scopes}: {tool} {args} ran: {getattr(r, 'text', r)}"
    # Every refusal is on record.
    rows = auth_server.cli("audit", "--json", "-n", "1000").stdout
    assert '"denied"' in rows or held >= {"exec", "files:read", "files:write"}


@pytest.mark.anyio
async def test_host_patterns_limit_where_a_token_acts(auth_server):
    async with bearer_session(auth_server.base_url, pat(auth_server, "exec", name="all")) as s:
        local_job = (await s.bash("echo local-secret"))["job"]
    bearer = pat(auth_server, "exec,files:read", hosts="web-*")
    async with bearer_session(auth_server.base_url, bearer) as s:
        # A local job's output stays out of reach, whatever `host` the call claims.
        for args in ({"id": local_job}, {"id": local_job, "host": "web-1"}):
            r = await s.job("poll", **args)
            assert r.is_error and "local-secret" not in r.text and "not allowed" in r.text, args
        r = await s.job("list")
        assert r.is_error and "not allowed" in r.text
        r = await s.bash("echo should-not-run")
        assert r.is_error and "outside the hosts" in r.text
        r = await s.call("file", {"action": "read", "path": "/etc/hostname", "host": "local"})
        assert r.is_error and "outside the hosts" in r.text
        r = await s.call("bash", {"cmd": "true", "host": "web-1"})
        assert not ("outside the hosts" in r.text), "web-1 passes the host check (and then fails as unknown)"
        # Terminal sessions: local ones are out of reach, the list shows only reachable hosts.
        for args in ({"action": "open", "name": "x"}, {"action": "exec", "name": "x", "cmd": "id"}):
            r = await s.call("session", args)
            assert r.is_error and "outside the hosts" in r.text, args
        r = await s.call("session", {"action": "list"})
        assert not r.is_error and r["sessions"] == [], r.text


# --------------------------------------------------------------------------- CLI


@pytest.mark.anyio
async def test_personal_tokens_list_and_revoke(auth_server):
    bearer = pat(auth_server, "exec", name="ci")
    assert bearer.startswith("mcpsh_pat_")
    listing = auth_server.cli("token", "list")
    assert "ci" in listing.stdout and bearer not in listing.stdout and bearer[10:30] not in listing.stdout
    async with bearer_session(auth_server.base_url, bearer) as s:
        assert (await s.bash("echo ok"))["exit_code"] == 0
    r = auth_server.cli("token", "revoke", "ci")
    assert r.returncode == 0, r.stderr
    assert mcp_post(auth_server.base_url, bearer).status_code == 401
    assert "revoked" in auth_server.cli("token", "list").stdout
    assert auth_server.cli("token", "revoke", "ci").returncode != 0
    bad = auth_server.cli("token", "create", "--name", "x", "--scope", "root", "--user", "ann")
    assert bad.returncode != 0 and "unknown scope" in bad.stderr
    short = auth_server.cli("token", "create", "--name", "x", "--scope", "exec", "--user", "ann", "--expires", "1s")
    assert short.returncode == 0
    time.sleep(1.2)
    assert mcp_post(auth_server.base_url, short.stdout.strip()).status_code == 401


def test_sessions_lists_logins_without_secrets(auth_server, browser):
    cid = browser.client(client_name="Session Lister")["client_id"]
    t = browser.tokens(cid, "ann", PASSWORD)
    out = auth_server.cli("sessions").stdout
    assert "ann" in out and "Session Lister" in out
    assert t["access_token"] not in out and t["refresh_token"] not in out
    login_id = out.splitlines()[1].split()[0]
    assert auth_server.cli("sessions", "revoke", login_id).returncode == 0
    assert mcp_post(auth_server.base_url, t["access_token"]).status_code == 401


def test_set_auth_rules(auth_server):
    r = subprocess.run([BIN, "set-auth", "bob", "--password-stdin"], input="short\n", env=auth_server.env, capture_output=True, text=True)
    assert r.returncode != 0 and "at least 12" in r.stderr
    r = subprocess.run([BIN, "set-auth", "-oops", "--password-stdin"], input=PASSWORD + "\n", env=auth_server.env, capture_output=True, text=True)
    assert r.returncode != 0
    r = subprocess.run(
        [BIN, "set-auth", "bob", "--password-stdin", "--scope", "files:read"], input="bobs long password\n", env=auth_server.env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    b = Browser(auth_server.base_url)
    try:
        cid = b.client()["client_id"]
        t = b.tokens(cid, "bob", "bobs long password")
        assert t["scope"] == "files:read", "a login never gets more than the user holds"
    finally:
        b.close()


def test_first_serve_creates_an_admin_once_and_the_password_works():
    s = Server("http", auth=True)
    try:
        s.start()
        assert s.password, s.log.read_text()
        s.stop()
        s.start(port=s.port)
        assert s.log.read_text().count("with password:") == 1, "printed only on the very first start"
        b = Browser(s.base_url)
        try:
            cid = b.client()["client_id"]
            t = b.tokens(cid, "admin", s.password)
            assert mcp_post(s.base_url, t["access_token"]).status_code == 200
        finally:
            b.close()
    finally:
        s.cleanup()


def test_serve_refuses_plain_http_off_loopback_and_bad_public_urls(auth_server):
    r = auth_server.cli("serve", "--listen", f"0.0.0.0:{free_port()}", timeout=10)
    assert r.returncode != 0 and "--tls-cert" in r.stderr
    r = auth_server.cli("serve", "--listen", f"127.0.0.1:{free_port()}", "--public-url", "http://mcp.example.com", timeout=10)
    assert r.returncode != 0 and "https" in r.stderr
    r = auth_server.cli("serve", "--insecure-no-auth", "--listen", f"0.0.0.0:{free_port()}", timeout=10)
    assert r.returncode != 0 and "loopback" in r.stderr


# --------------------------------------------------------------------------- audit


@pytest.mark.anyio
async def test_audit_records_calls_and_security_events(auth_server, browser):
    cid = browser.client()["client_id"]
    _, challenge = pkce()
    browser.login(browser.authorize(cid, challenge), "ann", "not the password")
    t = browser.tokens(cid, "ann", PASSWORD)
    async with bearer_session(auth_server.base_url, t["access_token"]) as s:
        await s.bash("echo audited-output-xyz; exit 4")
        await s.call("file", {"action": "stat", "path": "/etc/hostname"})
    import json

    rows = [json.loads(line) for line in auth_server.cli("audit", "--json", "-n", "1000").stdout.splitlines()]
    events = [r["event"] for r in rows]
    for e in ("login_fail", "login_ok", "consent", "token_issue", "client_register", "tool"):
        assert e in events, (e, events)
    bash = next(r for r in rows if r.get("tool") == "bash")
    assert bash["user"] == "ann" and bash["client_id"] == cid and bash["token_id"].startswith("at-")
    assert bash["target"] == "echo audited-output-xyz; exit 4" and bash["exit_code"] == 4
    assert bash["outcome"] in ("ok", "error") and bash["duration_ms"] is not None and bash["source"] == "127.0.0.1"
    stat_row = next(r for r in rows if r.get("tool") == "file")
    assert stat_row["action"] == "stat" and stat_row["target"] == "/etc/hostname"
    text = auth_server.cli("audit").stdout
    assert "audited-output-xyz" in text  # the command, not its output
    assert all("audited-output-xyz\n" not in (r.get("detail") or "") for r in rows)
    assert auth_server.cli("audit", "--user", "nobody", "--json").stdout.strip() == ""
    assert auth_server.cli("audit", "--since", "1h", "--json").stdout.strip() != ""


@pytest.mark.anyio
async def test_audit_follow_shows_new_rows(auth_server):
    proc = subprocess.Popen([BIN, "audit", "-f", "--json"], env=auth_server.env, stdout=subprocess.PIPE)
    try:
        bearer = pat(auth_server, "exec")
        async with bearer_session(auth_server.base_url, bearer) as s:
            await s.bash("echo follow-me-123")
        deadline = time.monotonic() + 10
        seen = ""
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and "follow-me-123" not in seen:
            chunk = os.read(proc.stdout.fileno(), 65536) if _readable(proc.stdout) else b""
            seen += chunk.decode(errors="replace")
            await anyio.sleep(0.1)
        assert "follow-me-123" in seen
    finally:
        proc.kill()
        proc.wait()


def _readable(f) -> bool:
    import select

    return bool(select.select([f], [], [], 0)[0])


# --------------------------------------------------------------------------- at rest


@pytest.mark.anyio
async def test_no_secret_is_stored_or_logged(auth_server, browser):
    """After a scripted session, no token, code, client secret or password is on disk."""
    secrets_seen = [PASSWORD]
    client = browser.client(token_endpoint_auth_method="client_secret_post")
    secrets_seen.append(client["client_secret"])
    cid = client["client_id"]
    code, verifier = browser.code(cid, "ann", PASSWORD)
    secrets_seen += [code, verifier]
    t = browser.token(
        grant_type="authorization_code", code=code, code_verifier=verifier, client_id=cid, redirect_uri=REDIRECT, client_secret=client["client_secret"]
    ).json()
    secrets_seen += [t["access_token"], t["refresh_token"]]
    t2 = browser.token(grant_type="refresh_token", refresh_token=t["refresh_token"], client_id=cid, client_secret=client["client_secret"]).json()
    secrets_seen += [t2["access_token"], t2["refresh_token"]]
    bearer = pat(auth_server, "exec")
    secrets_seen.append(bearer)
    async with bearer_session(auth_server.base_url, t2["access_token"]) as s:
        await s.bash("true")
    async with bearer_session(auth_server.base_url, bearer) as s:
        await s.bash("true")
    auth_server.cli("audit")
    auth_server.stop()  # flush the WAL into the database, too

    files = [p for p in auth_server.base.rglob("*") if p.is_file()]
    state_files = [p for p in files if auth_server.state_dir in p.parents]
    assert any(p.name.endswith(".db") for p in state_files)
    for p in files:
        data = p.read_bytes()
        for s in secrets_seen:
            assert s.encode() not in data, f"a secret ({s[:12]}…) is stored in {p}"
    for p in state_files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, f"{p} is readable by others"
    for d in [auth_server.state_dir, *[p for p in auth_server.state_dir.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0, d


# --------------------------------------------------------------------------- throttling


def test_a_login_flood_is_throttled_before_hashing_and_the_owner_still_gets_in(auth_server):
    attacker = Browser(auth_server.base_url, source="127.0.0.1")
    owner = Browser(auth_server.base_url, source="127.0.0.2")
    try:
        cid = attacker.client()["client_id"]
        _, challenge = pkce()
        page = attacker.authorize(cid, challenge)
        statuses = []
        started = time.monotonic()
        for _ in range(60):
            r = attacker.login(page, "ann", "wrong password!")
            statuses.append(r.status_code)
            page = r
        flood_time = time.monotonic() - started
        assert statuses.count(401) <= 12, statuses
        assert statuses.count(429) >= 45, statuses
        assert "retry-after" in {k.lower() for k in r.headers}
        assert flood_time < 30, flood_time
        # Even the right password from the flooding source is refused for now...
        r = attacker.login(page, "ann", PASSWORD)
        assert r.status_code == 429
        # ...but the owner, from elsewhere, logs straight in.
        start = time.monotonic()
        t = owner.tokens(cid, "ann", PASSWORD)
        assert time.monotonic() - start < 5
        assert mcp_post(auth_server.base_url, t["access_token"]).status_code == 200
    finally:
        attacker.close()
        owner.close()


# --------------------------------------------------------------------------- TLS and client metadata documents


def test_tls_serves_https_with_the_issuer_on_https(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    os.chmod(key, 0o600)
    s = Server("http", auth=True)
    try:
        s.start(extra=("--tls-cert", str(cert), "--tls-key", str(key)))
        base = f"https://127.0.0.1:{s.port}"
        ctx = ssl.create_default_context(cafile=str(cert))
        asm = httpx2.get(f"{base}/.well-known/oauth-authorization-server", verify=ctx, timeout=10).json()
        assert asm["issuer"] == base and asm["token_endpoint"] == f"{base}/token"
        r = httpx2.post(f"{base}/mcp", json={}, verify=ctx, timeout=10)
        assert r.status_code == 401 and f'resource_metadata="{base}/' in r.headers["www-authenticate"]
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(f"http://127.0.0.1:{s.port}/.well-known/oauth-authorization-server", timeout=5)
    finally:
        s.cleanup()


def test_client_metadata_documents_are_fetched_only_from_public_https(auth_server, browser):
    _, challenge = pkce()
    for client_id, why in [
        (f"https://127.0.0.1:{auth_server.port}/client.json", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "169.254"),
        ("https://10.0.0.1/client.json", "10.0.0.1"),
        ("http://example.com/client.json", "unknown client"),
        ("https://example.com/", "unknown client"),
    ]:
        r = browser.authorize(client_id, challenge, redirect_uri="https://example.com/cb")
        assert r.status_code == 400 and "location" not in r.headers, client_id
        assert "name=csrf" not in r.text
