"""👍/👎 on every answer and what became of each thread, through Slack: signed `block_actions` presses built from
the messages the fake Slack holds, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.feedback import BAD_ANSWER_OFFER, NOT_THE_ASKER, is_thanks
from bot.web.server import start_server
from storage.models import AnswerFeedback, Conversation, Escalation, SlaClock
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage
from tests.slack.conftest import (
    CUSTOMER,
    ONCALL,
    PAGES,
    STAFF,
    STRANGER,
    SUPPORT,
    Posted,
    SlackBotHarness,
    buttons,
    running_bot,
)

pytestmark = pytest.mark.timeout(60)

QUESTION = "the app crashes every time I upload a file"


@pytest.fixture
async def bot_on(
    fake_slack: FakeSlackAPI, database_url: str, slack_config: Config, clock: ManualClock
) -> AsyncIterator[SlackBotHarness]:
    """The bot in HTTP mode on SQLite and on PostgreSQL."""
    async with running_bot(fake_slack, database_url, slack_config, clock=clock) as harness:
        yield harness


async def ask(
    bot: SlackBotHarness, text: str = QUESTION, *, thread_ts: str | None = None
) -> tuple[Posted, SlackMessage]:
    """The customer asks; returns their message and the bot's (latest) answer in the thread."""
    posted = await bot.post(SUPPORT, CUSTOMER, text, thread_ts=thread_ts)
    await bot.settle()
    replies = bot.bot_replies(SUPPORT, thread_ts or posted.ts)
    return posted, replies[-1]


async def press(bot: SlackBotHarness, message: SlackMessage, user: str, *, action_id: str = "reply_feedback",
                value: str) -> None:
    """`user` presses a button the message shows; Slack's signed block_actions reaches the bot."""
    payload = bot.fake.press_payload(SUPPORT, message.ts, user, action_id=action_id, value=value)
    body, headers = sp.encode_interaction_request(payload)
    status, _ = await bot.send(body, headers)
    assert status == 200
    await bot.settle()


async def ratings(bot: SlackBotHarness) -> list[tuple[str, str, bool, str | None]]:
    async with bot.runtime.db.sessions() as session:
        rows = (await session.execute(select(AnswerFeedback).order_by(AnswerFeedback.id))).scalars()
        return [(row.user, row.value, row.from_asker, row.reason) for row in rows]


async def resolution(bot: SlackBotHarness, thread_ts: str) -> tuple[str | None, str | None]:
    async with bot.runtime.db.sessions() as session:
        conversation = (await session.execute(
            select(Conversation).where(Conversation.thread_ts == thread_ts))).scalar_one()
        return conversation.resolution, conversation.resolution_basis


async def resolution_clock(bot: SlackBotHarness, thread_ts: str) -> tuple[str | None, Any]:
    """The route and met time of the thread's time-to-resolution clock (SLA), or (None, None) without one."""
    async with bot.runtime.db.sessions() as session:
        clock = (await session.execute(
            select(SlaClock).join(Conversation, Conversation.id == SlaClock.conversation_id)
            .where(Conversation.thread_ts == thread_ts, SlaClock.metric == "resolution"))).scalar_one_or_none()
        return (None, None) if clock is None else (clock.route, clock.met_at)


def feedback_element(message: SlackMessage) -> dict[str, Any]:
    [block] = [b for b in message.blocks or [] if b["type"] == "context_actions"]
    [element] = block["elements"]
    return dict(element)


def offers(bot: SlackBotHarness, thread_ts: str) -> list[SlackMessage]:
    return [m for m in bot.bot_replies(SUPPORT, thread_ts) if m.text.startswith("Sorry that didn't help")]


async def test_the_askers_thumbs_up_on_slacks_feedback_buttons_resolves_the_thread(bot_on: SlackBotHarness) -> None:
    bot = bot_on
    question, answer = await ask(bot)
    element = feedback_element(answer)
    assert (element["type"], element["action_id"]) == ("feedback_buttons", "reply_feedback")
    assert (element["positive_button"]["value"], element["negative_button"]["value"]) == ("good", "bad")
    assert await resolution(bot, question.ts) == (None, None)

    await press(bot, answer, CUSTOMER, value="good")
    assert await ratings(bot) == [(CUSTOMER, "good", True, None)]
    assert await resolution(bot, question.ts) == ("resolved_by_bot", "feedback")
    assert bot.fake.ephemeral_messages() == [] and offers(bot, question.ts) == []
    # The thread's time to resolution (SLA) stops when the bot resolved it.
    route, met_at = await resolution_clock(bot, question.ts)
    assert route == "technical" and met_at is not None


