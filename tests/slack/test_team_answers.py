"""The resolution loop, end to end: on-call answers an escalated thread in Slack and resolves the page; the answer
is proposed (`kb proposals`), approved (`kb approve`), and the same question in a new thread reaches Claude with
that answer among its passages and is answered citing it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator

import pytest

from bot.clock import ManualClock
from bot.config import Config
from bot.escalation import RESOLVE_ACTION
from bot.grounding import SOURCES_RECHECK_S
from bot.slack.blocks import SOURCES_BLOCK_ID
from tests.conftest import ANTHROPIC_KEY, config_with
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply, text
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage
from tests.knowledge.test_kb_cli import kb, operator_env
from tests.slack.conftest import CUSTOMER, ONCALL, PAGES, SUPPORT, SlackBotHarness, buttons, running_bot

pytestmark = pytest.mark.timeout(120)

QUESTION = "Do you sign a HIPAA business associate agreement for the enterprise plan?"
ONCALL_ANSWER = "Yes, we sign a BAA on the enterprise plan: your account manager sends it for e-signature."
FIRST_DRAFT = "I'm not sure about compliance paperwork; a person from the team can tell you."
GROUNDED = "Yes: on the enterprise plan we sign a BAA, and your account manager sends it for e-signature."
# Compliance questions go to sales by a rule (no vote, no LLM routing), answers are posted whole.
LOOP_TOML = f"""
[router]
mode = "rules"
[[router.rules]]
name = "compliance"
route = "sales"
pattern = '(?i)\\bhipaa\\b'
[bot]
support_channels = ["{SUPPORT}"]
[escalation]
oncall = ["{ONCALL}"]
channel = "{PAGES}"
[slack]
streaming = false
[knowledge]
min_score = 0.3
"""


@pytest.fixture
async def claude_bot(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[SlackBotHarness]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_anthropic.url)
    config: Config = config_with(LOOP_TOML)
    async with running_bot(fake_slack, sqlite_url, config, clock=clock) as harness:
        yield harness


def supportbot_kb(args: list[str], database_url: str) -> subprocess.CompletedProcess[str]:
    """`supportbot kb …` as an operator runs it, on the bot's database."""
    done = kb(args, operator_env(database_url))
    assert done.returncode == 0, done.stderr
    return done


def sources_text(message: SlackMessage) -> str:
    [block] = [b for b in message.blocks or [] if b.get("block_id") == SOURCES_BLOCK_ID]
    return str(block["elements"][0]["text"])


def plain_replies(fake_anthropic: FakeAnthropicAPI) -> list[RecordedRequest]:
    return [r for r in fake_anthropic.requests if r.forced_tool is None]


async def test_an_answer_on_call_gave_is_proposed_approved_and_then_cited_in_a_new_thread(
    claude_bot: SlackBotHarness, fake_anthropic: FakeAnthropicAPI, clock: ManualClock, sqlite_url: str,
) -> None:
    drafts = iter([FIRST_DRAFT, GROUNDED])

    async def respond(request: RecordedRequest) -> Reply:
        return text(next(drafts)) if request.forced_tool is None else await fake_anthropic.default_responder(request)

    fake_anthropic.responder = respond
    bot = claude_bot

    # The customer asks; the bot has no docs and cannot say; the customer asks for a person.
    asked = await bot.post(SUPPORT, CUSTOMER, QUESTION)
    await bot.settle()
    [first] = bot.bot_replies(SUPPORT, asked.ts)
    assert first.text.startswith(FIRST_DRAFT[:20]) and not any(b.get("block_id") == SOURCES_BLOCK_ID
                                                               for b in first.blocks or [])
    [get_a_human] = buttons(first)
    await bot.click(get_a_human["action_id"], get_a_human["value"], user=CUSTOMER, channel=SUPPORT,
                    message_ts=first.ts, thread_ts=asked.ts)
    await bot.settle()
    [page] = bot.fake.messages_in(PAGES)

    # On-call answers in the thread, then resolves the page.
    clock.advance(300)
    answered = await bot.post(SUPPORT, ONCALL, ONCALL_ANSWER, thread_ts=asked.ts)
    await bot.settle()
    [resolve] = [b for b in buttons(page) if b["action_id"] == RESOLVE_ACTION]
    assert await bot.click(RESOLVE_ACTION, resolve["value"], user=ONCALL, channel=PAGES, message_ts=page.ts) == 200
    await bot.settle()

    [proposal] = [json.loads(line) for line in supportbot_kb(["proposals", "--format", "json"], sqlite_url)
                  .stdout.splitlines()]
    assert (proposal["status"], proposal["question"], proposal["answer"]) == ("proposed", QUESTION, ONCALL_ANSWER)
    assert (proposal["route"], proposal["answered_by"]) == ("sales", ONCALL)
    answer_link = f"https://fake.slack.com/archives/{SUPPORT}/p{answered.ts.replace('.', '')}"
    assert proposal["permalink"].startswith(answer_link)

    approved = supportbot_kb(["approve", str(proposal["id"]), "--reviewer", "rita"], sqlite_url)
    assert f"approved proposal {proposal['id']}" in approved.stdout

    # Someone else asks the same in a new thread: Claude is given on-call's answer, and the reply cites it.
    clock.advance(SOURCES_RECHECK_S + 1)
    again = await bot.post(SUPPORT, "U0DAVE", QUESTION)
    await bot.settle()
    request = plain_replies(fake_anthropic)[-1]
    prompt = request.last_user_text
    assert 'kind="an answer the team gave before"' in prompt and ONCALL_ANSWER in prompt
    assert prompt.index("<passage ") < prompt.index('<message role="customer">')
    [reply] = bot.bot_replies(SUPPORT, again.ts)
    assert reply.text.startswith(GROUNDED[:20])
    shown = sources_text(reply)
    assert f"|An answer the team gave before: {QUESTION}>" in shown and f"<{answer_link}" in shown
    assert len(plain_replies(fake_anthropic)) == 2


