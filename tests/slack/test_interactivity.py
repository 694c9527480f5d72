"""Buttons: on-call acknowledges and resolves pages, strangers are refused, users ask for a person."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage.models import Escalation
from tests.fakes import slack_payloads as sp
from tests.slack.conftest import CUSTOMER, ONCALL, PAGES, STRANGER, SUPPORT, SlackBotHarness, buttons, reply_text

pytestmark = pytest.mark.timeout(30)


async def _escalated(bot: SlackBotHarness) -> tuple[str, str, str]:
    """A customer threatens legal action: (their message ts, the page ts, the escalation id)."""
    posted = await bot.post(SUPPORT, CUSTOMER, "This is unacceptable, I will sue you")
    await bot.fake.wait_for("chat.postMessage", 2, successful=True)
    await bot.settle()
    [page] = bot.fake.messages_in(PAGES)
    [acknowledge, _resolve] = buttons(page)
    assert acknowledge["action_id"] == "escalation_ack"
    return posted.ts, page.ts, acknowledge["value"]


async def _state(bot: SlackBotHarness) -> str:
    async with bot.runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    return escalation.state


async def test_on_call_acknowledges_the_page_and_the_customer_is_told(bot: SlackBotHarness) -> None:
    customer_ts, page_ts, escalation_id = await _escalated(bot)
    assert await bot.click("escalation_ack", escalation_id, user=ONCALL, channel=PAGES, message_ts=page_ts) == 200
    await bot.fake.wait_for("chat.update", successful=True)
    await bot.settle()

    [update] = bot.fake.successful_calls_to("chat.update")
    assert (update.params["channel"], update.params["ts"]) == (PAGES, page_ts)
    page = bot.fake.message(PAGES, page_ts)
    assert [b["action_id"] for b in buttons(page)] == ["escalation_resolve"]
    [_notice, note] = bot.bot_replies(SUPPORT, customer_ts)
    assert note.text.startswith(f"<@{ONCALL}> from the support team is on it")
    assert await _state(bot) == "acknowledged"

    # A second click changes nothing and says so, to the presser only.
    await bot.click("escalation_ack", escalation_id, user=ONCALL, channel=PAGES, message_ts=page_ts)
    await bot.settle()
    [already] = bot.fake.ephemeral_messages(user=ONCALL)
    assert "already" in already.text
    assert len(bot.fake.successful_calls_to("chat.update")) == 1

    await bot.click("escalation_resolve", escalation_id, user=ONCALL, channel=PAGES, message_ts=page_ts)
    await bot.settle()
    assert await _state(bot) == "resolved" and buttons(bot.fake.message(PAGES, page_ts)) == []


async def test_a_stranger_pressing_the_page_buttons_is_refused_and_nothing_changes(bot: SlackBotHarness) -> None:
    customer_ts, page_ts, escalation_id = await _escalated(bot)
    before = bot.fake.message(PAGES, page_ts)
    for action in ("escalation_ack", "escalation_resolve"):
        assert await bot.click(action, escalation_id, user=STRANGER, channel=PAGES, message_ts=page_ts) == 200
    await bot.settle()

    refusals = bot.fake.ephemeral_messages(channel=PAGES, user=STRANGER)
    assert len(refusals) == 2 and all("Only on-call" in r.text for r in refusals)
    assert bot.fake.calls_to("chat.update") == []
    assert bot.fake.message(PAGES, page_ts) == before
    assert len(bot.bot_replies(SUPPORT, customer_ts)) == 1
    assert await _state(bot) == "paged"


async def test_get_a_human_pages_on_call_once_and_the_bot_steps_back(bot: SlackBotHarness) -> None:
    posted = await bot.post(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    [reply] = bot.bot_replies(SUPPORT, posted.ts)
    [button] = buttons(reply)

    for _ in range(2):
        status = await bot.click(button["action_id"], button["value"], user=CUSTOMER, channel=SUPPORT,
                                 message_ts=reply.ts, thread_ts=posted.ts)
        assert status == 200
        await bot.settle()

    [page] = bot.fake.messages_in(PAGES)
    assert f"<@{CUSTOMER}>" in reply_text(page) and "the app crashes" in reply_text(page)
    [_reply, note] = bot.bot_replies(SUPPORT, posted.ts)
    assert "asked a person" in note.text
    [already] = bot.fake.ephemeral_messages(user=CUSTOMER)
    assert "already been asked" in already.text
    # The bot now leaves the thread to the humans.
    await bot.post(SUPPORT, CUSTOMER, "hello? still crashing", thread_ts=posted.ts)
    await bot.settle()
    assert len(bot.bot_replies(SUPPORT, posted.ts)) == 2


async def test_an_assistant_thread_gets_suggested_prompts_and_a_status_while_working(
    bot: SlackBotHarness,
) -> None:
    root = bot.fake.seed_message("D0ALICE", "", user=sp.BOT_USER_ID, bot_id=sp.BOT_ID,
                                 subtype="assistant_app_thread")
    status, _ = await bot.send_event(sp.assistant_thread_started_event(CUSTOMER, "D0ALICE", root.ts))
    assert status == 200
    await bot.fake.wait_for("assistant.threads.setSuggestedPrompts", successful=True)
    thread = bot.fake.assistant_thread("D0ALICE", root.ts)
    assert thread.prompts and all({"title", "message"} <= set(p) for p in thread.prompts)

    posted = await bot.post("D0ALICE", CUSTOMER, "I was charged twice this month", thread_ts=root.ts,
                            channel_type="im")
    await bot.fake.wait_for("chat.postMessage", successful=True)
    await bot.settle()
    assert thread.statuses == ["is looking into it…", ""]
    assert bot.fake.calls_to("reactions.add") == []
    [reply] = bot.bot_replies("D0ALICE", root.ts)
    assert reply.thread_ts == root.ts and posted.statuses == [200]
