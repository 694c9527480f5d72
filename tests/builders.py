"""Builders shared by the tests that drive the pipeline directly (no Slack in between)."""

from __future__ import annotations

import itertools

from bot.domain import InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import Runtime

_counter = itertools.count(1)


def message(
    text: str, *, thread_ts: str | None = None, user: str = "UCUST", channel: str = "CSUPPORT"
) -> InboundMessage:
    """A customer's Slack message with a fresh ts and event id."""
    n = next(_counter)
    return InboundMessage(source="slack", team="T0TEAM", channel=channel, user=user, text=text,
                          ts=f"1700000000.{n:06d}", event_id=f"Ev{n:08d}", thread_ts=thread_ts)


def chat_of(runtime: Runtime) -> LocalChat:
    assert isinstance(runtime.chat, LocalChat)
    return runtime.chat
