"""Who may open the dashboard and what a page may do: token, signed session cookie, CSRF, response headers.

Access rules:

- With `SUPPORTBOT_DASHBOARD_TOKEN` set, every dashboard request needs it, on loopback too: either
  `Authorization: Bearer <token>` (scripts) or the session cookie the login form sets (browsers).
- Without a token the server only binds to loopback (the CLI refuses otherwise); requests whose
  `Host` is not a loopback name are refused, so a DNS-rebinding page cannot read the dashboard.
- State-changing requests made with the cookie need the per-session CSRF token (hidden form field
  or `X-CSRF-Token` header) and, when the browser sends one, a same-host `Origin`. The cookie is
  HttpOnly and SameSite=Strict as well. Bearer requests carry no ambient credential and skip CSRF.

Sessions are stateless: the cookie holds a random id and an expiry signed with a key derived from
the token, so they survive restarts, work across replicas, and all end when the token changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web

SESSION_COOKIE = "supportbot_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Failed logins tolerated per client address within the window before answering 429.
LOGIN_FAILURES_ALLOWED = 10
LOGIN_FAILURE_WINDOW_S = 600.0

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Via = Literal["open", "bearer", "session"]


@dataclass(frozen=True)
class Access:
    """How a request got in, and the session that its CSRF token is bound to (if any)."""

    via: Via
    session_id: str | None
    # A cookie to set on the response: the first page view of an open (token-less) dashboard.
    new_cookie: str | None = None


ACCESS_KEY = web.RequestKey("dashboard_access", Access)


class DashboardAuth:
    def __init__(self, token: str | None, *, clock: Callable[[], float] = time.time) -> None:
        self.token = token or None
        self._clock = clock
        # Without a token, sessions only carry CSRF tokens: a per-process key is enough.
        secret = self.token.encode("utf-8") if self.token else secrets.token_bytes(32)
        self._key = hmac.new(b"supportbot-dashboard-session-v1", secret, hashlib.sha256).digest()
        self._token_digest = _digest(self.token) if self.token else None
        self._failures: dict[str, deque[float]] = {}

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison of fixed-size digests: no timing, length or encoding leaks."""
        if self._token_digest is None:
            return False
        return hmac.compare_digest(_digest(candidate), self._token_digest)

    # --- sessions and CSRF tokens ----------------------------------------------------------------

    def new_session(self) -> str:
        payload = f"{secrets.token_urlsafe(18)}.{int(self._clock()) + SESSION_TTL_S}"
        return f"{payload}.{self._sign(payload)}"

    def session_id(self, cookie: str | None) -> str | None:
        """The session id of a valid, unexpired cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        session, expires, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(f"{session}.{expires}"), signature):
            return None
        if not expires.isdigit() or int(expires) < self._clock():
            return None
        return session

    def csrf_token(self, session_id: str) -> str:
        return self._sign(f"csrf:{session_id}")

    def csrf_matches(self, session_id: str, candidate: str) -> bool:
        return hmac.compare_digest(self.csrf_token(session_id).encode(), candidate.encode("utf-8", "replace"))

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    # --- login throttling ----------------------------------------------------------------------

    def login_blocked(self, client: str) -> bool:
        recent = self._recent_failures(client)
        return len(recent) >= LOGIN_FAILURES_ALLOWED

    def login_failed(self, client: str) -> None:
        if len(self._failures) > 10_000:
            # Many addresses: forget those whose failures are all older than the window.
            for stale in [c for c in self._failures if not self._recent_failures(c)]:
                del self._failures[stale]
        self._recent_failures(client).append(time.monotonic())

    def _recent_failures(self, client: str) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] < time.monotonic() - LOGIN_FAILURE_WINDOW_S:
            recent.popleft()
        return recent

    # --- the gate ----------------------------------------------------------------------------------

    def identify(self, request: web.Request) -> Access | None:
        """How this request may enter, or None when it may not."""
        header = request.headers.get("Authorization")
        if header is not None and self.required:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() == "bearer" and self.token_matches(credential.strip()):
                return Access("bearer", None)
            return None
        session = self.session_id(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return Access("session", session)
        if self.required:
            return None
        cookie = self.new_session()
        return Access("open", self.session_id(cookie), new_cookie=cookie)

    def set_session_cookie(self, request: web.Request, response: web.StreamResponse, cookie: str) -> None:
        # Behind a proxy that ends TLS the request itself is plain HTTP; the proxy's header says the browser
        # used HTTPS. Trusting it can only add Secure, which keeps the cookie off plain HTTP.
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_TTL_S, path="/", httponly=True,
                            samesite="Strict", secure=request.secure or forwarded == "https")

    async def check_csrf(self, request: web.Request, access: Access) -> str | None:
        """Why a state-changing request is refused, or None when it may proceed."""
        if access.via == "bearer":
            return None
        if not same_origin(request):
            return "the request came from another site (Origin does not match)"
        if access.session_id is None or access.new_cookie is not None:
            return "no dashboard session: reload the page and try again"
        candidate = request.headers.get(CSRF_HEADER)
        if candidate is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            field = form.get(CSRF_FIELD)
            candidate = field if isinstance(field, str) else None
        if not candidate or not self.csrf_matches(access.session_id, candidate):
            return "missing or stale CSRF token: reload the page and try again"
        return None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


def same_origin(request: web.Request) -> bool:
    """True when the browser sent no Origin (same-origin GETs, old clients) or one naming this host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == request.host.lower()


def loopback_host(request: web.Request) -> bool:
    host = request.host
    name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
    return name.lower() in LOOPBACK_NAMES


def add_security_headers(response: web.StreamResponse, *, cache: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not cache:
        response.headers.setdefault("Cache-Control", "no-store")


def safe_next(target: str | None) -> str:
    """A post-login redirect target on this site only (no scheme, no //host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