async def test_notices_carry_no_feedback(bot: SlackBotHarness) -> None:
    posted = await bot.post(SUPPORT, CUSTOMER, "This is unacceptable, I will sue you")
    await bot.settle()
    [notice] = bot.bot_replies(SUPPORT, posted.ts)
    assert "paged a person" in notice.text
    assert not any(b["type"] == "context_actions" for b in notice.blocks or [])
    assert not any(e.get("action_id") == "reply_feedback" for e in buttons(notice))


async def test_a_workspace_refusing_context_actions_gets_plain_buttons_and_is_not_asked_again(
    bot: SlackBotHarness,
) -> None:
    bot.fake.reject_block_type("context_actions")
    question, answer = await ask(bot)
    assert [(b["action_id"], b["value"]) for b in buttons(answer) if b["action_id"] == "reply_feedback"] == [
        ("reply_feedback", "good"), ("reply_feedback", "bad")]
    await ask(bot, "and the export button does nothing")
    refused = [call for call in bot.fake.calls_to("chat.postMessage") if not call.ok]
    assert len(refused) == 1  # only the first answer tried Slack's own block

    await press(bot, answer, CUSTOMER, value="bad")
    assert await ratings(bot) == [(CUSTOMER, "bad", True, None)]
    assert len(offers(bot, question.ts)) == 1


async def test_only_the_asker_and_staff_count_and_strangers_are_told_politely(bot: SlackBotHarness) -> None:
    question, answer = await ask(bot)
    await press(bot, answer, STRANGER, value="bad")
    [told] = bot.fake.ephemeral_messages(user=STRANGER)
    assert told.text == NOT_THE_ASKER and told.channel == SUPPORT
    assert await ratings(bot) == []

    await press(bot, answer, STAFF, value="bad")
    assert await ratings(bot) == [(STAFF, "bad", False, None)]
    # Staff ratings are kept for review: they neither offer a person nor settle the thread.
    assert offers(bot, question.ts) == [] and await resolution(bot, question.ts) == (None, None)


async def test_a_change_of_mind_replaces_the_rating_and_the_offer_comes_once(bot: SlackBotHarness) -> None:
    question, answer = await ask(bot)
    await press(bot, answer, CUSTOMER, value="good")
    await press(bot, answer, CUSTOMER, value="bad")
    await press(bot, answer, CUSTOMER, value="bad")
    assert await ratings(bot) == [(CUSTOMER, "bad", True, None)]
    assert await resolution(bot, question.ts) == (None, None)
    assert len(offers(bot, question.ts)) == 1

    await press(bot, answer, CUSTOMER, value="good")
    assert await ratings(bot) == [(CUSTOMER, "good", True, None)]
    assert await resolution(bot, question.ts) == ("resolved_by_bot", "feedback")


async def test_thumbs_down_then_a_reason_then_get_a_human_then_resolved_by_a_human(bot_on: SlackBotHarness) -> None:
    bot = bot_on
    question, answer = await ask(bot)
    await press(bot, answer, CUSTOMER, value="bad")
    [offer] = offers(bot, question.ts)
    assert offer.text == BAD_ANSWER_OFFER.template
    [get_a_human] = buttons(offer)
    assert get_a_human["action_id"] == "escalation_request" and get_a_human["value"].endswith(":feedback")

    # The next message says what was wrong: kept as the reason, and answered again.
    _, second = await ask(bot, "it still crashes on files over 2 GB", thread_ts=question.ts)
    assert second.ts != answer.ts
    assert await ratings(bot) == [(CUSTOMER, "bad", True, "it still crashes on files over 2 GB")]

    await press(bot, offer, CUSTOMER, action_id="escalation_request", value=get_a_human["value"])
    async with bot.runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    assert escalation.trigger == "feedback" and "👎" in escalation.reason
    [page] = bot.fake.messages_in(PAGES)
    assert await resolution(bot, question.ts) == ("escalated", "escalation_opened")

    resolve = next(b for b in buttons(page) if b["action_id"] == "escalation_resolve")
    payload = bot.fake.press_payload(PAGES, page.ts, ONCALL, action_id="escalation_resolve", value=resolve["value"])
    body, headers = sp.encode_interaction_request(payload)
    assert (await bot.send(body, headers))[0] == 200
    await bot.settle()
    assert await resolution(bot, question.ts) == ("resolved_by_human", "escalation_resolved")


