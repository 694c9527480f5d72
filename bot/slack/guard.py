"""What POST /slack/events checks before it parses a body: Slack's signature headers, their age, the signature.

Bolt reads and parses the body before it verifies the signature, so anyone could make it parse anything: JSON
nested a thousand deep raised RecursionError, a non-numeric timestamp a ValueError in the verifier, each
answered with a 500 and logged with a traceback. Here nothing is parsed until Slack's signature is verified,
and what is refused is logged within a budget, so a flood of garbage costs an HMAC and no log.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

log = structlog.get_logger(__name__)

# Slack's own limit: a request older (or newer) than five minutes is refused as a possible replay.
MAX_AGE_S: Final = 300
# "v0=" and a SHA-256 in hex.
SIGNATURE_CHARS: Final = 67
TIMESTAMP_MAX_DIGITS: Final = 12


def signature_problem(signing_secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float) -> str | None:
    """Why this is not a request signed by Slack, or None when it is.

    The HMAC is taken over the raw bytes (slack_sdk's verifier decodes them first, and raises on a body that
    is not UTF-8)."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not timestamp or not signature:
        return "no X-Slack-Request-Timestamp or X-Slack-Signature header"
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > TIMESTAMP_MAX_DIGITS:
        return "X-Slack-Request-Timestamp is not a Unix time"
    if abs(now - int(timestamp)) > MAX_AGE_S:
        return "X-Slack-Request-Timestamp is more than five minutes away"
    if len(signature) != SIGNATURE_CHARS or not signature.isascii():
        return "X-Slack-Signature is not a v0 signature"
    expected = "v0=" + hmac.new(signing_secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "the signature does not match the body"
    return None


@dataclass
class LogBudget:
    """At most `burst` lines at once, refilled at one every `refill_s`; what is held back is counted and
    reported with the next line written. Keeps anonymous garbage from writing the log at its own pace."""

    burst: int = 10
    refill_s: float = 6.0
    monotonic: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)
    _held_back: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._updated = self.monotonic()

    def warning(self, event: str, **fields: Any) -> None:
        now = self.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) / self.refill_s)
        self._updated = now
        if self._tokens < 1.0:
            self._held_back += 1
            return
        self._tokens -= 1.0
        if self._held_back:
            fields["similar_lines_held_back"] = self._held_back
            self._held_back = 0
        log.warning(event, **fields)
