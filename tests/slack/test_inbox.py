"""Grouped inbox writes: concurrent acks share transactions and still record each message exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from bot.config import Config
from bot.domain import InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from bot.slack.inbox import InboxWriter
from storage.models import InboundEvent

pytestmark = pytest.mark.timeout(60)


def _message(n: int, event_id: str) -> InboundMessage:
    return InboundMessage(source="slack", team="T0TEAM", channel="C0SUPPORT", user="U0ALICE",
                          text=f"question {n}", ts=f"1700000000.{n:06d}", event_id=event_id)


async def test_concurrent_acks_record_each_message_once_on_both_databases(database_url: str, config: Config) -> None:
    runtime = await build_runtime(Settings(database_url=database_url), config, chat=LocalChat(), instance_id="w")
    writer = InboxWriter(runtime.pipeline, max_batch=7)
    try:
        await runtime.dispatcher.drain(0)
        # 30 messages, each announced three times (message, app_mention, a Slack retry), all at once.
        announced = [_message(n, f"Ev{n}-{kind}") for n in range(30) for kind in ("message", "mention", "retry")]
        ids = await asyncio.gather(*(writer.accept(msg) for msg in announced))

        fresh = [inbox_id for inbox_id in ids if inbox_id is not None]
        assert len(fresh) == len(set(fresh)) == 30
        for n in range(30):
            assert sum(inbox_id is not None for inbox_id in ids[3 * n: 3 * n + 3]) == 1
        assert await writer.accept(_message(5, "Ev5-late")) is None  # after a restart, say

        async with runtime.db.sessions() as session:
            rows = (await session.execute(select(InboundEvent))).scalars().all()
        duplicates = {row.payload["ts"]: row.duplicates for row in rows}
        assert len(rows) == 30 and duplicates.pop("1700000000.000005") == 3 and set(duplicates.values()) == {2}
        assert sorted(row.id for row in rows) == sorted(fresh)
        assert all(row.status == "pending" and row.payload["text"].startswith("question") for row in rows)
    finally:
        await runtime.close()
