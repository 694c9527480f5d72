"""Escalations over the real Slack transport, against the fake Slack Web API (real HTTP, real wire format)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog.testing

from bot.clock import ManualClock
from bot.config import Config, load_config
from bot.escalation import ACK_ACTION, RESOLVE_ACTION
from bot.runtime import Runtime, build_runtime
from bot.slack.transport import open_slack_chat
from tests.conftest import slack_settings
from tests.escalation.conftest import (
    BASE_TOML,
    CUSTOMER,
    PAGES,
    SUPPORT,
    block_text,
    buttons,
    customer_message,
    escalation,
    escalation_config,
)
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage

SlackFactory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def slack_runtime(
    fake_slack: FakeSlackAPI, sqlite_url: str, clock: ManualClock
) -> AsyncIterator[SlackFactory]:
    built: list[Runtime] = []

    async def make(config: Config, *, timeout_s: float = 10.0) -> Runtime:
        settings = slack_settings(fake_slack, sqlite_url)
        chat = await open_slack_chat(settings, config, timeout_s=timeout_s)
        runtime = await build_runtime(settings, config, chat=chat, clock=clock, instance_id="slack-esc")
        built.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in built:
            await runtime.close()


def slack_buttons(message: SlackMessage) -> dict[str, str]:
    return buttons(message.blocks or [])


def pages(fake: FakeSlackAPI, channel: str) -> list[SlackMessage]:
    return [m for m in fake.messages_in(channel) if m.bot_id == fake.bot_id and m.blocks]


async def test_dm_pages_reach_every_on_call_person_and_an_ack_updates_them_all(
    fake_slack: FakeSlackAPI, slack_runtime: SlackFactory,
) -> None:
    runtime = await slack_runtime(escalation_config(BASE_TOML.replace('channel = "C0ESC"', "")))
    msg = customer_message()
    fake_slack.seed_message(SUPPORT, msg.text, user=CUSTOMER, ts=msg.ts)
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None

    opened = sorted(call.params["users"] for call in fake_slack.successful_calls_to("conversations.open"))
    assert opened == ["U0ALICE", "U0BOB"]
    [alice_page], [bob_page] = pages(fake_slack, "D0ALICE"), pages(fake_slack, "D0BOB")
    for page in (alice_page, bob_page):
        shown = block_text(page.blocks or [])
        assert f"<https://fake.slack.com/archives/{SUPPORT}/p{msg.ts.replace('.', '')}|Open the thread>" in shown
        assert f"<@{CUSTOMER}> in <#{SUPPORT}>" in shown and "I will sue you" in shown
        assert slack_buttons(page) == {ACK_ACTION: str(escalation_id), RESOLVE_ACTION: str(escalation_id)}
    [notice] = [m for m in fake_slack.messages_in(SUPPORT, msg.ts) if m.bot_id == fake_slack.bot_id]
    assert "paged a person" in notice.text

    assert await runtime.escalations.acknowledge(escalation_id, "U0BOB") == "done"
    updated = {call.params["channel"] for call in fake_slack.successful_calls_to("chat.update")}
    assert updated == {"D0ALICE", "D0BOB"}
    for channel in ("D0ALICE", "D0BOB"):
        [page] = pages(fake_slack, channel)
        assert slack_buttons(page) == {RESOLVE_ACTION: str(escalation_id)}
        assert "Acknowledged by <@U0BOB>" in block_text(page.blocks or [])
    thread = [m.text for m in fake_slack.messages_in(SUPPORT, msg.ts) if m.bot_id == fake_slack.bot_id]
    assert thread[-1] == "<@U0BOB> from the support team is on it and will reply here."


async def test_slack_down_leaves_the_page_unpaged_and_the_sweeper_posts_it_once(
    fake_slack: FakeSlackAPI, slack_runtime: SlackFactory, clock: ManualClock,
) -> None:
    runtime = await slack_runtime(escalation_config())
    msg = customer_message()
    fake_slack.fail_next("chat.postMessage", error="internal_error")  # the page; the notice gets through
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "escalated" and pages(fake_slack, PAGES) == []
    assert (await escalation(runtime, result.escalation_id or 0)).paged_rounds == 0

    clock.advance(30)
    assert await runtime.escalations.sweep() == 1
    clock.advance(30)
    assert await runtime.escalations.sweep() == 0
    [page] = pages(fake_slack, PAGES)
    assert (await escalation(runtime, result.escalation_id or 0)).page_ts == page.ts


async def test_user_group_members_may_press_and_the_lookup_is_cached(
    fake_slack: FakeSlackAPI, slack_runtime: SlackFactory,
) -> None:
    config = escalation_config(BASE_TOML.replace('oncall = ["U0ALICE", "U0BOB"]', 'usergroup = "S0ONCALL"'))
    runtime = await slack_runtime(config)
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    [page] = pages(fake_slack, PAGES)
    assert page.text.startswith("<!subteam^S0ONCALL> Escalation #")

    assert await runtime.escalations.acknowledge(escalation_id, "U0OUTSIDER") == "refused"
    assert await runtime.escalations.acknowledge(escalation_id, "U0GROUP1") == "done"
    assert await runtime.escalations.resolve(escalation_id, "U0GROUP2") == "done"
    assert runtime.escalations.roster.may_act("U0GROUP2")  # known without a call, e.g. for staff takeovers
    assert len(fake_slack.successful_calls_to("usergroups.users.list")) == 1
    assert all(call.params["usergroup"] == "S0ONCALL" for call in fake_slack.calls_to("usergroups.users.list"))


async def test_a_page_posted_but_unconfirmed_is_found_in_the_channel_not_posted_again(
    fake_slack: FakeSlackAPI, slack_runtime: SlackFactory, clock: ManualClock,
) -> None:
    runtime = await slack_runtime(escalation_config(), timeout_s=1.0)
    msg = customer_message("I need a person now")
    assert (await runtime.pipeline.handle(msg)).outcome == "replied"
    fake_slack.delay("chat.postMessage", 1.5)  # Slack stores it, but the answer comes after our timeout
    assert await runtime.escalations.request_human(msg.team, SUPPORT, msg.ts, CUSTOMER) == "done"
    fake_slack.clear_faults()
    await fake_slack.wait_for("chat.postMessage", count=3, successful=True)  # reply, page, notice
    assert len(pages(fake_slack, PAGES)) == 1

    clock.advance(30)
    assert await runtime.escalations.sweep() == 1
    [page] = pages(fake_slack, PAGES)
    assert len(fake_slack.successful_calls_to("conversations.history")) == 1
    stored = await escalation(runtime, int(slack_buttons(page)[ACK_ACTION]))
    assert stored.page_ts == page.ts and stored.paged_rounds == 1


async def test_buttons_pressed_in_slack_end_to_end(
    fake_slack: FakeSlackAPI, sqlite_url: str, clock: ManualClock,
) -> None:
    """Signed block_actions through the HTTP app of `supportbot serve` (the Slack adapter maps them)."""
    from tests.slack.conftest import running_bot

    async with running_bot(fake_slack, sqlite_url, escalation_config(), clock=clock) as bot:
        posted = await bot.post(SUPPORT, CUSTOMER, "I will sue you over this")
        await bot.settle()
        [page] = pages(fake_slack, PAGES)
        escalation_id = slack_buttons(page)[ACK_ACTION]

        async def click(action: str, user: str) -> Any:
            status = await bot.click(action, escalation_id, user=user, channel=PAGES, message_ts=page.ts)
            await bot.settle()
            return status

        assert await click(ACK_ACTION, "U0RANDOM") == 200
        [refusal] = fake_slack.ephemeral_messages()
        assert refusal.visible_to == "U0RANDOM" and fake_slack.calls_to("chat.update") == []

        assert await click(ACK_ACTION, "U0ALICE") == 200
        assert await click(ACK_ACTION, "U0ALICE") == 200  # a double click
        [update] = fake_slack.successful_calls_to("chat.update")
        assert update.params["ts"] == page.ts
        assert slack_buttons(fake_slack.message(PAGES, page.ts)) == {RESOLVE_ACTION: escalation_id}
        thread = [m.text for m in bot.bot_replies(SUPPORT, posted.ts)]
        assert thread[-1] == "<@U0ALICE> from the support team is on it and will reply here."
        assert len(fake_slack.ephemeral_messages()) == 2  # the double click was told "already"

        assert await click(RESOLVE_ACTION, "U0STAFF") == 200
        assert slack_buttons(fake_slack.message(PAGES, page.ts)) == {}
        assert (await escalation(bot.runtime, int(escalation_id))).resolved_by == "U0STAFF"


async def test_a_dm_that_cannot_be_opened_does_not_hold_back_the_others(
    fake_slack: FakeSlackAPI, slack_runtime: SlackFactory, clock: ManualClock,
) -> None:
    runtime = await slack_runtime(escalation_config(BASE_TOML.replace('channel = "C0ESC"', "")))
    fake_slack.mark_user_missing("U0BOB")  # deactivated, say
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    assert len(pages(fake_slack, "D0ALICE")) == 1
    stored = await escalation(runtime, escalation_id)
    assert stored.paged_rounds == 1  # Alice has it: re-pages keep their pace
    clock.advance(600)
    assert await runtime.escalations.sweep() == 1 and len(pages(fake_slack, "D0ALICE")) == 2


async def test_slack_mode_with_nobody_to_page_says_so_loudly_at_start(slack_runtime: SlackFactory) -> None:
    with structlog.testing.capture_logs() as logs:
        runtime = await slack_runtime(load_config())  # the built-in config names nobody
    [warning] = [entry for entry in logs if entry["event"] == "escalation_nobody_to_page"]
    assert warning["log_level"] == "error" and "nobody can be paged" in warning["problem"]
    assert runtime.escalations.local_oncall_user is None  # no stand-in outside local mode