async def test_a_thanks_resolves_the_thread_and_a_thanks_but_does_not(bot: SlackBotHarness) -> None:
    question, _ = await ask(bot)
    await bot.post(SUPPORT, CUSTOMER, "thanks, that worked!", thread_ts=question.ts)
    await bot.settle()
    assert await resolution(bot, question.ts) == ("resolved_by_bot", "thanks")
    assert (await resolution_clock(bot, question.ts))[1] is not None
    assert len(bot.bot_replies(SUPPORT, question.ts)) == 1  # nothing to answer

    other, _ = await ask(bot, "the export button does nothing")
    await bot.post(SUPPORT, CUSTOMER, "thanks but it still fails", thread_ts=other.ts)
    await bot.settle()
    assert await resolution(bot, other.ts) == (None, None)
    assert len(bot.bot_replies(SUPPORT, other.ts)) == 2


async def test_quiet_threads_settle_when_the_window_has_passed(bot: SlackBotHarness, clock: ManualClock) -> None:
    answered, _ = await ask(bot)
    disliked, disliked_answer = await ask(bot, "the export button does nothing")
    await press(bot, disliked_answer, CUSTOMER, value="bad")

    clock.advance(23 * 3600)
    assert await bot.runtime.feedback.settle() == 0
    clock.advance(3600 + 1)
    assert await bot.runtime.feedback.settle() == 2
    assert await resolution(bot, answered.ts) == ("resolved_by_bot", "no_follow_up")
    assert await resolution(bot, disliked.ts) == ("abandoned", "feedback")
    assert (await resolution_clock(bot, answered.ts))[1] == clock.now()
    assert await resolution_clock(bot, disliked.ts) == (None, None)
    assert await bot.runtime.feedback.settle() == 0

    # Coming back reopens the thread.
    await ask(bot, "one more thing: can I upload from my phone?", thread_ts=answered.ts)
    assert await resolution(bot, answered.ts) == (None, None)


async def test_the_servers_background_pass_settles_quiet_threads(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config, clock: ManualClock,
) -> None:
    settings = slack_settings(fake_slack, sqlite_url).model_copy(update={"supportbot_recovery_interval_s": 0.1})
    server = await start_server(settings, slack_config, host="127.0.0.1", port=0, clock=clock, instance_id="settle")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            bot = SlackBotHarness(server, fake_slack, http)
            question, _ = await ask(bot)
            clock.advance(24 * 3600 + 1)
            for _ in range(200):  # the pass runs every 0.1 s
                if await resolution(bot, question.ts) != (None, None):
                    break
                await asyncio.sleep(0.05)
            assert await resolution(bot, question.ts) == ("resolved_by_bot", "no_follow_up")
            assert 'supportbot_background_passes_total{job="settle"}' in await bot.metrics()
    finally:
        await server.stop()


@pytest.mark.parametrize(("text", "thanks"), [
    ("thanks, that worked", True),
    ("Thank you so much, fixed!", True),
    ("perfect, works now 🙏", True),
    ("that did the trick", True),
    ("thanks!", True),
    ("thanks but it still fails", False),
    ("thanks, I'll try that later", False),
    ("thanks. doesn't work though", False),
    ("thank you! what about the export?", False),
    ("it worked yesterday, now it fails again", False),
    ("ok", False),
    ("the upload stops at 50%, thanks for the earlier help but this is a different error message", False),
])
def test_the_thanks_matcher_is_careful(text: str, thanks: bool) -> None:
    assert is_thanks(text) is thanks
