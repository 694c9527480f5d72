"""Claude through the real SDK and the fake API: prompts, caching, retries, fallback, honest failure."""

from __future__ import annotations

from sqlalchemy import select

from bot.clock import ManualClock
from bot.errors import LLMBadOutput, LLMUnavailable
from bot.llm.base import ChatMessage, LLMRequest, ToolSpec
from bot.pipeline import LLM_DOWN_NOTE
from bot.runtime import Runtime
from bot.slack.mrkdwn import MAX_REPLY_CHARS, TRUNCATION_NOTE, to_mrkdwn
from storage.models import Escalation, LLMCall
from tests.builders import chat_of, message
from tests.fakes.anthropic_api import FakeAnthropicAPI, error, garbage, hang, text, tool_use
from tests.llm.conftest import DUMMY_KEY, BuildRuntime, ClaudeStack

# The LLM router decides, so each test controls the route; technical replies are not voted on.
LLM_ROUTER = '[router]\nmode = "llm"\n'
HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"


def route_to(fake: FakeAnthropicAPI, route: str, confidence: float = 0.95) -> None:
    fake.on_tool("route_message", {"route": route, "confidence": confidence, "reason": "test"})


async def calls(runtime: Runtime, purpose: str | None = None) -> list[LLMCall]:
    async with runtime.db.sessions() as session:
        query = select(LLMCall).order_by(LLMCall.id)
        if purpose is not None:
            query = query.where(LLMCall.purpose == purpose)
        return list((await session.execute(query)).scalars().all())


def request(model: str = HAIKU, *, tool: ToolSpec | None = None) -> LLMRequest:
    return LLMRequest(purpose="reply", model=model, system="You are a test persona.",
                      messages=(ChatMessage("user", "hello"),), max_tokens=100, tool=tool)


# ------------------------------------------------------------------ what is sent


