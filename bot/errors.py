"""Errors the bot raises, each with a message a user or operator can act on.

    SupportbotError
     ├── ConfigError          a bad supportbot.toml: which file, which key, what to fix
     ├── LLMError             a model call that gave no usable answer
     │    ├── LLMUnavailable  timeouts, 429/529/5xx, connection errors after retries
     │    └── LLMBadOutput    an answer that does not fit the requested shape
     └── TransportError       a chat message that could not be delivered
"""

from __future__ import annotations

from pathlib import Path


class SupportbotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(SupportbotError):
    def __init__(self, file: Path | str | None, key: str, reason: str) -> None:
        self.file = str(file) if file is not None else "<built-in default config>"
        self.key = key
        self.reason = reason
        super().__init__(f"{self.file}: [{key}] {reason}" if key else f"{self.file}: {reason}")


class LLMError(SupportbotError):
    """A model call failed; `kind` is a short stable label used in logs and metrics."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        self.kind = kind
        super().__init__(message)


class LLMUnavailable(LLMError):
    pass


class LLMBadOutput(LLMError):
    def __init__(self, message: str) -> None:
        super().__init__(message, kind="bad_output")


class TransportError(SupportbotError):
    """A chat call failed; nothing may be recorded as sent. `code` is the chat's own error code where it gave
    one (Slack's `invalid_auth`, `channel_not_found`, …), else `http_<status>`, `connection` or `timeout`."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        self.code = code
        super().__init__(message)
