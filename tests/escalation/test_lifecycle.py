"""Escalations through the pipeline and the service on the local chat: page, buttons, re-pages, expiry."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import load_config
from bot.domain import PostedMessage
from bot.errors import TransportError
from bot.escalation import ACK_ACTION, LOCAL_ONCALL_USER, RESOLVE_ACTION, EscalationRequest, Page
from bot.escalation.service import EXPIRED_NOTICE, REQUEST_NOTICE
from bot.local_chat import LOCAL_PAGE_CHANNEL, LocalChat
from bot.ports import Capabilities
from storage import repositories as repo
from storage.models import Escalation, EscalationPage
from tests.escalation.conftest import (
    BASE_TOML,
    CUSTOMER,
    PAGES,
    SUPPORT,
    Factory,
    block_text,
    buttons,
    customer_message,
    escalation,
    escalation_config,
    local_chat,
    only_escalation,
    pages_in,
    slack_blocks,
    slack_text,
    transitions,
)

REPAGE_TOML = """
[router]
mode = "rules"
[[router.rules]]
name = "legal-threat"
route = "escalate"
pattern = '(?i)\\bsue you\\b|\\blawyer\\b'
[bot]
staff = ["U0STAFF"]
[escalation]
oncall = ["U0ALICE", "U0BOB"]
usergroup = "S0ONCALL"
channel = "C0ESC"
fallback_channel = "C0FALLBACK"
ack_timeout_s = 600
repage_max = 1
expire_after_h = 1
"""


async def test_page_shows_who_what_route_reason_and_the_buttons(make_runtime: Factory) -> None:
    runtime = await make_runtime()
    msg = customer_message()
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "escalated" and result.route == "escalate" and result.decided_by == "rules"

    chat = local_chat(runtime)
    [page] = pages_in(chat, PAGES)
    shown = block_text(slack_blocks(page))
    assert slack_text(page).startswith("<@U0ALICE> <@U0BOB> Escalation #")  # the notification pings on-call
    assert "<@U0ALICE> <@U0BOB> a customer needs a person" in shown
    assert f"<@{CUSTOMER}> in <#{SUPPORT}>" in shown
    assert "escalate (confidence 0.95)" in shown and "an escalation rule matched" in shown
    assert "&gt;" not in shown.split("*Message*")[1][:3] and "I will sue you" in shown
    assert "rule 'legal-threat' matched" in shown
    assert f"Thread {msg.ts} in <#{SUPPORT}>" in shown  # the local chat has no permalinks
    escalation_id = str(result.escalation_id)
    assert buttons(slack_blocks(page)) == {ACK_ACTION: escalation_id, RESOLVE_ACTION: escalation_id}

    [notice] = chat.posts_in(SUPPORT, msg.ts)
    assert "paged a person" in notice.text
    follow_up = await runtime.pipeline.handle(customer_message("hello?? anyone", thread_ts=msg.ts))
    assert follow_up.outcome == "quiet" and len(chat.posts_in(SUPPORT, msg.ts)) == 1


async def test_voting_drafts_and_confidence_are_on_the_page(make_runtime: Factory, clock: ManualClock) -> None:
    runtime = await make_runtime()
    msg = customer_message("Can I get a refund for last month?")
    async with runtime.db.sessions.begin() as session:
        conversation = await repo.open_conversation(
            session, source="slack", team=msg.team, channel=msg.channel, thread_ts=msg.ts, user=msg.user,
            now=clock.now(), likely_new=True)
    escalation_id = await runtime.escalations.escalate(EscalationRequest(
        msg=msg, conversation_id=conversation.id, trigger="vote", reason="agreement 0.40 below 0.60",
        route="billing", confidence=0.55, drafts=("Yes, refunds take 5 days.", "No <!channel> refunds after 30 days.")))

    [page] = pages_in(local_chat(runtime), PAGES)
    shown = block_text(slack_blocks(page))
    assert "billing (confidence 0.55)" in shown and "voting: no confident answer" in shown
    assert "agreement 0.40 below 0.60" in shown
    assert "*Draft 1 (from voting)*\nYes, refunds take 5 days." in shown
    assert "&lt;!channel&gt;" in shown and "<!channel>" not in shown  # a draft cannot ping a channel
    assert buttons(slack_blocks(page))[ACK_ACTION] == str(escalation_id)


async def test_acknowledge_then_resolve_update_the_page_and_tell_the_thread(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    runtime = await make_runtime()
    msg = customer_message()
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    chat = local_chat(runtime)
    [page] = pages_in(chat, PAGES)

    clock.advance(90)
    assert await runtime.escalations.acknowledge(escalation_id, "U0ALICE") == "done"
    assert page.updated == 1 and buttons(slack_blocks(page)) == {RESOLVE_ACTION: str(escalation_id)}
    assert "Acknowledged by <@U0ALICE>" in block_text(slack_blocks(page))
    assert chat.posts_in(SUPPORT, msg.ts)[-1].text == "@U0ALICE from the support team is on it and will reply here."
    acked = await escalation(runtime, escalation_id)
    assert acked.state == "acknowledged" and acked.acknowledged_by == "U0ALICE"
    assert acked.acknowledged_at == clock.now() and acked.next_action_at is None

    # A double click, a colleague's late click and a replayed request change nothing.
    thread_posts = len(chat.posts_in(SUPPORT, msg.ts))
    assert await runtime.escalations.acknowledge(escalation_id, "U0ALICE") == "already"
    assert await runtime.escalations.acknowledge(str(escalation_id), "U0BOB") == "already"
    assert page.updated == 1 and len(chat.posts_in(SUPPORT, msg.ts)) == thread_posts

    assert await runtime.escalations.resolve(escalation_id, "U0STAFF") == "done"  # staff may press too
    assert buttons(slack_blocks(page)) == {} and "Resolved by <@U0STAFF>" in block_text(slack_blocks(page))
    assert chat.posts_in(SUPPORT, msg.ts)[-1].text == "@U0STAFF from the support team marked this as resolved."
    assert await runtime.escalations.resolve(escalation_id, "U0STAFF") == "already"
    assert await runtime.escalations.acknowledge(escalation_id, "U0BOB") == "already"
    assert page.updated == 2
    assert await transitions(runtime, escalation_id) == [
        (None, "paged", CUSTOMER), ("paged", "acknowledged", "U0ALICE"), ("acknowledged", "resolved", "U0STAFF")]

    # Resolved: the bot answers the thread again.
    again = await runtime.pipeline.handle(customer_message("one more question: how do I reset my password?",
                                                           thread_ts=msg.ts))
    assert again.outcome == "replied"


async def test_anyone_else_is_refused_and_nothing_changes(make_runtime: Factory) -> None:
    runtime = await make_runtime()
    msg = customer_message()
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    chat = local_chat(runtime)
    [page] = pages_in(chat, PAGES)
    before = len(chat.posts)

    for user in ("U0RANDOM", CUSTOMER, LOCAL_ONCALL_USER):  # the stand-in only exists with nobody configured
        assert await runtime.escalations.acknowledge(escalation_id, user) == "refused"
        assert await runtime.escalations.resolve(escalation_id, user) == "refused"
    assert page.updated == 0 and len(chat.posts) == before
    unchanged = await escalation(runtime, escalation_id)
    assert unchanged.state == "paged" and unchanged.acknowledged_by is None
    assert await transitions(runtime, escalation_id) == [(None, "paged", CUSTOMER)]

    assert await runtime.escalations.acknowledge(987654, "U0ALICE") == "not_found"
    assert await runtime.escalations.acknowledge("not-a-number", "U0ALICE") == "not_found"


async def test_repages_after_the_timeout_then_the_whole_group_then_expires(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    runtime = await make_runtime(escalation_config(REPAGE_TOML))
    msg = customer_message()
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    chat, sweep = local_chat(runtime), runtime.escalations.sweep
    assert len(pages_in(chat, PAGES)) == 1

    clock.advance(599)
    assert await sweep() == 0 and len(pages_in(chat, PAGES)) == 1  # nothing before ack_timeout_s

    clock.advance(1)
    assert await sweep() == 1
    first, repage = pages_in(chat, PAGES)
    assert slack_text(repage).startswith("<@U0ALICE> <@U0BOB> ")
    assert "Re-page 1: nobody acknowledged for 10 min" in block_text(slack_blocks(repage))
    assert await sweep() == 0  # once per timeout, however often the sweeper runs

    clock.advance(600)  # repage_max (1) re-pages spent: level 2, the fallback channel and the whole group
    assert await sweep() == 1
    [level_two] = pages_in(chat, "C0FALLBACK")
    assert slack_text(level_two).startswith("<!subteam^S0ONCALL> <@U0ALICE> <@U0BOB> ")
    assert "*level 2* (whole group)" in block_text(slack_blocks(level_two))
    assert buttons(slack_blocks(level_two)) == {ACK_ACTION: str(escalation_id), RESOLVE_ACTION: str(escalation_id)}

    clock.advance(600)
    assert await sweep() == 1 and len(pages_in(chat, "C0FALLBACK")) == 2
    clock.advance(600)
    assert await sweep() == 0  # level 2 got repage_max re-pages too; now it waits for an answer
    stored = await escalation(runtime, escalation_id)
    assert (stored.state, stored.level, stored.repage_count) == ("paged", 2, 3)

    clock.advance(1200)  # expire_after_h = 1
    assert await sweep() == 1
    expired = await escalation(runtime, escalation_id)
    assert expired.state == "expired" and expired.next_action_at is None
    every_page = pages_in(chat, PAGES) + pages_in(chat, "C0FALLBACK")
    assert len(every_page) == 4
    assert all(page.updated == 1 and buttons(slack_blocks(page)) == {} for page in every_page)
    assert "Expired: nobody acknowledged in time" in block_text(slack_blocks(every_page[0]))
    assert chat.posts_in(SUPPORT, msg.ts)[-1].notice == EXPIRED_NOTICE
    assert await transitions(runtime, escalation_id) == [(None, "paged", CUSTOMER), ("paged", "expired", None)]
    # Nobody came, so the bot does not leave the customer in silence.
    later = await runtime.pipeline.handle(customer_message("how do I reset my password?", thread_ts=msg.ts))
    assert later.outcome == "replied"


async def test_acknowledging_stops_repages_and_updates_every_page(make_runtime: Factory, clock: ManualClock) -> None:
    runtime = await make_runtime()
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    chat = local_chat(runtime)
    clock.advance(600)
    assert await runtime.escalations.sweep() == 1
    pages = pages_in(chat, PAGES)
    assert len(pages) == 2

    assert await runtime.escalations.acknowledge(escalation_id, "U0BOB") == "done"
    assert all(page.updated == 1 and buttons(slack_blocks(page)) == {RESOLVE_ACTION: str(escalation_id)}
               for page in pages)
    for _ in range(5):
        clock.advance(600)
        assert await runtime.escalations.sweep() == 0
    assert len(pages_in(chat, PAGES)) == 2


async def test_a_staff_reply_in_the_thread_acknowledges_and_stops_repages(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    runtime = await make_runtime()
    msg = customer_message()
    escalation_id = (await runtime.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    await runtime.pipeline.record_staff_message(team=msg.team, channel=msg.channel, thread_ts=msg.ts,
                                                user="U0STAFF", text="Hi, I'm looking at it now", ts="1700000200.0")
    chat = local_chat(runtime)
    thread_posts = len(chat.posts_in(SUPPORT, msg.ts))

    clock.advance(600)
    await runtime.escalations.sweep()
    [page] = pages_in(chat, PAGES)  # no re-page
    assert "Acknowledged by <@U0STAFF>" in block_text(slack_blocks(page))
    assert len(chat.posts_in(SUPPORT, msg.ts)) == thread_posts  # the staff member already said hello
    assert (await escalation(runtime, escalation_id)).acknowledged_by == "U0STAFF"


async def test_a_new_instance_on_the_same_database_repages_after_a_restart(
    make_runtime: Factory, clock: ManualClock, database_url: str,
) -> None:
    before = await make_runtime(database_url=database_url, instance_id="before-restart")
    escalation_id = (await before.pipeline.handle(customer_message())).escalation_id
    await before.close()

    after = await make_runtime(database_url=database_url, instance_id="after-restart")
    clock.advance(600)
    assert await after.escalations.sweep() == 1
    [repage] = pages_in(local_chat(after), PAGES)
    assert "Re-page 1" in block_text(slack_blocks(repage))
    assert (await escalation(after, escalation_id or 0)).repage_count == 1


async def test_two_replicas_sweeping_at_once_repage_each_escalation_exactly_once(
    make_runtime: Factory, clock: ManualClock, database_url: str,
) -> None:
    first = await make_runtime(database_url=database_url, instance_id="replica-1")
    second = await make_runtime(database_url=database_url, instance_id="replica-2")
    ids = [(await first.pipeline.handle(customer_message())).escalation_id for _ in range(8)]
    assert len(set(ids)) == 8 and len(pages_in(local_chat(first), PAGES)) == 8

    clock.advance(600)
    for _ in range(3):
        await asyncio.gather(first.escalations.sweep(), second.escalations.sweep())

    repages = pages_in(local_chat(first), PAGES)[8:] + pages_in(local_chat(second), PAGES)
    assert len(repages) == 8
    assert sorted(buttons(slack_blocks(page))[ACK_ACTION] for page in repages) == sorted(str(i) for i in ids)
    async with first.db.sessions() as session:
        counts = (await session.execute(select(Escalation.repage_count))).scalars().all()
    assert counts == [1] * 8


async def test_get_a_human_opens_one_escalation_per_thread_and_the_bot_goes_quiet(
    make_runtime: Factory,
) -> None:
    runtime = await make_runtime()
    msg = customer_message("how do I export my invoices as CSV?")
    assert (await runtime.pipeline.handle(msg)).outcome == "replied"
    chat = local_chat(runtime)
    service = runtime.escalations

    first, second = await asyncio.gather(service.request_human(msg.team, SUPPORT, msg.ts, CUSTOMER),
                                         service.request_human(msg.team, SUPPORT, msg.ts, CUSTOMER))
    assert sorted([first, second]) == ["already", "done"]  # a double click opens one
    [page] = pages_in(chat, PAGES)
    shown = block_text(slack_blocks(page))
    assert "the customer asked for a person" in shown and "how do I export my invoices as CSV?" in shown
    assert chat.posts_in(SUPPORT, msg.ts)[-1].notice == REQUEST_NOTICE
    stored = await only_escalation(runtime)
    assert stored.trigger == "user_request" and stored.requester == CUSTOMER and stored.route is not None

    assert await service.request_human(msg.team, SUPPORT, msg.ts, CUSTOMER) == "already"
    quiet = await runtime.pipeline.handle(customer_message("still there?", thread_ts=msg.ts))
    assert quiet.outcome == "quiet" and len(pages_in(chat, PAGES)) == 1

    assert await service.resolve(stored.id, "U0ALICE") == "done"
    assert await service.request_human(msg.team, SUPPORT, msg.ts, CUSTOMER) == "done"  # a new one once closed
    assert len(pages_in(chat, PAGES)) == 2


async def test_local_mode_pages_the_playground_channel_and_the_stand_in_may_answer(make_runtime: Factory) -> None:
    runtime = await make_runtime(load_config())  # the built-in config names nobody
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    [page] = pages_in(local_chat(runtime), LOCAL_PAGE_CHANNEL)
    assert f"<@{LOCAL_ONCALL_USER}>" in slack_text(page)
    assert runtime.escalations.local_oncall_user == LOCAL_ONCALL_USER
    assert await runtime.escalations.acknowledge(escalation_id, "U0SOMEONE") == "refused"
    assert await runtime.escalations.acknowledge(escalation_id, LOCAL_ONCALL_USER) == "done"


class FlakyChat(LocalChat):
    """A local chat whose pages can fail, or lose the answer to a post it did make (a timeout after Slack
    stored it); it finds its own pages again by their key, like the Slack history lookup."""

    capabilities = Capabilities(finds_lost_posts=True, local_page_channel=LOCAL_PAGE_CHANNEL)
    lose_next_answer = False
    down = False

    async def post_page(self, channel: str, page: Page) -> PostedMessage:
        if self.down:
            raise TransportError("Slack chat.postMessage failed: http_503", code="http_503")
        posted = await super().post_page(channel, page)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise TransportError("Slack chat.postMessage failed: timed out", code="timeout")
        return posted

    async def find_page(self, channel: str, page: Page) -> PostedMessage | None:
        for post in self.posts_in(channel):
            if post.page is not None and post.page.key == page.key:
                return PostedMessage(post.channel, post.ts)
        return None


class SlackLikeChat(LocalChat):
    """A local chat outside local mode: pages go where the config says, DMs when it names no channel."""

    capabilities = Capabilities()


async def test_a_page_whose_answer_was_lost_is_found_not_posted_twice(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    chat = FlakyChat(clock)
    runtime = await make_runtime(chat=chat)
    chat.lose_next_answer = True
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    unpaged = await escalation(runtime, escalation_id)
    assert unpaged.paged_rounds == 0 and unpaged.page_ts is None

    clock.advance(30)
    assert await runtime.escalations.sweep() == 1
    [page] = pages_in(chat, PAGES)
    paged = await escalation(runtime, escalation_id)
    assert paged.paged_rounds == 1 and paged.page_ts == page.ts


async def test_a_page_that_could_not_be_posted_is_posted_by_the_sweeper(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    chat = FlakyChat(clock)
    runtime = await make_runtime(chat=chat)
    chat.down = True
    msg = customer_message()
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "escalated" and pages_in(chat, PAGES) == []
    stored = await only_escalation(runtime)
    assert stored.state == "paged" and stored.paged_rounds == 0

    clock.advance(30)
    assert await runtime.escalations.sweep() == 0  # still down: kept, not dropped
    chat.down = False
    clock.advance(30)
    assert await runtime.escalations.sweep() == 1
    assert len(pages_in(chat, PAGES)) == 1
    clock.advance(30)
    assert await runtime.escalations.sweep() == 0 and len(pages_in(chat, PAGES)) == 1
    async with runtime.db.sessions() as session:
        rows = (await session.execute(select(EscalationPage))).scalars().all()
    assert [(row.round, row.target, row.ts is not None) for row in rows] == [(1, PAGES, True)]


async def test_dm_pages_to_each_on_call_person_are_all_updated(make_runtime: Factory, clock: ManualClock) -> None:
    # Outside local mode with no channel: one DM each (see test_slack for the same over the Slack API).
    runtime = await make_runtime(escalation_config(BASE_TOML.replace('channel = "C0ESC"', "")),
                                 chat=SlackLikeChat(clock))
    service = runtime.escalations
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    chat = local_chat(runtime)
    alice, bob = pages_in(chat, "DU0ALICE"), pages_in(chat, "DU0BOB")
    assert len(alice) == len(bob) == 1
    assert await service.acknowledge(escalation_id, "U0ALICE") == "done"
    assert alice[0].updated == bob[0].updated == 1
    assert "Acknowledged by <@U0ALICE>" in block_text(slack_blocks(bob[0]))
