"""Fixtures for the Slack adapter: the fake Slack Web API, and the real server of `supportbot serve` wired to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.clock import Clock, ManualClock
from bot.config import Config, load_config
from bot.llm.base import LLM
from bot.runtime import Runtime
from bot.slack.app import SlackBot
from bot.web.server import RunningServer, start_server
from storage.models import InboundEvent
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI, SlackCall, SlackMessage

SUPPORT = "C0SUPPORT"
OTHER = "C0RANDOM"
PAGES = "C0PAGES"
CUSTOMER = "U0ALICE"
COLLEAGUE = "U0CAROL"
STAFF = "U0STAFF"
ONCALL = "U0ONCALL"
STRANGER = "U0BOB"

@pytest.fixture
def slack_config() -> Config:
    """The built-in config (routes and escalation rules) with a support channel, staff and on-call."""
    base = load_config()
    return base.model_copy(update={
        "bot": base.bot.model_copy(update={"support_channels": [SUPPORT], "staff": [STAFF]}),
        "escalation": base.escalation.model_copy(update={"oncall": [ONCALL], "channel": PAGES}),
    })


@dataclass
class Posted:
    """A message a person posted (stored in the fake Slack) and the HTTP statuses of its events."""

    message: SlackMessage
    statuses: list[int]

    @property
    def ts(self) -> str:
        return self.message.ts


@dataclass
class SlackBotHarness:
    """A running `supportbot serve` in HTTP mode, and an HTTP client that plays Slack towards it."""

    server: RunningServer
    fake: FakeSlackAPI
    http: aiohttp.ClientSession

    @property
    def runtime(self) -> Runtime:
        return self.server.runtime

    @property
    def slack(self) -> SlackBot:
        assert self.server.slack is not None
        return self.server.slack

    @property
    def events_url(self) -> str:
        return f"{self.server.url}/slack/events"

    async def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(self.events_url, data=body, headers=headers) as response:
            return response.status, await response.text()

    async def send_event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None,
        timestamp: int | None = None, valid_signature: bool = True,
    ) -> tuple[int, str]:
        body, headers = sp.encode_event_request(
            sp.event_callback(event, event_id=event_id), retry_num=retry_num, timestamp=timestamp,
            valid_signature=valid_signature)
        return await self.send(body, headers)

    async def send_body(self, payload: dict[str, Any], **options: Any) -> tuple[int, str]:
        body, headers = sp.encode_event_request(payload, **options)
        return await self.send(body, headers)

    async def post(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None, mention: bool = False,
        channel_type: sp.ChannelType | None = None,
    ) -> Posted:
        """A person posts: the message is stored in Slack and its `message` event (and `app_mention`) sent."""
        message = self.fake.seed_message(channel, text, user=user, thread_ts=thread_ts,
                                         blocks=sp.rich_text_blocks(text))
        parent_user = self.fake.message(channel, thread_ts).user if thread_ts else None
        statuses = [(await self.send_event(sp.message_event(
            channel, user, text, message.ts, thread_ts=thread_ts, parent_user_id=parent_user,
            channel_type=channel_type)))[0]]
        if mention:
            statuses.append((await self.send_event(
                sp.app_mention_event(channel, user, text, message.ts, thread_ts=thread_ts)))[0])
        return Posted(message, statuses)

    async def click(
        self, action_id: str, value: str, *, user: str, channel: str, message_ts: str,
        thread_ts: str | None = None, valid_signature: bool = True,
    ) -> int:
        payload = sp.block_actions(action_id, value, user_id=user, channel=channel, message_ts=message_ts,
                                   thread_ts=thread_ts)
        body, headers = sp.encode_interaction_request(payload, valid_signature=valid_signature)
        status, _ = await self.send(body, headers)
        return status

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every message and click handed over after an ack has been dealt with."""
        async with asyncio.timeout(timeout_s):
            quiet_rounds = 0
            while quiet_rounds < 2:
                await asyncio.sleep(0.01)
                busy = self.runtime.dispatcher.pending > 0 or bool(self.slack._background)
                await self.runtime.dispatcher.wait_idle(timeout_s)
                await self.slack.wait_idle(timeout_s)
                quiet_rounds = 0 if busy else quiet_rounds + 1

    def bot_replies(self, channel: str, thread_ts: str) -> list[SlackMessage]:
        """What a user sees from the bot in that thread."""
        return [m for m in self.fake.messages_in(channel, thread_ts)
                if m.bot_id == self.fake.bot_id and m.ts != thread_ts]

    def posts_in_thread(self, channel: str, thread_ts: str) -> list[SlackCall]:
        return [c for c in self.fake.successful_calls_to("chat.postMessage")
                if c.params.get("channel") == channel and c.params.get("thread_ts") == thread_ts]

    async def inbox(self) -> list[InboundEvent]:
        async with self.runtime.db.sessions() as session:
            return list((await session.execute(select(InboundEvent).order_by(InboundEvent.id))).scalars())

    async def metrics(self) -> str:
        async with self.http.get(f"{self.server.url}/metrics") as response:
            return await response.text()


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeSlackAPI, database_url: str, config: Config, *, clock: Clock | None = None, llm: LLM | None = None,
    instance_id: str = "slack-1",
) -> AsyncIterator[SlackBotHarness]:
    server = await start_server(slack_settings(fake, database_url), config, host="127.0.0.1", port=0,
                                clock=clock or ManualClock(), llm=llm, instance_id=instance_id)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield SlackBotHarness(server, fake, http)
    finally:
        await server.stop()


@pytest.fixture
async def bot(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config, clock: ManualClock
) -> AsyncIterator[SlackBotHarness]:
    """The bot in HTTP mode on a real SQLite file, talking to the fake Slack."""
    async with running_bot(fake_slack, sqlite_url, slack_config, clock=clock) as harness:
        yield harness


def reply_text(message: SlackMessage) -> str:
    """Everything a user can read in a bot message: the fallback text and the section blocks."""
    sections = [b["text"]["text"] for b in message.blocks or [] if b.get("type") == "section" and "text" in b]
    return "\n".join([message.text, *sections])


def buttons(message: SlackMessage) -> list[dict[str, Any]]:
    return [element for block in message.blocks or [] if block.get("type") == "actions"
            for element in block.get("elements", [])]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
