"""Voting on sensitive replies through the fake API: N samples at once, majority, agreement, judge, escalation."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bot.pipeline import LLM_DOWN_NOTE, VOTE_NOTE
from bot.runtime import Runtime
from storage.models import Escalation, LLMCall, Vote
from tests.builders import chat_of, message
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply, error
from tests.llm.conftest import BuildRuntime

LLM_ROUTER = '[router]\nmode = "llm"\n'
BILLING = "I was charged twice this month for the same invoice"


def route_to(fake: FakeAnthropicAPI, route: str, confidence: float = 0.95) -> None:
    fake.on_tool("route_message", {"route": route, "confidence": confidence, "reason": "test"})


def scripted(answers: Sequence[dict[str, Any] | Reply]) -> Callable[[RecordedRequest], dict[str, Any] | Reply]:
    """Per-sample answers for submit_verdict, in the order the samples reach the API."""
    counter = itertools.count()

    def answer(_request: RecordedRequest) -> dict[str, Any] | Reply:
        return answers[next(counter) % len(answers)]

    return answer


def reply(draft: str) -> dict[str, Any]:
    return {"verdict": "reply", "draft": draft, "reason": "safe to send"}


def needs_human(draft: str = "A person should look at this charge.") -> dict[str, Any]:
    return {"verdict": "needs_human", "draft": draft, "reason": "needs a refund decision"}


async def the_vote(runtime: Runtime) -> Vote:
    async with runtime.db.sessions() as session:
        [vote] = (await session.execute(select(Vote).options(selectinload(Vote.samples)))).scalars().all()
    return vote


async def the_escalation(runtime: Runtime) -> Escalation:
    async with runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    return escalation


async def test_the_samples_run_concurrently_and_every_one_is_recorded(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[voting]\nsamples = 5\n")
    route_to(fake_anthropic, "billing")
    fake_anthropic.on_tool("submit_verdict", reply("Sorry about the double charge: send me the invoice number."))
    fake_anthropic.latency_s = 0.2
    msg = message(BILLING)
    result = await runtime.pipeline.handle(msg)

    assert fake_anthropic.max_in_flight == 5
    assert result.outcome == "replied" and result.vote is not None
    assert result.vote.majority == "reply" and result.vote.agreement == 1.0
    [posted] = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
    assert posted.text == "Sorry about the double charge: send me the invoice number."
    votes = fake_anthropic.requests_for(tool="submit_verdict")
    assert len(votes) == 5 and {r.model for r in votes} == {"claude-haiku-4-5"}  # billing's model
    assert all("billing specialist" in r.system_text and "sensitive topic" in r.system_text for r in votes)
    vote = await the_vote(runtime)
    assert vote.samples_requested == 5 and vote.majority == "reply" and vote.agreement == 1.0
    assert not vote.escalated and "route 'billing' is sensitive" in vote.reason
    assert sorted(s.index for s in vote.samples) == [0, 1, 2, 3, 4]
    async with runtime.db.sessions() as session:
        call_ids = set((await session.execute(select(LLMCall.id).where(LLMCall.purpose == "vote"))).scalars())
    assert {s.llm_call_id for s in vote.samples} == call_ids and len(call_ids) == 5


async def test_low_agreement_escalates_with_the_drafts_attached(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "billing")
    fake_anthropic.on_tool("submit_verdict", scripted([
        reply("Draft A: a refund takes 3-5 business days."),
        reply("Draft B: send me the invoice number."),
        needs_human(),
        {"verdict": "maybe", "draft": "?", "reason": "outside the enum"},
        {"verdict": "maybe", "draft": "?", "reason": "outside the enum"},
    ]))
    msg = message(BILLING)
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "escalated"
    assert chat_of(runtime).posts_in("CSUPPORT", msg.ts)[0].text == VOTE_NOTE
    vote = await the_vote(runtime)
    assert vote.majority == "reply" and vote.agreement == 0.4 and vote.escalated
    assert sorted(s.verdict for s in vote.samples) == ["error", "error", "needs_human", "reply", "reply"]
    escalation = await the_escalation(runtime)
    assert escalation.trigger == "vote" and "agreement 0.40 is below 0.60" in escalation.reason
    assert "Draft A: a refund takes 3-5 business days." in escalation.drafts
    assert "Draft B: send me the invoice number." in escalation.drafts


async def test_a_majority_for_a_person_escalates(fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "billing")
    fake_anthropic.on_tool("submit_verdict", scripted([
        needs_human(), reply("You will get the refund."), needs_human(), reply("Refund approved."), needs_human()]))
    msg = message(BILLING)
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "escalated" and result.vote is not None
    assert result.vote.majority == "needs_human" and result.vote.agreement == 0.6
    assert chat_of(runtime).posts_in("CSUPPORT", msg.ts)[0].text == VOTE_NOTE
    escalation = await the_escalation(runtime)
    assert escalation.trigger == "vote" and "3 of 5 samples said a person must handle it" in escalation.reason
    assert "Refund approved." in escalation.drafts


async def test_the_judge_picks_the_best_draft(fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime) -> None:
    runtime = await make_runtime(LLM_ROUTER + '[voting]\nstrategy = "judge"\n')
    route_to(fake_anthropic, "billing")
    common = "Thanks for flagging the double charge, please send the invoice number so we can check it"
    fake_anthropic.on_tool("submit_verdict", scripted([
        reply(f"{common}. (A)"), reply(f"{common}! (B)"), reply(f"{common}, thanks. (C)"),
        reply("CHOSEN: I see two charges of $20 on May 3; I have flagged the second one for a refund review."),
        reply(f"{common} today. (E)"),
    ]))

    def judge(request: RecordedRequest) -> dict[str, Any]:
        drafts = re.findall(r'<draft index="(\d+)">\n(.*?)\n</draft>', request.last_user_text, re.DOTALL)
        return {"best": next(int(i) for i, draft in drafts if draft.startswith("CHOSEN")), "reason": "specific"}

    fake_anthropic.on_tool("pick_best_draft", judge)
    msg = message(BILLING)
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "replied"
    assert chat_of(runtime).posts_in("CSUPPORT", msg.ts)[0].text.startswith("CHOSEN:")
    [judged] = fake_anthropic.requests_for(tool="pick_best_draft")
    schema = judged.schema_for("pick_best_draft")
    assert schema is not None and schema["properties"]["best"]["maximum"] == 4
    assert "billing specialist" in judged.system_text
    vote = await the_vote(runtime)
    assert vote.strategy == "judge" and vote.chosen is not None and vote.chosen.startswith("CHOSEN:")


async def test_a_judge_answer_outside_the_schema_leaves_the_majoritys_typical_draft(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + '[voting]\nstrategy = "judge"\nsamples = 3\n')
    route_to(fake_anthropic, "billing")
    fake_anthropic.on_tool("submit_verdict", scripted([
        reply("Please send the invoice number and I will check the charge."),
        reply("Please send the invoice number so I can check the charge."),
        reply("Completely different words here."),
    ]))
    fake_anthropic.on_tool("pick_best_draft", {"best": 99})
    result = await runtime.pipeline.handle(message(BILLING))

    assert result.outcome == "replied" and (result.reply or "").startswith("Please send the invoice number")


async def test_when_every_sample_fails_the_note_is_honest_about_the_outage(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[voting]\nsamples = 3\n")
    route_to(fake_anthropic, "billing")
    fake_anthropic.on_tool("submit_verdict", lambda r: error(529, retry_after=0.01))
    msg = message(BILLING)
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "escalated"
    assert chat_of(runtime).posts_in("CSUPPORT", msg.ts)[0].text == LLM_DOWN_NOTE
    vote = await the_vote(runtime)
    assert vote.majority == "error" and vote.agreement == 0.0 and "overloaded x3" in vote.reason
    assert (await the_escalation(runtime)).trigger == "llm_failure"
    # Each sample tried the route's model with retries, then the fallback model once.
    models = [r.model for r in fake_anthropic.requests_for(tool="submit_verdict")]
    assert models.count("claude-haiku-4-5") == 9 and models.count("claude-sonnet-4-6") == 3


async def test_keywords_and_low_router_confidence_also_trigger_voting(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[voting]\nsamples = 3\n")
    fake_anthropic.on_tool("submit_verdict", reply("Here is what I can do."))
    route_to(fake_anthropic, "technical")
    by_keyword = await runtime.pipeline.handle(message("the app crashed and I want a refund"))
    route_to(fake_anthropic, "general", confidence=0.3)
    by_confidence = await runtime.pipeline.handle(message("hmm, question about stuff"))
    route_to(fake_anthropic, "technical")
    not_voted = await runtime.pipeline.handle(message("the app crashes when I upload a file"))

    assert by_keyword.vote is not None and by_confidence.vote is not None and not_voted.vote is None
    async with runtime.db.sessions() as session:
        reasons = sorted((await session.execute(select(Vote.reason))).scalars())
    assert any("message mentions 'refund'" in reason for reason in reasons)
    assert any("router confidence 0.30 is below 0.50" in reason for reason in reasons)
