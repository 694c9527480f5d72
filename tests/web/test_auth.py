"""Who may open the dashboard: loopback only without a token; with a token, the token (bearer or login) always."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from bot.runtime import Runtime
from tests.web.conftest import TOKEN, ClientFactory, csrf_token

BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_without_a_token_loopback_is_open_and_gets_a_strict_session_cookie(client: TestClient) -> None:
    response = await client.get("/decisions")
    assert response.status == 200
    cookie = response.headers["Set-Cookie"]
    assert "supportbot_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    client.session.cookie_jar.clear()
    proxied = await client.get("/decisions", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["Set-Cookie"]  # TLS ended at a proxy: the browser is on HTTPS


async def test_without_a_token_a_foreign_host_name_is_refused(client: TestClient) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: no token means no answer."""
    response = await client.get("/api/decisions", headers={"Host": "attacker.example:3000"})
    assert response.status == 403
    assert "SUPPORTBOT_DASHBOARD_TOKEN" in (await response.json())["error"]
    assert (await client.get("/api/decisions", headers={"Host": "localhost:3000"})).status == 200


async def test_with_a_token_even_loopback_must_authenticate(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    page = await client.get("/decisions?route=billing", allow_redirects=False)
    location = urlsplit(page.headers["Location"])
    assert page.status == 303 and location.path == "/login"
    assert parse_qs(location.query)["next"] == ["/decisions?route=billing"]
    api = await client.get("/api/decisions")
    assert api.status == 401 and api.headers["WWW-Authenticate"].startswith("Bearer")
    assert "text" not in await api.text()
    for path in ("/playground", "/api/playground/state", "/dashboard", "/conversations/1", "/"):
        assert (await client.get(path, allow_redirects=False)).status in (303, 401), path
    # Health and metrics stay open for probes and scrapers.
    assert (await client.get("/healthz")).status == 200


async def test_bearer_token_is_checked_exactly(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    assert (await client.get("/api/decisions", headers=BEARER)).status == 200
    near_misses = [
        TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y"),  # same length, last character differs
        TOKEN[:-1],                                        # a prefix
        TOKEN + "0",                                       # longer
        "",
        "é" * len(TOKEN),                                  # non-ASCII must not crash the comparison
        TOKEN.upper(),
    ]
    for candidate in near_misses:
        response = await client.get("/api/decisions", headers={"Authorization": f"Bearer {candidate}"})
        assert response.status == 401, candidate
    assert (await client.get("/api/decisions", headers={"Authorization": f"Basic {TOKEN}"})).status == 401
    assert (await client.get(f"/api/decisions?token={TOKEN}")).status == 401


async def test_login_sets_an_httponly_strict_cookie_and_logout_ends_it(
    token_runtime: Runtime, make_client: ClientFactory
) -> None:
    client = await make_client(token_runtime)
    login = await client.get("/login?next=/decisions")
    assert login.status == 200 and "SUPPORTBOT_DASHBOARD_TOKEN" in await login.text()

    wrong = await client.post("/login", data={"token": "guess", "next": "/decisions"}, allow_redirects=False)
    assert wrong.status == 401 and "not right" in await wrong.text()
    assert "supportbot_session" not in wrong.headers.get("Set-Cookie", "")

    right = await client.post("/login", data={"token": TOKEN, "next": "/decisions"}, allow_redirects=False)
    assert right.status == 303 and right.headers["Location"] == "/decisions"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = await client.get("/decisions")
    assert page.status == 200 and "Log out" in await page.text()

    logout = await client.post("/logout", data={"csrf_token": csrf_token(await page.text())}, allow_redirects=False)
    assert logout.status == 303
    assert (await client.get("/decisions", allow_redirects=False)).status == 303


async def test_login_redirects_only_within_the_site(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = await client.post("/login", data={"token": TOKEN, "next": target}, allow_redirects=False)
        assert response.headers["Location"] == "/", target


async def test_a_tampered_or_foreign_session_cookie_is_refused(
    token_runtime: Runtime, make_client: ClientFactory, runtime: Runtime
) -> None:
    client = await make_client(token_runtime)
    await client.post("/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False)
    [cookie] = [c for c in client.session.cookie_jar if c.key == "supportbot_session"]
    session_id, expires, signature = cookie.value.split(".")
    client.session.cookie_jar.clear()
    assert (await client.get("/api/decisions", headers={"Cookie": f"supportbot_session={cookie.value}"})).status == 200
    forged = {
        "longer life": f"{session_id}.{int(expires) + 10**6}.{signature}",
        "other id": f"x{session_id[1:]}.{expires}.{signature}",
        "no signature": f"{session_id}.{expires}.",
    }
    for why, value in forged.items():
        response = await client.get("/api/decisions", headers={"Cookie": f"supportbot_session={value}"})
        assert response.status == 401, why
    # A session issued by a dashboard with another (or no) token is worthless here.
    open_client = await make_client(runtime)
    await open_client.get("/decisions")
    [other] = [c for c in open_client.session.cookie_jar if c.key == "supportbot_session"]
    response = await client.get("/api/decisions", headers={"Cookie": f"supportbot_session={other.value}"})
    assert response.status == 401


async def test_repeated_failed_logins_are_throttled(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    for _ in range(10):
        assert (await client.post("/login", data={"token": "guess"}, allow_redirects=False)).status == 401
    blocked = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert blocked.status == 429
    # Scripts with the token are not locked out.
    assert (await client.get("/api/decisions", headers=BEARER)).status == 200


async def test_pages_carry_security_headers(client: TestClient) -> None:
    for path in ("/decisions", "/dashboard", "/api/decisions", "/static/style.css", "/conversations/1"):
        response = await client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert (await client.get("/decisions")).headers["Cache-Control"] == "no-store"


# --- `supportbot serve` binding ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_",
                                                                      "DATABASE_URL"))}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    return env


def test_serve_refuses_a_public_interface_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "SUPPORTBOT_DASHBOARD_TOKEN" in result.stderr and "Traceback" not in result.stderr


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serve_beyond_loopback_requires_the_token_on_every_dashboard_request(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path) | {"SUPPORTBOT_DASHBOARD_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.2)
        assert _get(f"{base}/decisions")[0] == 303
        assert _get(f"{base}/api/decisions")[0] == 401
        assert _get(f"{base}/api/decisions", {"Authorization": "Bearer nope"})[0] == 401
        status, body = _get(f"{base}/api/decisions", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and '"decisions"' in body
    finally:
        server.terminate()
        server.wait(timeout=30)
