"""Streamed answers through Slack: words appear while Claude writes them, and every thread ends with exactly one
complete answer — whether the stream is refused, cut by Claude, or expires in Slack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.clock import SystemClock
from bot.config import Config
from bot.slack.blocks import REPLY_EVENT_TYPE
from tests.conftest import slack_settings
from tests.fakes.anthropic_api import FakeAnthropicAPI, text
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage
from tests.slack.conftest import CUSTOMER, SUPPORT, SlackBotHarness, running_bot

ANSWER = ("Sorry about that! Uploads over 100 MB need the desktop app. Open it, drag the file in, and it "
          "uploads in parts, so a dropped connection resumes where it stopped instead of starting over.")


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropicAPI]:
    async with FakeAnthropicAPI(api_key="sk-ant-dummy") as api:
        yield api


@pytest.fixture
async def claude_bot(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, slack_config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[SlackBotHarness]:
    """The bot in HTTP mode on Claude (the fake), appending to a stream at most every 0.2 s."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    config = slack_config.model_copy(update={
        "slack": slack_config.slack.model_copy(update={"stream_interval_s": 0.2}),
        "router": slack_config.router.model_copy(update={"mode": "local"}),
    })
    assert slack_settings(fake_slack, sqlite_url).llm_online
    async with running_bot(fake_slack, sqlite_url, config, clock=SystemClock()) as harness:
        yield harness


def answers_with(fake_anthropic: FakeAnthropicAPI, body: str = ANSWER) -> None:
    """Claude answers every plain reply with `body`; forced tools (votes) get their usual synthesised input."""
    async def respond(request: Any) -> Any:
        return text(body) if request.forced_tool is None else await fake_anthropic.default_responder(request)

    fake_anthropic.responder = respond


def only_answer(bot: SlackBotHarness, thread_ts: str) -> SlackMessage:
    [answer] = bot.bot_replies(SUPPORT, thread_ts)
    return answer


async def test_a_question_in_a_channel_streams_into_one_complete_answer(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    fake_anthropic.first_token_s, fake_anthropic.tokens_per_s = 0.05, 40.0  # about a second of writing
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=20)

    answer = only_answer(claude_bot, question.ts)
    calls = claude_bot.fake.stream_calls(SUPPORT, answer.ts)
    methods = [call.method for call in calls]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert methods.count("chat.startStream") == methods.count("chat.stopStream") == 1
    assert methods.count("chat.appendStream") >= 1 and all(call.ok for call in calls)
    start = calls[0].params
    assert (start["recipient_team_id"], start["recipient_user_id"]) == (claude_bot.fake.team_id, CUSTOMER)
    # One answer, whole, finished, findable after a crash, offering a person.
    assert answer.stream_state == "stopped" and answer.text == ANSWER
    assert answer.metadata is not None and answer.metadata["event_type"] == REPLY_EVENT_TYPE
    assert any(block.get("type") == "actions" for block in answer.blocks or [])
    assert [block["elements"][0]["type"] for block in answer.blocks or [] if block["type"] == "context_actions"] == [
        "feedback_buttons"]  # 👍/👎 arrive with chat.stopStream
    assert claude_bot.posts_in_thread(SUPPORT, question.ts) == []
    # Appends keep Slack's pace: never two within the interval.
    appends = [call.at for call in calls if call.method == "chat.appendStream"]
    assert all(later - earlier >= 0.2 for earlier, later in zip([calls[0].at, *appends], appends, strict=False))
    [inbox] = await claude_bot.inbox()
    assert inbox.reply_ts == answer.ts and inbox.stream_ts == answer.ts


