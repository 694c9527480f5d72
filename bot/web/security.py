"""Who may open the dashboard and what a page may do: token, signed session cookie, CSRF, response headers.

Access rules:

- With `SUPPORTBOT_DASHBOARD_TOKEN` set (16 characters or more; a blank or short one stops the start),
  every dashboard request needs it, on loopback too: either `Authorization: Bearer <token>` (scripts) or
  the session cookie the login form sets (browsers). Wrong tokens, by either way, are throttled per client
  (bot.web.throttle); the right one never is.
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
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from aiohttp import web

from bot.errors import SupportbotError
from bot.settings import Settings
from bot.web.throttle import TokenThrottle, Verdict

SESSION_COOKIE = "supportbot_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# `openssl rand -hex 24` gives 48 characters; below 16 a token is a password someone may guess.
MIN_TOKEN_CHARS = 16

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


@dataclass(frozen=True)
class Refused:
    """A request that may not enter: no credentials at all, or a wrong token (401, or 429 when throttled)."""

    status: int
    message: str
    retry_after_s: int | None = None
    tried_token: bool = False


ACCESS_KEY = web.RequestKey("dashboard_access", Access)


def dashboard_token(settings: Settings) -> str | None:
    """SUPPORTBOT_DASHBOARD_TOKEN without the whitespace around it, or None when it is not set at all.

    A blank or short value is refused rather than read as "no token": that would open the dashboard on an
    interface the operator meant to protect, or protect it with something guessable."""
    secret = settings.supportbot_dashboard_token
    if secret is None:
        return None
    token = secret.get_secret_value().strip()
    if not token:
        raise SupportbotError("SUPPORTBOT_DASHBOARD_TOKEN is set but blank: set a random token "
                              "(e.g. `openssl rand -hex 24`), or unset it to serve on loopback only")
    if len(token) < MIN_TOKEN_CHARS:
        raise SupportbotError(f"SUPPORTBOT_DASHBOARD_TOKEN is {len(token)} characters long: use at least "
                              f"{MIN_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 24`)")
    return token


class DashboardAuth:
    def __init__(
        self, token: str | None, *, throttle: TokenThrottle | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        if token is not None and throttle is None:
            raise ValueError("a dashboard with a token needs a throttle for wrong ones")
        self.token = token
        self.throttle = throttle
        self._clock = clock
        # Without a token, sessions only carry CSRF tokens: a per-process key is enough.
        secret = self.token.encode("utf-8") if self.token else secrets.token_bytes(32)
        self._key = hmac.new(b"supportbot-dashboard-session-v1", secret, hashlib.sha256).digest()
        self._token_digest = _digest(self.token) if self.token else None

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison of fixed-size digests: no timing, length or encoding leaks."""
        if self._token_digest is None:
            return False
        return hmac.compare_digest(_digest(candidate), self._token_digest)

    async def check_token(self, request: web.Request, candidate: str) -> Refused | None:
        """None for the right token (never throttled); else the refusal, counted against the client."""
        if self.token_matches(candidate):
            return None
        assert self.throttle is not None
        verdict = await self.throttle.wrong_token(self.throttle.client(request), candidate)
        return _refusal(verdict)

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

    # --- the gate ----------------------------------------------------------------------------------

    async def identify(self, request: web.Request) -> Access | Refused:
        """How this request may enter, or why it may not."""
        header = request.headers.get("Authorization")
        if header is not None and self.required:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer":
                return Refused(401, "send the token as Authorization: Bearer <SUPPORTBOT_DASHBOARD_TOKEN>")
            refused = await self.check_token(request, credential.strip())
            return Access("bearer", None) if refused is None else refused
        session = self.session_id(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return Access("session", session)
        if self.required:
            return Refused(401, "authentication required: log in, or send "
                                "Authorization: Bearer <SUPPORTBOT_DASHBOARD_TOKEN>")
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


def _refusal(verdict: Verdict) -> Refused:
    if verdict.status == 429:
        return Refused(429, "too many wrong tokens from this address: wait and try again",
                       retry_after_s=verdict.retry_after_s, tried_token=True)
    return Refused(401, "that token is not right", tried_token=True)


def add_security_headers(response: web.StreamResponse) -> None:
    """What every response carries, whatever made it (a page, JSON, a probe, aiohttp's own 404 or 405)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")


async def security_headers_on_every_response(_request: web.Request, response: web.StreamResponse) -> None:
    add_security_headers(response)


# C0 controls (tab and newlines included), DEL, C1 controls and lone surrogates: browsers drop some of them
# from URLs ("/\t/evil.example" is "//evil.example" to Chromium), and aiohttp refuses to send others in a
# header at all. Backslashes are slashes to a browser ("/\\evil.example" leaves the site).
_NOT_IN_A_TARGET = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")
# What stays as it is in the Location header; everything else (spaces, non-ASCII) is percent-encoded.
_SAFE_IN_LOCATION = "/?&=#%:@!$'()*+,;~[]-._"


def safe_next(target: str | None) -> str:
    """A post-login redirect target on this site only, as an ASCII path; anything else is "/".

    Checked as a browser will read it: a path starting with one slash, with nothing a browser would drop
    or turn into a slash, so no spelling of the target can name another host or scheme."""
    if not target or not target.startswith("/") or target.startswith("//") or _NOT_IN_A_TARGET.search(target):
        return "/"
    return quote(target, safe=_SAFE_IN_LOCATION)
