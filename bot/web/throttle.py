"""Wrong dashboard tokens are counted per client in the database, so every replica throttles the same guesser.

- The right token always gets in: it is checked before anything is counted, and nothing about the count
  applies to it. A client only ever loses the difference between 401 and 429 on wrong tokens.
- What counts is different wrong tokens: a script repeating a stale token is one failure, not hundreds.
- A client is its TCP peer, unless that peer is a trusted proxy (`SUPPORTBOT_TRUSTED_PROXIES`): then the
  address that proxy (and any trusted proxy before it) saw, from the right of `X-Forwarded-For`. A header
  from anyone else is ignored, so it cannot be used to spread guesses over made-up addresses.
- Past the budget, wrong tokens are refused with 429 and neither stored nor logged one by one, so guessing
  can fill neither the table nor the log; a budget for all clients together bounds an attacker who owns
  many addresses.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address

import structlog
from aiohttp import web

from bot.clock import Clock
from storage import throttle as repo
from storage.engine import Database

log = structlog.get_logger(__name__)

FAILURES_PER_CLIENT = 10
FAILURES_IN_TOTAL = 1000
WINDOW = timedelta(minutes=10)
MAX_CLIENT_CHARS = 64

ProxyNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class Verdict:
    """What a wrong token gets: 401, or 429 with the seconds until the client may be heard again."""

    status: int
    retry_after_s: int | None = None


class TokenThrottle:
    def __init__(self, db: Database, clock: Clock, token: str, trusted_proxies: tuple[ProxyNetwork, ...]) -> None:
        self._db = db
        self._clock = clock
        self._key = hmac.new(b"supportbot-dashboard-guess-v1", token.encode("utf-8"), hashlib.sha256).digest()
        self._trusted = trusted_proxies

    def client(self, request: web.Request) -> str:
        return client_address(request, self._trusted)

    async def wrong_token(self, client: str, guess: str) -> Verdict:
        """Count one wrong token from `client` (unless it is over budget already) and say what it gets."""
        now = self._clock.now()
        digest = hmac.new(self._key, guess.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
        async with self._db.sessions.begin() as session:
            recent = await repo.recent_failures(session, client=client, since=now - WINDOW)
            if recent.client >= FAILURES_PER_CLIENT or recent.total >= FAILURES_IN_TOTAL:
                oldest = recent.client_oldest if recent.client >= FAILURES_PER_CLIENT else None
                wait = (oldest + WINDOW - now).total_seconds() if oldest is not None else WINDOW.total_seconds()
                return Verdict(429, max(1, int(wait) + 1))
            new = await repo.record_failure(session, client=client, guess=digest, at=now)
            await repo.forget_failures(session, before=now - WINDOW)
        if new:  # a repeated wrong token is known already: logged once, not each time a script retries it
            log.warning("dashboard_token_refused", client=client, failures=recent.client + 1,
                        throttled=recent.client + 1 >= FAILURES_PER_CLIENT)
        return Verdict(401)


def client_address(request: web.Request, trusted: tuple[ProxyNetwork, ...]) -> str:
    """Who sent the request: the TCP peer, or behind trusted proxies the first untrusted X-Forwarded-For hop."""
    peer = request.remote or "unknown"
    if not _is_trusted(peer, trusted):
        return peer[:MAX_CLIENT_CHARS]
    client = peer
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    for hop in reversed(hops):
        if not _is_address(hop):
            break  # a garbled entry: nothing left of it can be trusted, so the last good hop is the client
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return client[:MAX_CLIENT_CHARS]


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[ProxyNetwork, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)
