"""Several real `supportbot serve` replicas on one PostgreSQL: one reply per message, one page per round."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from bot.config import Config
from bot.domain import InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.reliability.conftest import (
    CUSTOMER,
    ESCALATING,
    PAGES,
    QUESTIONS,
    SUPPORT,
    SpawnServe,
    bot_posts_per_thread,
    inbox_rows,
    seed_questions,
    send_event,
    serve_env,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

REPLICAS = 3
EVENTS = 30
ESCALATIONS = 3
PAGE_BLOCK = re.compile(r"^supportbot-escalation:(\d+):(\d+)$")


def page_rounds(fake: FakeSlackAPI) -> list[tuple[int, int]]:
    """(escalation id, round) of every page the bot got into the pages channel."""
    rounds = []
    for call in fake.successful_calls_to("chat.postMessage"):
        if call.params.get("channel") != PAGES:
            continue
        for block in call.params.get("blocks") or []:
            found = PAGE_BLOCK.match(str(block.get("block_id", "")))
            if found:
                rounds.append((int(found.group(1)), int(found.group(2))))
    return rounds


@pytest.mark.slow
async def test_replicas_answer_each_event_once_however_its_retries_are_spread(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, pg_url: str, tmp_path: Path,
    spawn_serve: SpawnServe,
) -> None:
    # Every model call takes a while, so retries arrive while another replica is still working on the message.
    # Each escalation is paged (round 1) and, unacknowledged after 5 s, re-paged once at level 2 (round 2):
    # every replica sweeps, exactly one may post each round.
    fake_anthropic.latency_s = 0.3
    config = write_config(tmp_path, escalation="ack_timeout_s = 5\nrepage_max = 0")
    replicas = await asyncio.gather(*(
        spawn_serve(f"replica-{n}", serve_env(database_url=pg_url, config_path=config, instance_id=f"replica-{n}",
                                              slack=fake_slack, anthropic=fake_anthropic))
        for n in range(REPLICAS)))

    texts = [QUESTIONS[n % len(QUESTIONS)] + f" (case {n})" for n in range(EVENTS - ESCALATIONS)]
    texts += [f"{ESCALATING} (case {n})" for n in range(ESCALATIONS)]
    questions = seed_questions(fake_slack, texts)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        deliveries = []
        for n, question in enumerate(questions):
            event = sp.message_event(SUPPORT, CUSTOMER, question.text, question.ts)
            for attempt in range(3):  # the event, then Slack's retries 1 and 2, each to another replica
                target = replicas[(n + attempt) % REPLICAS]
                deliveries.append(send_event(http, target.url, event, event_id=f"Ev{n:04d}",
                                             retry_num=attempt or None))
        statuses = await asyncio.gather(*deliveries)
    assert statuses == [200] * (3 * EVENTS)

    await wait_until(lambda: len(bot_posts_per_thread(fake_slack)) == EVENTS, 60, "a reply in every thread")
    # Every escalation is paged, then (ack_timeout_s later) paged at level 2: two rounds each.
    await wait_until(lambda: len(set(page_rounds(fake_slack))) == 2 * ESCALATIONS, 30, "every page round",
                     lambda: sorted(page_rounds(fake_slack)))
    for replica in replicas:
        await replica.wait_for_passes(3)  # recovery and sweep passes: a duplicate would have shown by now

    per_thread = bot_posts_per_thread(fake_slack)
    assert sorted(per_thread) == sorted(q.ts for q in questions)
    assert set(per_thread.values()) == {1}, {
        ts: [(m.text[:60], m.stream_state, m.subtype) for m in fake_slack.messages_in(SUPPORT, ts) if m.ts != ts]
        for ts, n in per_thread.items() if n != 1}
    rounds = page_rounds(fake_slack)
    assert len(rounds) == len(set(rounds)) == 2 * ESCALATIONS, sorted(rounds)

    rows = await inbox_rows(pg_url)
    assert len(rows) == EVENTS
    assert {row.status for row in rows} == {"done"} and {row.duplicates for row in rows} == {2}
    assert sum(row.outcome == "escalated" for row in rows) >= ESCALATIONS
    # The work was shared: more than one replica finished messages.
    assert len({row.lease_owner for row in rows}) > 1


async def test_replicas_writing_overlapping_inbox_batches_never_deadlock(pg_url: str, config: Config) -> None:
    """One replica acks a burst while another acks the same messages' retries in another order: both batches
    commit (a deadlock made PostgreSQL abort one, and every ack in it answered 500)."""
    replicas = [await build_runtime(Settings(database_url=pg_url), config, chat=LocalChat(), instance_id=name)
                for name in ("inbox-a", "inbox-b")]
    try:
        for runtime in replicas:
            await runtime.dispatcher.drain(0)  # only the ack side is under test
        for burst in range(10):
            msgs = [InboundMessage(source="slack", team="T0TEAM", channel=SUPPORT, user=CUSTOMER, text=f"q{n}",
                                   ts=f"17000{burst:05d}.{n:06d}", event_id=f"Ev{burst}-{n}") for n in range(200)]
            first, second = await asyncio.gather(replicas[0].pipeline.accept_many(msgs),
                                                 replicas[1].pipeline.accept_many(msgs[::-1]))
            # Each message recorded exactly once, by one of the two.
            assert all((a is None) != (b is None) for a, b in zip(first, second[::-1], strict=True))
        rows = await inbox_rows(pg_url)
        assert len(rows) == 10 * 200 and {row.duplicates for row in rows} == {1}
    finally:
        for runtime in replicas:
            await runtime.close()
