"""The whole pipeline end to end: offline provider, local chat transport, a real SQLite file."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import Config
from bot.domain import Answer, InboundMessage
from bot.errors import LLMUnavailable
from bot.escalation import ACK_ACTION, RESOLVE_ACTION
from bot.llm.base import LLMRequest, LLMResponse
from bot.local_chat import LOCAL_PAGE_CHANNEL, LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from storage import repositories as repo
from storage import review
from storage.models import Escalation, InboundEvent, LLMCall, Vote
from tests.builders import chat_of, message


async def test_billing_question_is_voted_on_and_answered_in_thread(runtime: Runtime) -> None:
    msg = message("I was charged twice this month for the same invoice")
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "replied" and result.route == "billing"
    assert result.vote is not None and result.vote.agreement == 1.0
    posts = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
    assert len(posts) == 1 and "billing specialist" in posts[0].text and "offline mode" in posts[0].text
    async with runtime.db.sessions() as session:
        [row] = await review.query_logs(session, review.LogFilter())
        votes = (await session.execute(select(Vote))).scalars().all()
        vote_calls = select(func.count()).select_from(LLMCall).where(LLMCall.purpose == "vote")
        calls = (await session.execute(vote_calls)).scalar_one()
    assert row.voted and row.vote_agreement == 1.0 and row.reply == posts[0].text and row.latency_ms is not None
    assert len(votes) == 1 and votes[0].samples_requested == runtime.config.voting.samples
    assert calls == runtime.config.voting.samples


async def test_technical_question_gets_one_draft_without_voting(runtime: Runtime) -> None:
    result = await runtime.pipeline.handle(message("the app crashes every time I upload a file"))
    assert result.route == "technical" and result.vote is None and result.outcome == "replied"
    assert "technical support engineer" in (result.reply or "")


async def test_angry_customer_is_escalated_and_the_thread_then_stays_quiet(runtime: Runtime) -> None:
    msg = message("This is unacceptable, my lawyer will hear about this")
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "escalated" and result.route == "escalate" and result.decided_by == "rules"
    chat = chat_of(runtime)
    [notice] = chat.posts_in("CSUPPORT", msg.ts)
    assert "paged a person" in notice.text
    [page] = chat.posts_in(LOCAL_PAGE_CHANNEL)
    assert page.page is not None and page.page.actions == (ACK_ACTION, RESOLVE_ACTION)
    follow_up = await runtime.pipeline.handle(message("hello??", thread_ts=msg.ts))
    assert follow_up.outcome == "quiet"
    assert len(chat.posts_in("CSUPPORT", msg.ts)) == 1
    async with runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    assert escalation.state == "paged" and escalation.trigger == "rule" and escalation.page_ts == page.ts


async def test_duplicate_delivery_never_answers_twice(runtime: Runtime) -> None:
    msg = message("how do I reset my password")
    first = await runtime.pipeline.handle(msg)
    retry = await runtime.pipeline.handle(dataclasses.replace(msg, event_id="EvRetry"))
    assert first.outcome == "replied" and retry.duplicate
    assert len(chat_of(runtime).posts_in("CSUPPORT", msg.ts)) == 1


async def test_follow_up_in_thread_carries_history(runtime: Runtime) -> None:
    root = message("how do I reset my password")
    await runtime.pipeline.handle(root)
    await runtime.pipeline.handle(message("it still says the link expired", thread_ts=root.ts))
    async with runtime.db.sessions() as session:
        conversation = await repo.find_conversation(session, team="T0TEAM", channel="CSUPPORT", thread_ts=root.ts)
        assert conversation is not None
        roles = [m.role for m in await repo.thread_messages(session, conversation.id)]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_pleasantries_get_no_reply(runtime: Runtime) -> None:
    result = await runtime.pipeline.handle(message("thanks!"))
    assert result.outcome == "ignored" and chat_of(runtime).posts == []


async def test_staff_reply_takes_the_thread_over(runtime: Runtime) -> None:
    root = message("where is my order?")
    await runtime.pipeline.handle(root)
    assert await runtime.pipeline.record_staff_message(team="T0TEAM", channel="CSUPPORT", thread_ts=root.ts,
                                                       user="USTAFF", text="I'll check", ts="1700000001.000001")
    result = await runtime.pipeline.handle(message("thank you, any news?", thread_ts=root.ts))
    assert result.outcome == "quiet"
    assert len(chat_of(runtime).posts_in("CSUPPORT", root.ts)) == 1


class DownLLM:
    """An LLM port whose provider is down: every call fails like an exhausted retry budget."""

    provider = "down"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raise LLMUnavailable("HTTP 529: overloaded", kind="http_529")


async def test_llm_outage_gives_an_honest_note_and_a_page(settings: Settings, config: Config) -> None:
    runtime = await build_runtime(settings, config, chat=LocalChat(), llm=DownLLM(), instance_id="t")
    try:
        msg = message("the app crashes every time I upload a file")
        result = await runtime.pipeline.handle(msg)
        assert result.outcome == "escalated"
        [notice] = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
        assert "can't draft an answer" in notice.text
        async with runtime.db.sessions() as session:
            [escalation] = (await session.execute(select(Escalation))).scalars().all()
            errors = (await session.execute(select(LLMCall.error))).scalars().all()
        assert escalation.trigger == "llm_failure" and "529" in escalation.reason
        assert errors and all(error and "http_529" in error for error in errors)
    finally:
        await runtime.close()


async def test_crash_after_posting_is_recovered_without_a_second_reply(runtime: Runtime) -> None:
    msg = message("how do I reset my password")
    inbox_id = await runtime.pipeline.accept(msg)
    assert inbox_id is not None
    # Simulate a process that posted the reply and died before recording it.
    async with runtime.db.sessions.begin() as session:
        await repo.set_reply_intent(session, inbox_id, "Here is how to reset it.", outcome="replied")
    await chat_of(runtime).post_answer(msg, Answer("Here is how to reset it."))
    result = await runtime.pipeline.process(inbox_id)
    assert result is not None and result.outcome == "replied"
    assert len(chat_of(runtime).posts_in("CSUPPORT", msg.ts)) == 1
    async with runtime.db.sessions() as session:
        event = await session.get(InboundEvent, inbox_id)
        assert event is not None and event.status == "done" and event.reply_ts is not None


async def test_unfinished_messages_are_recovered_by_the_dispatcher(runtime: Runtime) -> None:
    msg = message("can I add five more seats to our plan?")
    assert await runtime.pipeline.accept(msg) is not None
    assert await runtime.dispatcher.recover() == 1
    await runtime.dispatcher.wait_idle()
    assert len(chat_of(runtime).posts_in("CSUPPORT", msg.ts)) == 1
    assert await runtime.dispatcher.recover() == 0


async def test_two_local_chats_in_one_instant_never_share_a_message_ts(settings: Settings, config: Config) -> None:
    """Two local sessions (a second `supportbot chat`, a dashboard restart) sending in the same instant:
    each message is its own event, so neither is taken for a duplicate of the other and dropped."""
    clock = ManualClock()
    first_chat, second_chat = LocalChat(clock), LocalChat(clock)
    stamps = [first_chat.next_ts(), second_chat.next_ts(), first_chat.next_ts()]
    assert len(set(stamps)) == 3 and stamps == sorted(stamps, key=float)
    runtime = await build_runtime(settings, config, chat=first_chat, instance_id="t")
    try:
        for chat, text in ((first_chat, "I was charged twice"), (second_chat, "the app crashes on upload")):
            ts = chat.next_ts()
            result = await runtime.pipeline.handle(InboundMessage(
                source="slack", team="T0TEAM", channel="CSAME", user="UZOE", text=text, ts=ts, event_id=f"Ev{ts}"))
            assert result is not None and result.outcome == "replied", text
    finally:
        await runtime.close()