async def test_a_reply_sends_the_routes_model_persona_prompt_and_thread_history(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    fake_anthropic.responder = lambda r: (
        text("**Try this:**\n- sign out\n- sign in again") if r.forced_tool is None
        else fake_anthropic.default_responder(r))
    root = message("the app crashes every time I upload a file")
    await runtime.pipeline.handle(root)
    follow_up = await runtime.pipeline.handle(message("it still crashes after that", thread_ts=root.ts))

    replies = [r for r in fake_anthropic.requests if r.forced_tool is None]
    assert [r.model for r in replies] == [SONNET, SONNET]  # technical's model in the default config
    second = replies[1]
    assert second.api_key == DUMMY_KEY
    assert "senior technical support engineer" in second.system_text
    assert isinstance(second.system, list) and second.system[-1]["cache_control"] == {"type": "ephemeral"}
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    assert "crashes every time I upload" in second.messages[0]["content"]
    assert second.last_user_text == '<message role="customer">\nit still crashes after that\n</message>'
    # The answer is kept as the model's Markdown; Slack shows it as mrkdwn.
    assert follow_up.outcome == "replied"
    posted = chat_of(runtime).posts_in("CSUPPORT", root.ts)[-1].text
    assert posted == "**Try this:**\n- sign out\n- sign in again"
    assert to_mrkdwn(posted).startswith("*Try this:*") and "• sign out" in to_mrkdwn(posted)
    [route_call, *_] = await calls(runtime, "route")
    assert route_call.model == HAIKU and route_call.error is None


async def test_the_second_message_on_a_route_reads_the_system_prompt_from_the_cache(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    await runtime.pipeline.handle(message("the app crashes every time I upload a file"))
    await runtime.pipeline.handle(message("I never received the verification email"))

    first, second = await calls(runtime, "reply")
    assert first.cache_creation_tokens > 0 and first.cache_read_tokens == 0
    assert second.cache_read_tokens == first.cache_creation_tokens
    assert second.input_tokens < first.input_tokens + first.cache_creation_tokens
    route_first, route_second = await calls(runtime, "route")
    assert route_second.cache_read_tokens > 0


# ------------------------------------------------------------------ retries and fallback


async def test_a_429_is_retried_and_the_user_never_notices(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    fake_anthropic.fail_next(1, 429)
    result = await runtime.pipeline.handle(message("the app crashes every time I upload a file"))

    assert result.outcome == "replied" and result.route == "technical" and result.decided_by == "llm"
    assert [r.forced_tool for r in fake_anthropic.requests] == ["route_message", "route_message", None]
    assert [(c.purpose, c.model, c.error) for c in await calls(runtime)] == [
        ("route", HAIKU, None), ("reply", SONNET, None)]


async def test_an_overloaded_model_falls_back_to_the_fallback_model_once(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    fake_anthropic.fail_next(3, 529)  # the first attempt and both retries
    result = await runtime.pipeline.handle(message("the app crashes every time I upload a file"))

    assert result.outcome == "replied" and result.route == "technical" and result.decided_by == "llm"
    route_requests = fake_anthropic.requests_for(tool="route_message")
    assert [r.model for r in route_requests] == [HAIKU, HAIKU, HAIKU, SONNET]
    failed, rescued, _reply = await calls(runtime)
    assert failed.model == HAIKU and failed.error is not None and failed.error.startswith("overloaded:")
    assert "529" in failed.error and "after 3 attempts" in failed.error
    assert rescued.model == SONNET and rescued.error is None and rescued.purpose == "route"


async def test_a_long_retry_after_is_not_waited_for_the_fallback_answers_instead(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    fake_anthropic.fail_next(1, 429, retry_after=300)
    result = await runtime.pipeline.handle(message("the app crashes every time I upload a file"))

    assert result.outcome == "replied" and result.route == "technical"
    failed, rescued, _reply = await calls(runtime)
    assert failed.error is not None and failed.error.startswith("rate_limited:")
    assert "asked to wait 300s" in failed.error
    assert rescued.model == SONNET and rescued.error is None


async def test_when_every_model_fails_the_user_gets_an_honest_note_and_a_person_is_paged(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime()  # hybrid: the local guess stands when Claude cannot route
    fake_anthropic.responder = lambda r: error(529, retry_after=0.01)
    msg = message("the app crashes every time I upload a file")
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "escalated"
    [notice] = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
    assert notice.text == LLM_DOWN_NOTE
    async with runtime.db.sessions() as session:
        [escalation] = (await session.execute(select(Escalation))).scalars().all()
    assert escalation.trigger == "llm_failure" and "overloaded" in escalation.reason
    recorded = await calls(runtime)
    assert recorded and all(c.error and c.error.startswith("overloaded:") for c in recorded)
    assert any(c.model == SONNET for c in recorded)  # the fallback was tried before giving up


async def test_a_hung_request_times_out_and_the_fallback_answers(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[llm]\ntimeout_s = 0.3\nmax_retries = 0\ndeadline_s = 5\n")
    route_to(fake_anthropic, "technical")
    fake_anthropic.enqueue(hang())
    result = await runtime.pipeline.handle(message("the app crashes every time I upload a file"))

    assert result.outcome == "replied" and result.route == "technical"
    hung, rescued, _reply = await calls(runtime)
    assert hung.error is not None and hung.error.startswith("timeout:") and hung.model == HAIKU
    assert rescued.model == SONNET and rescued.error is None


async def test_when_everything_hangs_the_deadline_ends_it_with_an_honest_note(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER + "[llm]\ntimeout_s = 0.2\nmax_retries = 1\ndeadline_s = 1\n")
    fake_anthropic.responder = lambda r: hang()
    msg = message("the app crashes every time I upload a file")
    result = await runtime.pipeline.handle(msg)

    assert result.outcome == "escalated"
    assert chat_of(runtime).posts_in("CSUPPORT", msg.ts)[0].text == LLM_DOWN_NOTE
    recorded = await calls(runtime)
    assert recorded and all(c.error and c.error.startswith("timeout:") for c in recorded)


# A model is skipped after two failed calls in a row, for 30 s of the test's clock.
BREAKER = "[llm]\nmax_retries = 0\ncircuit_failures = 2\ncircuit_cooldown_s = 30\n"


def circuit_refusals(runtime: Runtime) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "supportbot_llm_errors_total", {"purpose": "reply", "kind": "circuit_open"})
    return value or 0.0


async def test_a_model_that_keeps_failing_is_skipped_for_the_fallback_until_a_probe_succeeds(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    clock = ManualClock()
    runtime = await make_runtime(BREAKER, clock=clock)
    haiku_down = True
    fake_anthropic.responder = lambda r: (
        error(529, retry_after=0.01) if haiku_down and r.model == HAIKU else fake_anthropic.default_responder(r))

    for _ in range(2):  # Haiku fails, Sonnet answers: two failures in a row open Haiku's circuit
        assert (await runtime.llm.complete(request())).model == SONNET
    assert [r.model for r in fake_anthropic.requests] == [HAIKU, SONNET, HAIKU, SONNET]

    answered = await runtime.llm.complete(request())  # straight to the fallback, Haiku not asked
    assert answered.model == SONNET and [r.model for r in fake_anthropic.requests[4:]] == [SONNET]
    assert circuit_refusals(runtime) == 1

    haiku_down = False
    clock.advance(29)  # still cooling down: Haiku is not asked even though it is back
    assert (await runtime.llm.complete(request())).model == SONNET
    clock.advance(2)  # past the cool-down: one probe, and its success closes the circuit
    assert (await runtime.llm.complete(request())).model == HAIKU
    assert (await runtime.llm.complete(request())).model == HAIKU
    assert [r.model for r in fake_anthropic.requests[5:]] == [SONNET, HAIKU, HAIKU]
    recorded = await calls(runtime)  # calls the breaker refused reached no model and are not logged
    assert [(c.model, c.error is None) for c in recorded] == [
        (HAIKU, False), (SONNET, True), (HAIKU, False), (SONNET, True), (SONNET, True), (SONNET, True),
        (HAIKU, True), (HAIKU, True)]
    assert runtime.metrics.registry.get_sample_value("supportbot_llm_circuit_open", {"model": HAIKU}) == 0


async def test_in_a_full_outage_the_honest_note_comes_at_once_and_replies_resume_after_a_probe(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    clock = ManualClock()
    runtime = await make_runtime(BREAKER, clock=clock)  # technical replies use Sonnet, the fallback itself
    fake_anthropic.responder = lambda r: error(529, retry_after=0.01)

    def replies_asked() -> int:
        return len([r for r in fake_anthropic.requests if r.forced_tool is None])

    for _ in range(2):
        assert (await runtime.pipeline.handle(message("the app crashes every time I upload a file"))).outcome \
            == "escalated"
    assert replies_asked() == 2
    msg = message("the export button does nothing")
    result = await runtime.pipeline.handle(msg)
    assert result.outcome == "escalated" and replies_asked() == 2  # Claude was not asked again
    [notice] = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
    assert notice.text == LLM_DOWN_NOTE
    async with runtime.db.sessions() as session:
        reasons = (await session.execute(select(Escalation.reason).order_by(Escalation.id))).scalars().all()
    assert len(reasons) == 3 and "circuit_open" in reasons[-1] and "not asked again" in reasons[-1]

    fake_anthropic.responder = fake_anthropic.default_responder  # Claude is back
    clock.advance(31)
    recovered = await runtime.pipeline.handle(message("the app crashes on start-up"))
    assert recovered.outcome == "replied" and replies_asked() == 3
    assert (await runtime.pipeline.handle(message("the sync icon spins forever"))).outcome == "replied"


async def test_a_garbled_body_is_retried(fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack) -> None:
    fake_anthropic.enqueue(garbage(), garbage('{"type": "message", "content": "not a list"}'))
    response = await claude.llm.complete(request())

    assert response.text.startswith("[fake claude-haiku-4-5]")
    assert len(fake_anthropic.requests) == 3
    [recorded] = await claude.calls()
    assert recorded.error is None and recorded.model == HAIKU


async def test_a_body_that_is_never_a_message_ends_as_bad_response_on_both_models(
    fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack
) -> None:
    fake_anthropic.responder = lambda r: garbage('{"hello": "world"}')
    try:
        await claude.llm.complete(request())
    except LLMUnavailable as exc:
        assert exc.kind == "bad_response" and "fallback model failed too" in str(exc)
    else:
        raise AssertionError("a wrong-shaped body must not pass as an answer")
    primary, fallback = await claude.calls()
    assert (primary.model, fallback.model) == (HAIKU, SONNET)
    assert all(c.error and c.error.startswith("bad_response:") for c in (primary, fallback))


async def test_a_bad_request_is_neither_retried_nor_sent_to_the_fallback(
    fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack
) -> None:
    fake_anthropic.enqueue(error(400, message="messages: too long"))
    try:
        await claude.llm.complete(request())
    except LLMUnavailable as exc:
        assert exc.kind == "bad_request" and "too long" in str(exc)
    else:
        raise AssertionError("expected LLMUnavailable")
    assert len(fake_anthropic.requests) == 1


async def test_a_wrong_key_is_reported_as_auth_without_leaking_it(
    fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack
) -> None:
    fake_anthropic.api_key = "sk-ant-the-real-one"
    try:
        await claude.llm.complete(request())
    except LLMUnavailable as exc:
        assert exc.kind == "auth" and "ANTHROPIC_API_KEY" in str(exc)
    else:
        raise AssertionError("expected LLMUnavailable")
    [recorded] = await claude.calls()
    assert recorded.error is not None and DUMMY_KEY not in recorded.error
    assert len(fake_anthropic.requests) == 1


async def test_an_answer_without_the_forced_tool_call_is_bad_output(
    fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack
) -> None:
    tool = ToolSpec("pick", "pick one", {"type": "object", "properties": {"n": {"type": "integer"}}})
    fake_anthropic.enqueue(text("I would pick 3"))
    try:
        await claude.llm.complete(request(tool=tool))
    except LLMBadOutput as exc:
        assert exc.kind == "bad_output" and "did not call pick" in str(exc)
    else:
        raise AssertionError("expected LLMBadOutput")
    [recorded] = await claude.calls()
    assert recorded.error is not None and recorded.error.startswith("bad_output:")
    assert len(fake_anthropic.requests) == 1


async def test_a_tool_answer_round_trips_with_usage(fake_anthropic: FakeAnthropicAPI, claude: ClaudeStack) -> None:
    tool = ToolSpec("pick", "pick one", {"type": "object", "properties": {"n": {"type": "integer"}}})
    fake_anthropic.enqueue(tool_use("pick", {"n": 3}, preamble="Let me pick."))
    response = await claude.llm.complete(request(tool=tool))

    assert response.tool_input == {"n": 3} and response.stop_reason == "tool_use"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    [recorded] = await claude.calls()
    assert recorded.id == response.call_id and recorded.stop_reason == "tool_use"
    assert recorded.output_tokens == response.usage.output_tokens


async def test_without_a_fallback_model_the_route_model_alone_is_tried(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime('[llm]\nfallback_model = ""\nmax_retries = 1\n')
    fake_anthropic.responder = lambda r: error(503, retry_after=0.01)
    try:
        await runtime.llm.complete(request())
    except LLMUnavailable as exc:
        assert exc.kind == "server_error" and "after 2 attempts" in str(exc)
    else:
        raise AssertionError("expected LLMUnavailable")
    assert [r.model for r in fake_anthropic.requests] == [HAIKU, HAIKU]


async def test_a_long_reply_is_kept_whole_and_shortened_to_fit_in_slack(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime
) -> None:
    runtime = await make_runtime(LLM_ROUTER)
    route_to(fake_anthropic, "technical")
    fake_anthropic.responder = lambda r: (
        text("Step. " * 2_000) if r.forced_tool is None else fake_anthropic.default_responder(r))
    msg = message("the app crashes every time I upload a file")
    await runtime.pipeline.handle(msg)

    [posted] = chat_of(runtime).posts_in("CSUPPORT", msg.ts)
    assert len(posted.text) > MAX_REPLY_CHARS  # the record keeps the whole answer
    shown_in_slack = to_mrkdwn(posted.text)
    assert len(shown_in_slack) <= MAX_REPLY_CHARS + len(TRUNCATION_NOTE)
    assert shown_in_slack.endswith(TRUNCATION_NOTE)
    [reply_call] = await calls(runtime, "reply")
    assert reply_call.stop_reason == "max_tokens"
