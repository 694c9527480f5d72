"""The LLM router and hybrid tiers through the fake API: the forced schema, bad answers, which tier decided."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from bot.router.base import RoutingContext
from storage import review
from storage.models import LLMCall
from tests.builders import message
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply, error, garbage, hang, text, tool_use
from tests.llm.conftest import BuildRuntime

LLM_ROUTER = '[router]\nmode = "llm"\n'
# Everything the local classifier says is "unsure" (so Claude is asked), or "sure" (so it is not).
HYBRID_ALWAYS_ASKS = '[router]\nmode = "hybrid"\nconfidence_threshold = 1.0\n'
HYBRID_NEVER_ASKS = '[router]\nmode = "hybrid"\nconfidence_threshold = 0.0\n'


async def test_claude_routes_with_a_forced_tool_enumerating_exactly_the_configured_routes(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    fake_anthropic.on_tool("route_message", {"route": "sales", "confidence": 0.88, "reason": "asks about plans"})
    decision = await runtime.pipeline.router.route("how much is the enterprise plan for 40 people?")

    assert (decision.route, decision.confidence, decision.decided_by) == ("sales", 0.88, "llm")
    assert "asks about plans" in decision.reason and decision.llm_calls == 1
    [sent] = fake_anthropic.requests
    assert sent.forced_tool == "route_message" and sent.model == runtime.config.router.model
    schema = sent.schema_for("route_message")
    assert schema is not None
    assert schema["properties"]["route"]["enum"] == runtime.config.route_names
    assert set(schema["required"]) == {"route", "confidence", "reason"}
    fenced = '<message role="customer">\nhow much is the enterprise plan for 40 people?\n</message>'
    assert fenced in sent.last_user_text
    async with runtime.db.sessions() as session:
        [call] = (await session.execute(select(LLMCall))).scalars().all()
    assert call.purpose == "route" and call.error is None


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (tool_use("route_message", {"route": "refunds", "confidence": 0.9, "reason": "x"}), "is not one of"),
        (tool_use("route_message", {"route": "billing", "reason": "no confidence"}), "confidence: Field required"),
        (tool_use("route_message", {"confidence": 0.9, "reason": "no route"}), "route: Field required"),
        (tool_use("route_message", {"route": "billing", "confidence": 85, "reason": "percent"}),
         "less than or equal to 1"),
        (text("billing"), "did not call route_message"),
    ],
    ids=["unknown-route", "missing-confidence", "missing-route", "confidence-out-of-range", "text-not-tool"],
)
async def test_an_answer_outside_the_schema_falls_back_to_the_default_route_and_is_logged(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime, answer: Reply, why: str
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    fake_anthropic.enqueue(answer)
    with capture_logs() as logs:
        decision = await runtime.pipeline.router.route("I was charged twice this month")

    assert decision.route == runtime.config.fallback_route and decision.confidence == 0.0
    assert decision.decided_by == "llm" and "outside the schema" in decision.reason and why in decision.reason
    assert any(entry["event"] == "llm_route_invalid" and entry["log_level"] == "warning" for entry in logs)
    assert len(fake_anthropic.requests) == 1  # a wrong answer is not a reason to retry or fall back


@pytest.mark.parametrize(
    ("failure", "kind"),
    [(garbage, "bad_response"), (hang, "timeout"), (lambda: error(529, retry_after=0.01), "overloaded")],
    ids=["garbage-body", "timeout", "overloaded"],
)
async def test_an_unavailable_router_falls_back_to_the_default_route(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime, failure: object, kind: str
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[llm]\ntimeout_s = 0.3\nmax_retries = 1\ndeadline_s = 2\n")
    fake_anthropic.responder = lambda r: failure()  # type: ignore[operator]
    decision = await runtime.pipeline.router.route("I was charged twice this month")

    assert decision.route == runtime.config.fallback_route and decision.confidence == 0.0
    assert f"LLM router unavailable ({kind})" in decision.reason
    models = [r.model for r in fake_anthropic.requests]
    assert models[-1] == runtime.config.llm.fallback_model and len(models) == 3  # 2 attempts, then the fallback


# ------------------------------------------------------------------ hybrid tiers


async def test_hybrid_rules_decide_first_without_any_llm_call(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(HYBRID_ALWAYS_ASKS)
    result = await runtime.pipeline.handle(message("We are taking legal action against you over this"))

    assert result.route == "escalate" and result.decided_by == "rules" and result.outcome == "escalated"
    assert fake_anthropic.requests == []


async def test_hybrid_confident_local_classifier_decides_without_claude(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(HYBRID_NEVER_ASKS)
    fake_anthropic.on_tool("submit_verdict", {"verdict": "reply", "draft": "Sure."})
    result = await runtime.pipeline.handle(message("how much is the enterprise plan?"))

    assert result.decided_by == "local"
    assert fake_anthropic.requests_for(tool="route_message") == []
    async with runtime.db.sessions() as session:
        [row] = await review.query_logs(session, review.LogFilter())
    assert row.decided_by == "local"


async def test_hybrid_asks_claude_when_the_local_classifier_is_unsure(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(HYBRID_ALWAYS_ASKS)
    fake_anthropic.on_tool("route_message", {"route": "technical", "confidence": 0.91, "reason": "an API error"})
    result = await runtime.pipeline.handle(message("the API returns 401 even though my key is correct"))

    assert (result.route, result.decided_by, result.outcome) == ("technical", "llm", "replied")
    assert "local guess" in (result.reason or "") and "below 1.00" in (result.reason or "")
    assert len(fake_anthropic.requests_for(tool="route_message")) == 1
    async with runtime.db.sessions() as session:
        [row] = await review.query_logs(session, review.LogFilter())
    assert row.decided_by == "llm" and row.confidence == 0.91


async def test_hybrid_keeps_the_local_guess_when_claude_fails_and_says_so(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(HYBRID_ALWAYS_ASKS)
    local_guess = await runtime.local_router.route("the API returns 401 even though my key is correct")
    fake_anthropic.enqueue(error(400, message="bad request (fake)"))
    decision = await runtime.pipeline.router.route("the API returns 401 even though my key is correct")

    assert decision.decided_by == "hybrid" and decision.route == local_guess.route
    assert decision.confidence == local_guess.confidence and decision.llm_calls == 1
    assert "LLM router unavailable (bad_request)" in decision.reason and "kept the local guess" in decision.reason


# ------------------------------------------------------------------ severity: its own axis


async def test_claude_is_told_when_to_escalate_whatever_the_topic_and_sees_the_thread(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    fake_anthropic.on_tool("route_message", {"route": "escalate", "confidence": 0.9, "reason": "data exposure"})
    context = RoutingContext(history=("the invoices page looks odd today",))
    decision = await runtime.pipeline.router.route("now I can see invoices of a company I've never heard of",
                                                   context)

    assert decision.route == "escalate" and decision.decided_by == "llm"
    [sent] = fake_anthropic.requests
    system = sent.system_text
    assert "Severity comes before topic: use escalate" in system
    for criterion in ("data exposure", "physical safety", "production down", "legal or regulatory",
                      "cancel or go public", "executives", "request for a person"):
        assert criterion in system, criterion
    assert "the invoices page looks odd today" in sent.last_user_text


async def test_without_an_escalation_route_the_prompt_has_no_escalation_criteria(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    config = LLM_ROUTER + '[routes.escalate]\npersona = "coordinator"\nescalate = false\n'
    runtime = await make_runtime(config)
    fake_anthropic.on_tool("route_message", {"route": "general", "confidence": 0.9, "reason": "x"})
    await runtime.pipeline.router.route("hello")

    assert "Severity comes before topic" not in fake_anthropic.requests[0].system_text


async def test_hybrid_asks_claude_when_severity_is_not_clearly_low_even_if_the_topic_is_sure(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime('[router]\nmode = "hybrid"\nconfidence_threshold = 0.0\nseverity_threshold = 0.0\n')
    fake_anthropic.on_tool("route_message", {"route": "billing", "confidence": 0.95, "reason": "an invoice question"})
    decision = await runtime.pipeline.router.route("why is my invoice higher this month?")

    assert (decision.route, decision.decided_by) == ("billing", "llm")
    assert "asked because the severity" in decision.reason and "is not clearly low" in decision.reason
    assert len(fake_anthropic.requests_for(tool="route_message")) == 1


async def test_a_confident_severity_overrides_the_topic_and_the_reason_keeps_the_topic(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(HYBRID_NEVER_ASKS)
    decision = await runtime.pipeline.router.route(
        "the payroll run is down and 900 people won't get paid today, our CFO is asking for an update every "
        "10 minutes")

    assert (decision.route, decision.decided_by) == ("escalate", "local")
    assert decision.reason.startswith("severity detector: escalate")
    assert "overrode the topic technical" in decision.reason
    assert fake_anthropic.requests == []


async def test_an_escalation_rule_names_the_topic_it_overrode(make_runtime: BuildRuntime) -> None:
    runtime = await make_runtime(HYBRID_NEVER_ASKS)
    decision = await runtime.pipeline.router.route("refund me for the double charge or I'm going to sue you")

    assert (decision.route, decision.decided_by) == ("escalate", "rules")
    assert "rule 'legal-threat' matched" in decision.reason and "; topic billing" in decision.reason


async def test_routes_are_data_a_config_without_an_escalation_route_still_routes(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime('[router]\nmode = "hybrid"\nrules = []\n'
                                 '[routes.escalate]\npersona = "coordinator"\nescalate = false\n')
    fake_anthropic.on_tool("route_message", {"route": "general", "confidence": 0.9, "reason": "x"})
    decision = await runtime.pipeline.router.route("I was charged twice this month")

    assert decision.route in runtime.config.routes
    assert "severity" not in decision.reason
