"""Escalation test helpers: runtimes on a ManualClock over a local chat or the fake Slack Web API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.domain import InboundMessage
from bot.local_chat import LocalChat, LocalPost
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.slack.pages import page_blocks, page_text
from storage.models import Escalation, EscalationEvent
from tests.conftest import config_with
from tests.fakes import slack_payloads as payloads

ANGRY = "This is unacceptable, I will sue you and my lawyer will hear about this"
CUSTOMER = "U0CUST"
SUPPORT = "C0SUPPORT"
PAGES = "C0ESC"
_numbers = itertools.count(1)

# Rules only: these tests are about escalation, not about how the classifier routes.
BASE_TOML = """
[router]
mode = "rules"
[[router.rules]]
name = "legal-threat"
route = "escalate"
pattern = '(?i)\\bsue you\\b|\\blawyer\\b'
[bot]
staff = ["U0STAFF"]
support_channels = ["C0SUPPORT"]
[escalation]
oncall = ["U0ALICE", "U0BOB"]
channel = "C0ESC"
ack_timeout_s = 600
repage_max = 2
"""


def escalation_config(extra: str = BASE_TOML) -> Config:
    return config_with(extra)


def customer_message(text: str = ANGRY, *, thread_ts: str | None = None, channel: str = SUPPORT,
                     user: str = CUSTOMER, team: str = payloads.TEAM_ID) -> InboundMessage:
    n = next(_numbers)
    return InboundMessage(source="slack", team=team, channel=channel, user=user, text=text,
                          ts=f"1700000100.{n:06d}", event_id=f"EvEsc{n:06d}", thread_ts=thread_ts)


async def local_runtime(config: Config, database_url: str, clock: ManualClock, *,
                        instance_id: str = "esc-1", chat: LocalChat | None = None) -> Runtime:
    return await build_runtime(Settings(database_url=database_url), config, chat=chat or LocalChat(clock),
                               clock=clock, instance_id=instance_id)


def local_chat(runtime: Runtime) -> LocalChat:
    assert isinstance(runtime.chat, LocalChat)
    return runtime.chat


def pages_in(chat: LocalChat, channel: str) -> list[LocalPost]:
    """Page messages in a channel, oldest first."""
    return [post for post in chat.posts_in(channel) if post.page is not None]


def slack_blocks(post: LocalPost) -> list[dict[str, Any]]:
    """The page as on-call people see it in Slack: the Slack adapter's Block Kit for it."""
    assert post.page is not None
    return page_blocks(post.page)


def slack_text(post: LocalPost) -> str:
    """The page's notification text in Slack (what a phone shows)."""
    assert post.page is not None
    return page_text(post.page)


def buttons(blocks: list[Any]) -> dict[str, str]:
    """action_id -> value of every button on a message."""
    return {element["action_id"]: element["value"]
            for block in blocks if block.get("type") == "actions" for element in block["elements"]}


def block_text(blocks: list[Any]) -> str:
    """Every piece of text on a message, as a person reading it sees it (mrkdwn source)."""
    parts: list[str] = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            parts.append(text["text"])
        for item in block.get("fields", []) + block.get("elements", []):
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])
    return "\n".join(parts)


async def only_escalation(runtime: Runtime) -> Escalation:
    async with runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    return escalation


async def escalation(runtime: Runtime, escalation_id: int) -> Escalation:
    async with runtime.db.sessions() as session:
        found = await session.get(Escalation, escalation_id)
    assert found is not None
    return found


async def transitions(runtime: Runtime, escalation_id: int) -> list[tuple[str | None, str, str | None]]:
    """(from, to, actor) of every state change, re-pages and page posts left out."""
    async with runtime.db.sessions() as session:
        events = (await session.execute(
            select(EscalationEvent).where(EscalationEvent.escalation_id == escalation_id)
            .order_by(EscalationEvent.id))).scalars().all()
    return [(e.from_state, e.to_state, e.actor) for e in events if e.from_state != e.to_state]


Factory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(sqlite_url: str, clock: ManualClock) -> AsyncIterator[Factory]:
    """Builds runtimes (closed at the end) on one SQLite file and the test's ManualClock."""
    built: list[Runtime] = []

    async def make(config: Config | None = None, **kwargs: Any) -> Runtime:
        kwargs.setdefault("database_url", sqlite_url)
        runtime = await local_runtime(config or escalation_config(), kwargs.pop("database_url"), clock, **kwargs)
        built.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in built:
            await runtime.close()
