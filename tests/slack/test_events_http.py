"""Slack events over HTTP at POST /slack/events: who gets an answer, where, and exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bot.clock import ManualClock
from bot.config import Config
from bot.llm.base import LLMRequest, LLMResponse
from bot.llm.offline import OfflineLLM
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import (
    COLLEAGUE,
    CUSTOMER,
    OTHER,
    STAFF,
    SUPPORT,
    SlackBotHarness,
    buttons,
    reply_text,
    running_bot,
)

pytestmark = pytest.mark.timeout(30)


async def test_top_level_message_in_a_support_channel_is_answered_once_in_its_thread(bot: SlackBotHarness) -> None:
    posted = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    assert posted.statuses == [200]
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()

    [reply] = bot.bot_replies(SUPPORT, posted.ts)
    assert reply.thread_ts == posted.ts
    assert "technical support engineer" in reply_text(reply)
    [button] = buttons(reply)
    assert (button["action_id"], button["value"]) == ("escalation_request", f"T0TEAM:{SUPPORT}:{posted.ts}")
    assert reply.metadata == {"event_type": "supportbot_reply",
                              "event_payload": {"dedupe_key": f"T0TEAM:{SUPPORT}:{posted.ts}"}}
    # 👀 while working, gone once answered
    assert [c.params["name"] for c in bot.fake.successful_calls_to("reactions.add")] == ["eyes"]
    assert [c.params["name"] for c in bot.fake.successful_calls_to("reactions.remove")] == ["eyes"]
    assert bot.fake.message(SUPPORT, posted.ts).reactions == {}


async def test_a_direct_message_is_answered_in_its_thread(bot: SlackBotHarness) -> None:
    posted = await bot.post("D0ALICE", CUSTOMER, "how much does the team plan cost?", channel_type="im")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    [reply] = bot.bot_replies("D0ALICE", posted.ts)
    assert "sales" in reply_text(reply).lower()


async def test_a_mention_elsewhere_arrives_twice_and_is_answered_once_without_the_mention(
    bot: SlackBotHarness,
) -> None:
    posted = await bot.post(OTHER, CUSTOMER, "<@U0BOT> our CSV export fails with error 42", mention=True)
    assert posted.statuses == [200, 200]
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()

    [reply] = bot.bot_replies(OTHER, posted.ts)
    assert "our CSV export fails with error 42" in reply_text(reply)
    assert "U0BOT" not in reply_text(reply)
    assert len(bot.posts_in_thread(OTHER, posted.ts)) == 1
    [row] = await bot.inbox()
    assert row.duplicates == 1 and row.status == "done"


async def test_messages_elsewhere_without_a_mention_are_left_alone(bot: SlackBotHarness) -> None:
    await bot.post(OTHER, CUSTOMER, "anyone up for lunch?")
    root = await bot.post(SUPPORT, COLLEAGUE, "how do I export my data to CSV?")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    bot.fake.reset()
    # A thread the bot never took part in: its replies are not for the bot.
    not_ours = bot.fake.seed_message(SUPPORT, "an old thread from before the bot", user=COLLEAGUE)
    await bot.post(SUPPORT, CUSTOMER, "me too", thread_ts=not_ours.ts)
    await bot.settle()
    assert bot.fake.calls_to("chat.postMessage") == []
    assert [row.dedupe_key for row in await bot.inbox()] == [f"T0TEAM:{SUPPORT}:{root.ts}"]


async def test_a_follow_up_in_the_bots_thread_needs_no_mention(bot: SlackBotHarness) -> None:
    first = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.post(SUPPORT, CUSTOMER, "it is version 4.2 on Windows, still crashing", thread_ts=first.ts)
    await bot.fake.wait_for("chat.postMessage", 2, successful=True)
    await bot.settle()
    replies = bot.bot_replies(SUPPORT, first.ts)
    assert len(replies) == 2 and "version 4.2" in reply_text(replies[1])


async def test_bots_edits_deletes_and_joins_get_no_answer(bot: SlackBotHarness) -> None:
    original = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    [own_reply] = bot.bot_replies(SUPPORT, original.ts)
    bot.fake.reset()

    events = [
        sp.message_event(SUPPORT, sp.BOT_USER_ID, own_reply.text, own_reply.ts, thread_ts=original.ts,
                         bot_id=sp.BOT_ID),
        sp.bot_message_event(SUPPORT, "deploy finished, see <!here>"),
        sp.message_changed_event(SUPPORT, original.ts, "the app crashes on upload (edited)", user=CUSTOMER,
                                 previous_text="the app crashes every time I upload a file"),
        sp.message_deleted_event(SUPPORT, original.ts, user=CUSTOMER, previous_text="the app crashes"),
        sp.channel_join_event(SUPPORT, COLLEAGUE),
    ]
    for event in events:
        status, _ = await bot.send_event(event)
        assert status == 200
    await bot.settle()
    assert bot.fake.calls_to("chat.postMessage") == []
    assert len(await bot.inbox()) == 1


async def test_slack_retries_and_duplicate_event_ids_never_give_a_second_reply(bot: SlackBotHarness) -> None:
    message = bot.fake.seed_message(SUPPORT, "how do I reset my password?", user=CUSTOMER)
    event = sp.message_event(SUPPORT, CUSTOMER, message.text, message.ts)
    sends = [
        bot.send_event(event, event_id="Ev0RETRY01"),
        bot.send_event(event, event_id="Ev0RETRY01", retry_num=1),
        bot.send_event(event, event_id="Ev0RETRY01", retry_num=2),
        bot.send_event(event, event_id="Ev0OTHER01"),  # same message announced under another event id
    ]
    statuses = [status for status, _ in await asyncio.gather(*sends)]
    assert statuses == [200, 200, 200, 200]
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    assert len(bot.posts_in_thread(SUPPORT, message.ts)) == 1
    assert len(bot.fake.calls_to("chat.postMessage")) == 1
    assert "supportbot_duplicate_events_total 3.0" in await bot.metrics()


async def test_bad_or_stale_signatures_are_refused_and_nothing_is_processed(bot: SlackBotHarness) -> None:
    message = bot.fake.seed_message(SUPPORT, "how do I reset my password?", user=CUSTOMER)
    event = sp.message_event(SUPPORT, CUSTOMER, message.text, message.ts)
    assert (await bot.send_event(event, valid_signature=False))[0] == 401
    assert (await bot.send_event(event, timestamp=int(time.time()) - 600))[0] == 401
    body, headers = sp.encode_event_request(sp.event_callback(event))
    assert (await bot.send(body, {"Content-Type": "application/json"}))[0] == 401  # unsigned
    assert (await bot.click("escalation_ack", "1", user=STAFF, channel=SUPPORT, message_ts=message.ts,
                            valid_signature=False)) == 401
    await bot.settle()
    assert bot.fake.calls == [] or {c.method for c in bot.fake.calls} == {"auth.test"}
    assert await bot.inbox() == []


async def test_url_verification_is_answered_with_the_challenge(bot: SlackBotHarness) -> None:
    status, text = await bot.send_body(sp.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"))
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text
    assert (await bot.send_body(sp.url_verification("x"), valid_signature=False))[0] == 401
    # Behind a reverse proxy the Host is the public name: Slack's endpoint is not the dashboard's gate.
    body, headers = sp.encode_event_request(sp.url_verification("behind-a-proxy"))
    status, text = await bot.send(body, {**headers, "Host": "supportbot.example.com"})
    assert (status, text) == (200, '{"challenge": "behind-a-proxy"}')


async def test_a_staff_reply_takes_the_thread_over_and_the_bot_stays_quiet(bot: SlackBotHarness) -> None:
    first = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    await bot.post(SUPPORT, STAFF, "Hi Alice, I'm looking at your account now.", thread_ts=first.ts)
    await bot.post(SUPPORT, CUSTOMER, "thank you, it crashes with error 0x80", thread_ts=first.ts)
    await bot.settle()
    assert len(bot.bot_replies(SUPPORT, first.ts)) == 1
    assert len(bot.fake.calls_to("chat.postMessage")) == 1
    states = {row.dedupe_key: row.outcome for row in await bot.inbox()}
    assert list(states.values()) == ["replied", "quiet"]


async def test_text_from_users_cannot_ping_the_channel_through_the_bot(bot: SlackBotHarness) -> None:
    posted = await bot.post(SUPPORT, CUSTOMER,
                            "<!channel> <!here> <!subteam^S0SUPPORT|@support> the app crashes @everyone @here")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    [reply] = bot.bot_replies(SUPPORT, posted.ts)
    readable = reply_text(reply)
    assert "the app crashes" in readable
    for ping in ("<!channel>", "<!here>", "<!subteam", "@everyone", "@here", "@channel"):
        assert ping not in readable, ping


async def test_an_escalating_message_pages_on_call_without_echoing_pings(bot: SlackBotHarness) -> None:
    posted = await bot.post(SUPPORT, CUSTOMER, "<!channel> this is a joke, I will sue you")
    await bot.fake.wait_for("chat.postMessage", 2, successful=True)
    await bot.settle()
    [notice] = bot.bot_replies(SUPPORT, posted.ts)
    assert buttons(notice) == []  # a person is already coming: no "Get a human" button
    [page] = bot.fake.messages_in("C0PAGES")
    assert "<@U0ONCALL>" in reply_text(page) and "<!channel>" not in reply_text(page)


async def test_a_mention_mid_thread_reads_the_thread_it_joins(bot: SlackBotHarness) -> None:
    root = bot.fake.seed_message(OTHER, "Our nightly export has failed since Tuesday", user=COLLEAGUE)
    bot.fake.seed_message(OTHER, "Same here, error 42 every time", user=CUSTOMER, thread_ts=root.ts)
    posted = await bot.post(OTHER, CUSTOMER, "<@U0BOT> any idea?", thread_ts=root.ts, mention=True)
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    [read] = bot.fake.successful_calls_to("conversations.replies")
    assert read.params["ts"] == root.ts
    assert len(bot.bot_replies(OTHER, root.ts)) == 1
    assert bot.posts_in_thread(OTHER, root.ts)[0].params["thread_ts"] == root.ts != posted.ts


class GatedLLM:
    """The offline provider, held until the test opens the gate: the LLM 'takes' as long as the test likes."""

    provider = "gated"

    def __init__(self, config: Config) -> None:
        self.gate = asyncio.Event()
        self._inner = OfflineLLM(config)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        await self.gate.wait()
        return await self._inner.complete(request)


@pytest.fixture
async def gated(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config
) -> AsyncIterator[tuple[SlackBotHarness, GatedLLM]]:
    llm = GatedLLM(slack_config)
    async with running_bot(fake_slack, sqlite_url, slack_config, llm=llm, clock=ManualClock()) as harness:
        try:
            yield harness, llm
        finally:
            llm.gate.set()


async def test_the_inbox_row_is_written_before_the_ack_and_the_work_runs_after_it(
    gated: tuple[SlackBotHarness, GatedLLM],
) -> None:
    bot, llm = gated
    posted = await bot.post(SUPPORT, CUSTOMER, "my invoice shows the wrong VAT number")
    # The ack is back while the model has not answered: the message is already in the inbox.
    assert posted.statuses == [200]
    [row] = await bot.inbox()
    assert row.dedupe_key == f"T0TEAM:{SUPPORT}:{posted.ts}" and row.reply_ts is None
    assert bot.fake.calls_to("chat.postMessage") == []
    llm.gate.set()
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    assert len(bot.bot_replies(SUPPORT, posted.ts)) == 1
