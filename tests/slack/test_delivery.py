"""Exactly one reply when Slack rate-limits, fails, loses an answer, or the bot restarts."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.domain import InboundMessage, Notice, PostedMessage
from bot.errors import TransportError
from bot.escalation import Audience, Page
from bot.runtime import build_runtime
from bot.slack.transport import SlackSetupError, open_slack_chat
from bot.vocabulary import EscalationState
from bot.web.server import start_server
from storage.models import InboundEvent
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import DROPPED, FakeSlackAPI
from tests.slack.conftest import CUSTOMER, SUPPORT, SlackBotHarness, running_bot

pytestmark = pytest.mark.timeout(30)


async def test_a_rate_limited_post_waits_for_retry_after_and_goes_through_once(bot: SlackBotHarness) -> None:
    bot.fake.fail_next("chat.postMessage", status=429, retry_after=0)
    posted = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    attempts = bot.fake.calls_to("chat.postMessage")
    assert [call.status for call in attempts] == [429, 200]
    assert len(bot.bot_replies(SUPPORT, posted.ts)) == 1


async def test_server_errors_are_retried_later_by_the_pipeline_and_the_user_gets_one_reply(
    bot: SlackBotHarness, clock: ManualClock,
) -> None:
    bot.fake.fail_next("chat.postMessage", status=500, count=2)
    posted = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage")
    await bot.settle()
    # A 500 may hide a post that went through, so it is not resent blindly: nothing shown yet.
    assert bot.bot_replies(SUPPORT, posted.ts) == []
    [row] = await bot.inbox()
    assert row.status == "pending" and "internal_error" in (row.error or "")

    for waited in (10, 60):  # the pipeline's back-off: 5 s, then 30 s
        clock.advance(waited)
        assert await bot.runtime.dispatcher.recover() == 1
        await bot.settle()
    assert [call.status for call in bot.fake.calls_to("chat.postMessage")] == [500, 500, 200]
    assert len(bot.bot_replies(SUPPORT, posted.ts)) == 1
    # Before each new attempt the thread is checked for a reply that did get through.
    assert len(bot.fake.successful_calls_to("conversations.replies")) == 2


async def test_a_dropped_connection_is_retried_later_and_answered_once(
    bot: SlackBotHarness, clock: ManualClock,
) -> None:
    bot.fake.drop_connection_next("chat.postMessage")
    posted = await bot.post(SUPPORT, CUSTOMER, "how do I reset my password?")
    await bot.fake.wait_for("chat.postMessage")
    await bot.settle()
    clock.advance(10)
    await bot.runtime.dispatcher.recover()
    await bot.settle()
    assert [call.status for call in bot.fake.calls_to("chat.postMessage")] == [DROPPED, 200]
    assert len(bot.bot_replies(SUPPORT, posted.ts)) == 1


async def test_a_reply_whose_answer_was_lost_is_found_in_the_thread_and_not_posted_again(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config, clock: ManualClock,
) -> None:
    settings = slack_settings(fake_slack, sqlite_url)
    chat = await open_slack_chat(settings, slack_config, timeout_s=0.5)
    runtime = await build_runtime(settings, slack_config, chat=chat, clock=clock, instance_id="lost-1")
    try:
        question = fake_slack.seed_message(SUPPORT, "how do I reset my password?", user=CUSTOMER)
        msg = InboundMessage(source="slack", team="T0TEAM", channel=SUPPORT, user=CUSTOMER, text=question.text,
                             ts=question.ts, event_id="Ev0LOST")
        # Slack takes the post but its answer comes after the client gave up.
        fake_slack.delay("chat.postMessage", 1.0)
        first = await runtime.pipeline.handle(msg)
        assert first.outcome == "failed"
        await fake_slack.wait_for("chat.postMessage", successful=True)
        fake_slack.clear_faults()

        clock.advance(10)
        await runtime.dispatcher.recover()
        await runtime.dispatcher.wait_idle()
        assert len(fake_slack.calls_to("chat.postMessage")) == 1
        found = await chat.find_answer(msg)
        assert found is not None
        thread = [m for m in fake_slack.messages_in(SUPPORT, question.ts) if m.ts != question.ts]
        assert [m.ts for m in thread] == [found.ts]
        async with runtime.db.sessions() as session:
            [row] = (await session.execute(select(InboundEvent))).scalars().all()
        assert (row.status, row.reply_ts, row.attempts) == ("done", found.ts, 2)
    finally:
        await runtime.close()


async def test_slack_failures_surface_as_transport_errors(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config,
) -> None:
    chat = await open_slack_chat(slack_settings(fake_slack, sqlite_url), slack_config)
    try:
        fake_slack.mark_channel_missing("C0GONE")
        with pytest.raises(TransportError, match="channel_not_found") as missing:
            await chat.post_notice("C0GONE", "1.1", Notice("hello"))
        assert missing.value.code == "channel_not_found"
        fake_slack.fail_next("chat.update", status=503, count=3)
        page = Page(escalation_id=1, round=1, level=1, state=EscalationState.PAGED, audience=Audience(("U0A1",)),
                    requester=CUSTOMER, channel=SUPPORT, thread_ts="1.1", permalink=None, message="help",
                    route="billing", confidence=0.9, trigger="route", reason="routed")
        with pytest.raises(TransportError, match="503|internal_error") as failed:
            await chat.update_page(PostedMessage(SUPPORT, "1.2"), page)
        assert failed.value.code in ("http_503", "internal_error")
        # Idempotent calls were retried, boundedly: 1 attempt + 2 retries.
        assert len(fake_slack.calls_to("chat.update")) == 3
    finally:
        await chat.close()


async def test_a_redelivery_after_a_restart_gets_no_second_reply(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config,
) -> None:
    message = fake_slack.seed_message(SUPPORT, "the app crashes every time I upload a file", user=CUSTOMER)
    event = sp.message_event(SUPPORT, CUSTOMER, message.text, message.ts)
    async with running_bot(fake_slack, sqlite_url, slack_config, instance_id="before") as first:
        await first.send_event(event, event_id="Ev0RESTART")
        await fake_slack.wait_for("chat.postMessage", successful=True)
        await first.settle()
    async with running_bot(fake_slack, sqlite_url, slack_config, instance_id="after") as second:
        status, _ = await second.send_event(event, event_id="Ev0RESTART", retry_num=1)
        assert status == 200
        await second.settle()
        assert len(second.bot_replies(SUPPORT, message.ts)) == 1
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_a_message_acked_just_before_a_crash_is_answered_by_the_next_start(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config,
) -> None:
    message = fake_slack.seed_message(SUPPORT, "how do I reset my password?", user=CUSTOMER)
    event = sp.message_event(SUPPORT, CUSTOMER, message.text, message.ts)
    async with running_bot(fake_slack, sqlite_url, slack_config, instance_id="crashing") as first:
        await first.runtime.dispatcher.drain(0)  # the worker side is gone; the web side still acks
        status, _ = await first.send_event(event)
        assert status == 200
        [row] = await first.inbox()
        assert row.status == "pending"
    assert fake_slack.calls_to("chat.postMessage") == []

    async with running_bot(fake_slack, sqlite_url, slack_config, instance_id="recovering") as second:
        await fake_slack.wait_for("chat.postMessage", successful=True)  # start-up recovery picked it up
        await second.send_event(event, retry_num=1)
        await second.settle()
        assert await second.runtime.dispatcher.recover() == 0
        assert len(second.bot_replies(SUPPORT, message.ts)) == 1
        [row] = await second.inbox()
        assert row.status == "done" and row.lease_owner == "recovering"
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


@pytest.mark.postgres
async def test_two_replicas_sharing_postgres_answer_a_message_once(
    fake_slack: FakeSlackAPI, pg_url: str, slack_config: Config,
) -> None:
    message = fake_slack.seed_message(SUPPORT, "<@U0BOT> the app crashes every time I upload a file",
                                      user=CUSTOMER)
    as_message = sp.message_event(SUPPORT, CUSTOMER, message.text, message.ts)
    as_mention = sp.app_mention_event(SUPPORT, CUSTOMER, message.text, message.ts)
    async with running_bot(fake_slack, pg_url, slack_config, instance_id="replica-a") as a, \
            running_bot(fake_slack, pg_url, slack_config, instance_id="replica-b") as b:
        results = await asyncio.gather(
            a.send_event(as_message, event_id="Ev0PG1"), b.send_event(as_message, event_id="Ev0PG1"),
            b.send_event(as_mention, event_id="Ev0PG2"), a.send_event(as_message, event_id="Ev0PG1", retry_num=1),
        )
        assert [status for status, _ in results] == [200, 200, 200, 200]
        await fake_slack.wait_for("chat.postMessage", successful=True)
        await a.settle()
        await b.settle()
        assert len(a.bot_replies(SUPPORT, message.ts)) == 1
        [row] = await a.inbox()
        assert row.duplicates == 3 and row.status == "done"
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_a_token_slack_refuses_stops_the_start_with_a_clear_message(
    sqlite_url: str, slack_config: Config,
) -> None:
    async with FakeSlackAPI(valid_tokens={"xoxb-the-real-one"}) as fake:
        with pytest.raises(SlackSetupError, match="Slack refused SLACK_BOT_TOKEN .*invalid_auth"):
            await start_server(slack_settings(fake, sqlite_url), slack_config, host="127.0.0.1", port=0)
        assert [call.method for call in fake.calls] == ["auth.test"]
