"""Claude failing 30 % of calls and Slack rate-limiting 20 % of posts: every message still ends in one reply or
one escalation, all of it recorded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config, parse_config
from bot.web.server import start_server
from storage.models import DecisionRecord, Escalation, LLMCall
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.reliability.conftest import (
    BASE_TOML,
    CUSTOMER,
    ESCALATING,
    QUESTIONS,
    SUPPORT,
    bot_posts_per_thread,
    seed_questions,
    wait_until,
)
from tests.slack.conftest import SlackBotHarness, running_bot

pytestmark = pytest.mark.timeout(90)

MESSAGES = 60
RECORDED_KINDS = {"rate_limited", "overloaded", "server_error", "timeout", "connection", "bad_response", "deadline"}


def fault_config() -> Config:
    return parse_config(BASE_TOML.replace("{escalation}", ""), source=None)


@asynccontextmanager
async def bot_on_claude(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, database_url: str, config: Config,
) -> AsyncIterator[SlackBotHarness]:
    """The server of `supportbot serve` in HTTP mode on (the fake) Claude, in real time."""
    settings = slack_settings(fake_slack, database_url).model_copy(update={
        "anthropic_api_key": SecretStr(fake_anthropic.api_key), "anthropic_base_url": fake_anthropic.url,
        # A post Slack kept refusing is retried by the pipeline after its back-off (5 s): look for it often.
        "supportbot_recovery_interval_s": 0.5})
    server = await start_server(settings, config, host="127.0.0.1", port=0, instance_id="faults-1")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield SlackBotHarness(server, fake_slack, http)
    finally:
        await server.stop()


async def test_every_message_ends_in_one_reply_or_one_escalation_when_claude_and_slack_fail(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str,
) -> None:
    config = fault_config()
    fake_anthropic.fault_ratio(0.3, seed=11)  # 429, 529, 500, timeouts and garbled bodies
    fake_slack.rate_limit("chat.postMessage", 0.2, retry_after=1, seed=5)
    texts = [f"{QUESTIONS[n % len(QUESTIONS)]} (ticket {n})" for n in range(MESSAGES - 5)]
    texts += [f"{ESCALATING} (ticket {n})" for n in range(5)]
    questions = seed_questions(fake_slack, texts)

    async with bot_on_claude(fake_slack, fake_anthropic, sqlite_url, config) as bot:
        statuses = await asyncio.gather(*(
            bot.send_event(sp.message_event(SUPPORT, CUSTOMER, q.text, q.ts), event_id=f"EvF{n:03d}")
            for n, q in enumerate(questions)))
        assert [status for status, _ in statuses] == [200] * MESSAGES

        await wait_until(lambda: len(bot_posts_per_thread(fake_slack)) == MESSAGES, 60, "an answer in every thread",
                         lambda: len(bot_posts_per_thread(fake_slack)))
        await bot.settle(30)

        per_thread = bot_posts_per_thread(fake_slack)
        assert set(per_thread) == {q.ts for q in questions}
        assert set(per_thread.values()) == {1}, {ts: n for ts, n in per_thread.items() if n != 1}
        rows = await bot.inbox()
        assert len(rows) == MESSAGES and {row.status for row in rows} == {"done"}
        assert all(row.reply_ts for row in rows)
        async with bot.runtime.db.sessions() as session:
            decisions = (await session.execute(select(DecisionRecord))).scalars().all()
            escalations = (await session.execute(select(Escalation))).scalars().all()
            llm_calls = (await session.execute(select(LLMCall))).scalars().all()

    # Each message has its decision, finished with what the user saw.
    assert len(decisions) == MESSAGES
    outcomes = Counter(d.outcome for d in decisions)
    assert set(outcomes) <= {"replied", "escalated"} and outcomes["escalated"] >= 5, outcomes
    assert all(d.reply_text for d in decisions)
    escalated = {d.id for d in decisions if d.outcome == "escalated"}
    assert {e.decision_id for e in escalations} == escalated
    # The faults did happen: more requests reached Claude than calls were recorded (the retries), and Slack
    # answered posts with 429s that were waited out.
    assert len(fake_anthropic.requests_for()) > len(llm_calls) + 10
    assert all(call.error is None or call.error.split(":")[0] in RECORDED_KINDS for call in llm_calls)
    rate_limited = [call for call in fake_slack.calls_to("chat.postMessage") if call.status == 429]
    assert len(rate_limited) >= 5


async def test_an_escalation_notice_slack_refused_is_still_delivered_by_the_retry(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config, clock: ManualClock,
) -> None:
    """The message escalated (the thread is now "escalated"), then Slack refused the customer's notice: the retry
    must deliver the notice rather than stay quiet in a thread a person was paged for."""
    async with running_bot(fake_slack, sqlite_url, slack_config, clock=clock) as bot:
        fake_slack.fail_next("chat.postMessage", status=500, count=2)  # the page, then the customer's notice
        posted = await bot.post(SUPPORT, CUSTOMER, ESCALATING)
        await fake_slack.wait_for("chat.postMessage", 2)
        await bot.settle()
        assert bot.bot_replies(SUPPORT, posted.ts) == []
        [row] = await bot.inbox()
        assert (row.status, row.outcome) == ("pending", "escalated") and row.reply_intent

        clock.advance(10)  # past the pipeline's first back-off (5 s)
        assert await bot.runtime.dispatcher.recover() == 1
        await bot.settle()
        [notice] = bot.bot_replies(SUPPORT, posted.ts)
        assert "paged a person" in notice.text
        [row] = await bot.inbox()
        assert (row.status, row.outcome, row.reply_ts) == ("done", "escalated", notice.ts)
        async with bot.runtime.db.sessions() as session:
            [decision] = (await session.execute(select(DecisionRecord))).scalars().all()
        assert decision.outcome == "escalated" and decision.escalated