async def test_a_stream_stopped_where_context_actions_are_refused_ends_with_plain_feedback_buttons(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    claude_bot.fake.reject_block_type("context_actions")
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=20)

    answer = only_answer(claude_bot, question.ts)
    stops = [call.ok for call in claude_bot.fake.stream_calls(SUPPORT, answer.ts) if call.method == "chat.stopStream"]
    assert stops == [False, True] and answer.stream_state == "stopped" and answer.text == ANSWER
    thumbs = [(e["action_id"], e["value"]) for b in answer.blocks or [] if b["type"] == "actions"
              for e in b["elements"] if e["action_id"] == "reply_feedback"]
    assert thumbs == [("reply_feedback", "good"), ("reply_feedback", "bad")]
    assert claude_bot.posts_in_thread(SUPPORT, question.ts) == []


async def test_a_sensitive_question_is_answered_once_unstreamed(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    question = await claude_bot.post(SUPPORT, CUSTOMER, "I was charged twice for my subscription this month")
    await claude_bot.settle(timeout_s=20)

    assert claude_bot.fake.calls_to("chat.startStream") == []
    [posted] = claude_bot.posts_in_thread(SUPPORT, question.ts)
    assert posted.ok and len(claude_bot.bot_replies(SUPPORT, question.ts)) == 1


async def test_a_refused_stream_falls_back_to_one_post(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    claude_bot.fake.refuse_streaming("not_allowed_token_type")
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=20)

    answer = only_answer(claude_bot, question.ts)
    assert answer.stream_state is None and ANSWER.split(".")[0] in answer.text
    assert len(claude_bot.posts_in_thread(SUPPORT, question.ts)) == 1
    # Slack said streaming is not available here: the next answer does not ask again.
    second = await claude_bot.post(SUPPORT, CUSTOMER, "and the sync icon spins forever")
    await claude_bot.settle(timeout_s=20)
    assert len(claude_bot.fake.calls_to("chat.startStream")) == 1
    assert len(claude_bot.bot_replies(SUPPORT, second.ts)) == 1


async def test_a_stream_cut_by_claude_ends_as_the_retried_answer_not_a_half_sentence(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    fake_anthropic.tokens_per_s = 200.0
    fake_anthropic.fail_stream_next(after_chunks=3)  # overloaded mid-answer: retried from the start
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=20)

    answer = only_answer(claude_bot, question.ts)
    assert answer.text.count("Sorry about that!") <= 1 and ANSWER.split(".")[0] in answer.text
    assert "resumes where it stopped" in answer.text and answer.stream_state == "stopped"


async def test_a_stream_that_expires_in_slack_is_replaced_by_the_whole_answer(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    fake_anthropic.first_token_s, fake_anthropic.tokens_per_s = 0.05, 40.0
    claude_bot.fake.fail_next("chat.appendStream", error="message_not_in_streaming_state")
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=20)

    answer = only_answer(claude_bot, question.ts)
    assert answer.text == ANSWER or ANSWER.split(".")[0] in "\n".join(
        b["text"]["text"] for b in answer.blocks or [] if b.get("type") == "section")
    assert answer.metadata is not None and answer.metadata["event_type"] == REPLY_EVENT_TYPE
    assert claude_bot.posts_in_thread(SUPPORT, question.ts) == []


async def test_an_answer_claude_cannot_finish_ends_as_the_honest_note(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI,
) -> None:
    answers_with(fake_anthropic)
    fake_anthropic.tokens_per_s = 200.0
    fake_anthropic.fail_stream_next(after_chunks=2, count=20)  # every attempt, on both models, is cut
    question = await claude_bot.post(SUPPORT, CUSTOMER, "uploads of big files fail halfway, any idea?")
    await claude_bot.settle(timeout_s=30)

    answer = only_answer(claude_bot, question.ts)
    shown = "\n".join([answer.text, *(b["text"]["text"] for b in answer.blocks or [] if b.get("type") == "section")])
    assert "can't draft an answer right now" in shown and "Sorry about that" not in shown
    assert not any(b["type"] == "context_actions" for b in answer.blocks or [])  # a notice is not rated
    await asyncio.sleep(0)
