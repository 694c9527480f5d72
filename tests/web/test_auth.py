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

from bot.clock import ManualClock
from bot.config import Config
from bot.errors import SupportbotError
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.web.server import start_server
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


# What browsers make of these: tab, newlines and other controls are dropped or break the URL, backslashes are
# slashes, so "/\t/evil.example" and "/\\evil.example" are both "//evil.example": another site.
HOSTILE_TARGETS = [
    "https://evil.example/", "//evil.example/x", "///evil.example", "/\\evil.example", "\\/evil.example",
    "\\\\evil.example", "/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "/\x0b/evil.example",
    "/\x0c/evil.example", "/\x7f/evil.example", "/\x00/evil.example", "\t//evil.example", " //evil.example",
    "javascript:alert(1)", "/\u0085/evil.example",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
async def test_login_redirects_only_within_the_site(
    target: str, token_runtime: Runtime, runtime: Runtime, make_client: ClientFactory
) -> None:
    client = await make_client(token_runtime)
    response = await client.post("/login", data={"token": TOKEN, "next": target}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    page = await client.get("/login", params={"next": target}, allow_redirects=False)
    assert page.status == 200 and '<input type="hidden" name="next" value="/">' in await page.text()
    # Without a token the login page sends the browser straight on: to this site only.
    open_client = await make_client(runtime)
    response = await open_client.get("/login", params={"next": target}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"


async def test_login_keeps_a_target_on_this_site_as_ascii(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    for target, location in [("/decisions?route=billing&since=24h", "/decisions?route=billing&since=24h"),
                             ("/decisions?search=café au lait", "/decisions?search=caf%C3%A9%20au%20lait"),
                             ("/conversations/2#decision-3", "/conversations/2#decision-3")]:
        response = await client.post("/login", data={"token": TOKEN, "next": target}, allow_redirects=False)
        assert response.headers["Location"] == location


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


async def test_wrong_tokens_are_throttled_and_the_right_one_always_gets_in(
    token_runtime: Runtime, make_client: ClientFactory
) -> None:
    client = await make_client(token_runtime)
    for guess in range(10):
        response = await client.get("/api/decisions", headers={"Authorization": f"Bearer guess-{guess}"})
        assert response.status == 401, guess
    for blocked in (await client.get("/api/decisions", headers={"Authorization": "Bearer guess-10"}),
                    await client.post("/login", data={"token": "guess-11"}, allow_redirects=False)):
        assert blocked.status == 429
        assert 0 < int(blocked.headers["Retry-After"]) <= 601
    # The right token is never locked out, by bearer or by the form.
    assert (await client.get("/api/decisions", headers=BEARER)).status == 200
    assert (await client.post("/login", data={"token": TOKEN}, allow_redirects=False)).status == 303


async def test_the_same_wrong_token_again_is_one_failure(token_runtime: Runtime, make_client: ClientFactory) -> None:
    """A script with a stale token retrying all night must not use up the budget of the people next to it."""
    client = await make_client(token_runtime)
    for _ in range(30):
        response = await client.get("/api/decisions", headers={"Authorization": "Bearer the-old-token-0123456789"})
        assert response.status == 401
    for guess in range(9):
        assert (await client.post("/login", data={"token": f"typo-{guess}"}, allow_redirects=False)).status == 401
    assert (await client.post("/login", data={"token": "typo-9"}, allow_redirects=False)).status == 429


@pytest.fixture
def token_settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, supportbot_dashboard_token=TOKEN)  # type: ignore[arg-type]


async def test_every_replica_counts_the_same_failures(
    token_settings: Settings, config: Config, make_client: ClientFactory, clock: ManualClock
) -> None:
    """Guesses spread over replicas sharing one database are counted together, and forgotten after the window."""
    first = await build_runtime(token_settings, config, chat=LocalChat(), clock=clock, instance_id="replica-1")
    second = await build_runtime(token_settings, config, chat=LocalChat(), clock=clock, instance_id="replica-2")
    try:
        clients = [await make_client(first), await make_client(second)]
        for guess in range(10):
            response = await clients[guess % 2].get("/api/decisions", headers={"Authorization": f"Bearer g{guess}"})
            assert response.status == 401
        for client in clients:
            assert (await client.get("/api/decisions", headers={"Authorization": "Bearer g-more"})).status == 429
            assert (await client.get("/api/decisions", headers=BEARER)).status == 200
        clock.advance(11 * 60)
        assert (await clients[0].get("/api/decisions", headers={"Authorization": "Bearer g-later"})).status == 401
    finally:
        await first.close()
        await second.close()


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(
    tmp_path: Path, config: Config, make_client: ClientFactory
) -> None:
    """The proxy on loopback (trusted by default) names the client in X-Forwarded-For: one guesser behind it
    does not lock out the others."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}",
                        supportbot_dashboard_token=TOKEN)  # type: ignore[arg-type]
    runtime = await build_runtime(settings, config, chat=LocalChat(), instance_id="proxy-1")
    try:
        client = await make_client(runtime)
        guesser = {"X-Forwarded-For": "198.51.100.66"}
        for guess in range(10):
            headers = {**guesser, "Authorization": f"Bearer g{guess}"}
            assert (await client.get("/api/decisions", headers=headers)).status == 401
        assert (await client.get("/api/decisions", headers={**guesser, "Authorization": "Bearer g"})).status == 429
        # A colleague behind the same proxy, and a client behind two proxies, are still heard.
        for forwarded in ("203.0.113.7", "203.0.113.8, 127.0.0.1", "198.51.100.66, 203.0.113.9"):
            headers = {"X-Forwarded-For": forwarded, "Authorization": "Bearer typo"}
            assert (await client.get("/api/decisions", headers=headers)).status == 401, forwarded
    finally:
        await runtime.close()


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, config: Config, make_client: ClientFactory
) -> None:
    """Made-up addresses in the header do not give a guesser a fresh budget per request."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'direct.db'}",
                        supportbot_dashboard_token=TOKEN,  # type: ignore[arg-type]
                        supportbot_trusted_proxies="10.0.0.0/8")
    runtime = await build_runtime(settings, config, chat=LocalChat(), instance_id="direct-1")
    try:
        client = await make_client(runtime)
        for guess in range(10):
            headers = {"X-Forwarded-For": f"198.51.100.{guess}", "Authorization": f"Bearer g{guess}"}
            assert (await client.get("/api/decisions", headers=headers)).status == 401
        headers = {"X-Forwarded-For": "198.51.100.200", "Authorization": "Bearer g"}
        assert (await client.get("/api/decisions", headers=headers)).status == 429
    finally:
        await runtime.close()


async def test_every_response_carries_security_headers(client: TestClient) -> None:
    """Pages, JSON, static files, probes, and aiohttp's own answers to unknown paths and methods."""
    requests = [("GET", "/decisions"), ("GET", "/dashboard"), ("GET", "/api/decisions"), ("GET", "/static/style.css"),
                ("GET", "/conversations/1"), ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/no/such/page"),
                ("GET", "/static/nope.js"), ("DELETE", "/decisions"), ("GET", "/conversations/abc")]
    for method, path in requests:
        response = await client.request(method, path)
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, (method, path)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path
    assert (await client.get("/decisions")).headers["Cache-Control"] == "no-store"
    assert (await client.get("/static/style.css")).headers["Cache-Control"] == "public, max-age=300"


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


@pytest.mark.parametrize("token", ["", "   ", " \t\n ", "too-short-123"])
def test_serve_refuses_a_blank_or_short_token(token: str, tmp_path: Path) -> None:
    """A blank value used to turn the dashboard's auth off while passing the "token required" check."""
    result = subprocess.run([sys.executable, "-m", "bot.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                            env=_env(tmp_path) | {"SUPPORTBOT_DASHBOARD_TOKEN": token}, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert "SUPPORTBOT_DASHBOARD_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert ("blank" if not token.strip() else "at least 16") in result.stderr


@pytest.mark.parametrize("token", ["", "   ", "too-short-123"])
async def test_a_server_with_a_blank_or_short_token_does_not_start(token: str, sqlite_url: str, config: Config) -> None:
    settings = Settings(database_url=sqlite_url, supportbot_dashboard_token=token)  # type: ignore[arg-type]
    with pytest.raises(SupportbotError, match="SUPPORTBOT_DASHBOARD_TOKEN"):
        server = await start_server(settings, config, host="127.0.0.1", port=0)
        await server.stop()


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
