"""The fake Anthropic API answers the real `AsyncAnthropic` SDK the way the live API would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic import AsyncAnthropic
from anthropic._constants import ANTHROPIC_API_VERSION
from anthropic.types import MessageParam, TextBlock, ToolParam, ToolUseBlock

from tests.fakes.anthropic_api import (
    FakeAnthropicAPI,
    RecordedRequest,
    Reply,
    estimate_tokens,
    garbage,
    hang,
    synthesize_input,
    text,
    tool_use,
)

MODEL = "claude-sonnet-5-5"
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello there, my VPN is down"}]
CLASSIFY: ToolParam = {
    "name": "classify",
    "description": "Pick a route for the message.",
    "input_schema": {
        "type": "object",
        "properties": {
            "route": {"type": "string", "enum": ["billing", "tech", "other"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "urgent": {"type": "boolean"},
        },
        "required": ["route", "confidence"],
    },
}


@pytest.fixture(autouse=True)
def _clean_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropicAPI]:
    async with FakeAnthropicAPI() as api:
        yield api


@pytest.fixture
async def client(fake: FakeAnthropicAPI) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(api_key="sk-ant-dummy", base_url=fake.url, max_retries=0) as sdk:
        yield sdk


async def _classify(client: AsyncAnthropic, content: str = "Card charged twice") -> ToolUseBlock:
    reply = await client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": content}],
        tools=[CLASSIFY],
        tool_choice={"type": "tool", "name": "classify"},
    )
    assert reply.stop_reason == "tool_use"
    block = reply.content[0]
    assert isinstance(block, ToolUseBlock)
    return block


# ------------------------------------------------------------------ messages


async def test_text_reply_usage_and_headers(fake: FakeAnthropicAPI, client: AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=512, messages=HELLO
    )
    reply = await raw.parse()

    assert raw.request_id is not None and raw.request_id.startswith("req_")
    assert reply.id.startswith("msg_")
    assert reply.model == MODEL and reply.role == "assistant"
    assert reply.stop_reason == "end_turn"
    assert isinstance(reply.content[0], TextBlock)
    assert "my VPN is down" in reply.content[0].text
    assert reply.usage.input_tokens == estimate_tokens("Hello there, my VPN is down")
    assert reply.usage.output_tokens == estimate_tokens(reply.content[0].text)
    assert reply.usage.cache_creation_input_tokens == 0
    assert reply.usage.cache_read_input_tokens == 0

    [seen] = fake.requests
    assert seen.path == "/v1/messages" and seen.model == MODEL
    assert seen.api_key == "sk-ant-dummy"
    assert seen.headers["anthropic-version"] == ANTHROPIC_API_VERSION
    assert seen.messages == HELLO


async def test_text_reply_is_cut_at_max_tokens(client: AsyncAnthropic) -> None:
    reply = await client.messages.create(model=MODEL, max_tokens=2, messages=HELLO)

    assert reply.stop_reason == "max_tokens"
    assert isinstance(reply.content[0], TextBlock)
    assert len(reply.content[0].text) == 8


async def test_forced_tool_gets_input_synthesised_from_its_schema(client: AsyncAnthropic) -> None:
    block = await _classify(client)

    assert block.name == "classify"
    assert block.id.startswith("toolu_")
    assert block.input == {"route": "billing", "confidence": 0.9, "tags": ["fake"], "urgent": True}


async def test_on_tool_overrides_merge_over_the_synthesised_input(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.on_tool("classify", {"route": "tech"})
    assert (await _classify(client)).input["route"] == "tech"

    async def by_content(request: RecordedRequest) -> dict[str, Any]:
        return {"route": "billing" if "refund" in request.last_user_text else "other"}

    fake.on_tool("classify", by_content)
    assert (await _classify(client, "I want a refund")).input == {
        "route": "billing",
        "confidence": 0.9,
        "tags": ["fake"],
        "urgent": True,
    }
    assert (await _classify(client, "What time is it?")).input["route"] == "other"
    assert len(fake.requests_for(tool="classify")) == 3
    assert fake.requests_for(tool="escalate") == []


async def test_queued_replies_come_first_then_the_responder(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.enqueue(text("first"), tool_use("classify", {"route": "other"}))
    fake.responder = lambda request: text(f"{len(request.messages)} message(s)")

    replies = [
        await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO) for _ in range(3)
    ]

    assert [r.stop_reason for r in replies] == ["end_turn", "tool_use", "end_turn"]
    assert isinstance(replies[0].content[0], TextBlock) and replies[0].content[0].text == "first"
    assert isinstance(replies[1].content[0], ToolUseBlock)
    assert replies[1].content[0].input == {"route": "other"}
    assert isinstance(replies[2].content[0], TextBlock)
    assert replies[2].content[0].text == "1 message(s)"


async def test_cached_system_prompt_is_created_once_then_read(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    persona = "You are the on-call helper for the payments team. " * 8
    system: list[anthropic.types.TextBlockParam] = [
        {"type": "text", "text": persona, "cache_control": {"type": "ephemeral"}}
    ]

    first = await client.messages.create(model=MODEL, max_tokens=64, system=system, messages=HELLO)
    second = await client.messages.create(model=MODEL, max_tokens=64, system=system, messages=HELLO)
    other = await client.messages.create(
        model=MODEL, max_tokens=64, system=[{**system[0], "text": "Different."}], messages=HELLO
    )

    cached = estimate_tokens(persona)
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
        cached,
        0,
    )
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (
        0,
        cached,
    )
    assert second.usage.input_tokens == estimate_tokens(HELLO[0]["content"])  # type: ignore[arg-type]
    assert other.usage.cache_read_input_tokens == 0
    assert other.usage.cache_creation_input_tokens == estimate_tokens("Different.")
    assert fake.requests[0].system == system


async def test_invalid_conversations_are_refused_like_the_real_api(client: AsyncAnthropic) -> None:
    bad: list[list[MessageParam]] = [
        [],
        [{"role": "assistant", "content": "Hi"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [
            {"role": "user", "content": "a"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}],
            },
            {"role": "user", "content": "no tool_result here"},
        ],
    ]
    for messages in bad:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model=MODEL, max_tokens=64, messages=messages)
        assert caught.value.type == "invalid_request_error"
        assert caught.value.api_message and caught.value.api_message.startswith("messages")


async def test_wrong_api_key_is_an_authentication_error(fake: FakeAnthropicAPI) -> None:
    async with AsyncAnthropic(api_key="sk-ant-wrong", base_url=fake.url, max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.request_id is not None


async def test_raw_wire_checks_key_and_version_headers(fake: FakeAnthropicAPI) -> None:
    body = {"model": MODEL, "max_tokens": 16, "messages": HELLO}
    url = f"{fake.url}/v1/messages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"anthropic-version": "2023-06-01"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
        async with http.post(url, json=body, headers={"x-api-key": "sk-ant-dummy"}) as r:
            assert r.status == 400
            payload = await r.json()
            assert payload["type"] == "error"
            assert payload["error"] == {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required",
            }
        headers = {"x-api-key": "sk-ant-dummy", "anthropic-version": "2023-06-01"}
        async with http.post(url, json=body, headers=headers) as r:
            assert r.status == 200 and r.headers["request-id"].startswith("req_")
            assert (await r.json())["type"] == "message"
        async with http.get(f"{fake.url}/v1/nowhere", headers=headers) as r:
            assert r.status == 404
            assert (await r.json())["error"]["type"] == "not_found_error"


# ------------------------------------------------------------------ faults


async def test_429_with_retry_after_is_retried_by_the_sdk(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.fail_next(1, 429, retry_after=0.01)

    started = time.monotonic()
    reply = await client.with_options(max_retries=2).messages.create(
        model=MODEL, max_tokens=64, messages=HELLO
    )

    assert reply.stop_reason == "end_turn"
    first, second = fake.requests_for()
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    # retry-after (0.01 s) was obeyed instead of the SDK's >= 0.375 s backoff
    assert time.monotonic() - started < 0.35


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
    ],
)
async def test_server_errors_surface_once_retries_are_exhausted(
    fake: FakeAnthropicAPI,
    client: AsyncAnthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    fake.fail_next(3, status, retry_after=0.01)

    with pytest.raises(error_class) as caught:
        await client.with_options(max_retries=2).messages.create(
            model=MODEL, max_tokens=64, messages=HELLO
        )

    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert caught.value.response.headers["retry-after"] == "0.01"
    assert len(fake.requests_for()) == 3
    # the fault budget is spent: the next call succeeds
    assert (await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)).content


async def test_hang_times_out_on_the_client(fake: FakeAnthropicAPI, client: AsyncAnthropic) -> None:
    fake.enqueue(hang())
    fake.fail_next(1, "timeout")  # faults come before queued replies: this one is the first call
    short = client.with_options(timeout=0.3, max_retries=0)

    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            await short.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert time.monotonic() - started < 2

    # the client hung up, so both handlers were cancelled
    await fake.wait_until_idle(timeout=2)
    assert fake.in_flight == 0


async def test_garbage_bodies_surface_as_sdk_errors(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.enqueue(garbage())
    with pytest.raises(json.JSONDecodeError):
        await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    fake.enqueue(garbage("<html>502 Bad Gateway</html>", status=502, content_type="text/html"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert caught.value.status_code == 502
    assert caught.value.body == "<html>502 Bad Gateway</html>"

    fake.enqueue(garbage('{"type": "message", "content": "not a list"}'))
    async with AsyncAnthropic(
        api_key="sk-ant-dummy", base_url=fake.url, max_retries=0, _strict_response_validation=True
    ) as strict:
        with pytest.raises(anthropic.APIResponseValidationError):
            await strict.messages.create(model=MODEL, max_tokens=64, messages=HELLO)


async def test_fault_ratio_is_seeded_and_bounded(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    async def outcomes() -> list[str]:
        seen: list[str] = []
        for _ in range(12):
            try:
                await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
                seen.append("ok")
            except anthropic.APIStatusError as exc:
                seen.append(str(exc.status_code))
        return seen

    fake.fault_ratio(0.5, kinds=("429", "500"), seed=7, max_faults=4)
    first = await outcomes()
    fake.reset()
    fake.fault_ratio(0.5, kinds=("429", "500"), seed=7, max_faults=4)
    second = await outcomes()

    assert first == second
    assert len([o for o in first if o != "ok"]) == 4
    assert set(first) <= {"ok", "429", "500"}


async def test_a_broken_responder_is_reported_and_not_retried(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise KeyError("route")

    fake.responder = broken
    with pytest.raises(anthropic.InternalServerError, match="fake responder raised"):
        await client.with_options(max_retries=2).messages.create(
            model=MODEL, max_tokens=64, messages=HELLO
        )

    assert len(fake.requests_for()) == 1
    assert [type(e) for e in fake.responder_errors] == [KeyError]


# ------------------------------------------------------------------ concurrency


async def test_parallel_calls_overlap_on_the_server(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.latency_s = 0.3

    started = time.monotonic()
    replies = await asyncio.gather(
        *(client.messages.create(model=MODEL, max_tokens=64, messages=HELLO) for _ in range(5))
    )

    assert len(replies) == 5
    assert fake.max_in_flight == 5
    assert fake.in_flight == 0
    assert time.monotonic() - started < 1.2


async def test_wait_for_requests_returns_or_says_what_arrived(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.enqueue(text("slow", delay_s=0.2))
    call = asyncio.create_task(client.messages.create(model=MODEL, max_tokens=64, messages=HELLO))

    [seen] = await fake.wait_for_requests(1, timeout=2)
    assert seen.last_user_text == HELLO[0]["content"]
    with pytest.raises(TimeoutError, match="expected 2 requests"):
        await fake.wait_for_requests(2, timeout=0.05)
    assert (await call).content


async def test_stop_ends_hanging_requests_and_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    fake = FakeAnthropicAPI()
    await fake.start()
    fake.responder = lambda request: hang()
    sdk = AsyncAnthropic(api_key="sk-ant-dummy", base_url=fake.url, max_retries=0, timeout=30)
    call = asyncio.create_task(sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO))
    await fake.wait_for_requests(1)

    started = time.monotonic()
    await fake.stop()
    with pytest.raises((anthropic.APIConnectionError, anthropic.InternalServerError)):
        await call
    await sdk.close()

    assert time.monotonic() - started < 3
    assert fake.in_flight == 0
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    with pytest.raises(RuntimeError):
        _ = fake.url


# ------------------------------------------------------------------ streaming


async def test_streaming_text_and_tool_use(fake: FakeAnthropicAPI, client: AsyncAnthropic) -> None:
    fake.enqueue(text("A reasonably long streamed answer, chunked into deltas."))
    async with client.messages.stream(model=MODEL, max_tokens=256, messages=HELLO) as stream:
        chunks = [chunk async for chunk in stream.text_stream]
        final = await stream.get_final_message()
    assert len(chunks) > 1
    assert "".join(chunks) == "A reasonably long streamed answer, chunked into deltas."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == estimate_tokens("".join(chunks))

    async with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=HELLO,
        tools=[CLASSIFY],
        tool_choice={"type": "tool", "name": "classify"},
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert isinstance(final.content[0], ToolUseBlock)
    assert final.content[0].input["route"] == "billing"
    assert fake.requests[-1].stream is True


ANSWER = "Reset the VPN profile from Settings, then sign in again with your SSO account. " * 4


async def test_a_paced_stream_shows_its_first_token_late_then_keeps_the_rate(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.first_token_s, fake.tokens_per_s = 0.2, 400.0
    fake.enqueue(text(ANSWER))
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    async with client.messages.stream(model=MODEL, max_tokens=512, messages=HELLO) as stream:
        async for chunk in stream.text_stream:
            arrivals.append((time.monotonic() - started, chunk))
        final = await stream.get_final_message()
    finished = time.monotonic() - started

    assert "".join(chunk for _, chunk in arrivals) == ANSWER
    assert final.stop_reason == "end_turn"
    assert arrivals[0][0] >= 0.2
    written = 0
    for at, chunk in arrivals:  # each delta waits for the tokens before it
        assert at >= 0.2 + written / 4 / 400
        written += len(chunk)
    assert finished >= 0.2 + len(ANSWER) / 4 / 400

    # the same answer unstreamed arrives whole, when its stream would have ended
    fake.enqueue(text(ANSWER))
    started = time.monotonic()
    whole = await client.messages.create(model=MODEL, max_tokens=512, messages=HELLO)
    assert time.monotonic() - started >= 0.2 + len(ANSWER) / 4 / 400
    assert isinstance(whole.content[0], TextBlock) and whole.content[0].text == ANSWER


async def test_create_with_stream_true_sends_the_real_event_sequence(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.stream_chunk_chars = 40
    fake.enqueue(text(ANSWER))
    stream = await client.messages.create(
        model=MODEL, max_tokens=512, messages=HELLO, stream=True
    )
    kinds: list[str] = []
    pieces: list[str] = []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            pieces.append(event.delta.text)
    deltas = -(-len(ANSWER) // 40)
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(pieces) == ANSWER


async def test_a_stream_cut_by_an_error_event_keeps_the_words_already_sent(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.fail_stream_next(after_chunks=2)
    fake.enqueue(text("unstreamed calls leave the cut for the next stream"), text(ANSWER))
    await client.messages.create(model=MODEL, max_tokens=512, messages=HELLO)

    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as cut:
        async with client.messages.stream(model=MODEL, max_tokens=512, messages=HELLO) as stream:
            async for chunk in stream.text_stream:
                received.append(chunk)
    # the HTTP status was 200 before the error: only the event says what happened
    assert cut.value.status_code == 200
    assert isinstance(cut.value.body, dict)
    assert cut.value.body["error"]["type"] == "overloaded_error"
    assert "".join(received) == ANSWER[: 2 * fake.stream_chunk_chars]

    fake.enqueue(text(ANSWER))
    async with client.messages.stream(model=MODEL, max_tokens=512, messages=HELLO) as stream:
        assert await stream.get_final_text() == ANSWER


async def test_a_stream_cut_off_without_a_word_raises_a_protocol_error(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    fake.drop_stream_next(after_chunks=3)
    fake.fail_stream_next(after_chunks=0, error_type="api_error")
    fake.enqueue(text(ANSWER), text(ANSWER))

    events: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        stream = await client.messages.create(
            model=MODEL, max_tokens=512, messages=HELLO, stream=True
        )
        async for event in stream:
            events.append(event.type)
    assert events.count("content_block_delta") == 3 and "message_stop" not in events

    with pytest.raises(anthropic.APIStatusError) as before_any_word:
        stream = await client.messages.create(
            model=MODEL, max_tokens=512, messages=HELLO, stream=True
        )
        async for _ in stream:
            pass
    assert isinstance(before_any_word.value.body, dict)
    assert before_any_word.value.body["error"]["type"] == "api_error"
    await fake.wait_until_idle()


# ------------------------------------------------------------------ batches


async def test_batch_round_trip_through_the_sdk(
    fake: FakeAnthropicAPI, client: AsyncAnthropic
) -> None:
    def by_id(request: RecordedRequest) -> Reply:
        return text(f"triaged {request.last_user_text}")

    fake.responder = by_id
    batch = await client.messages.batches.create(
        requests=[
            {
                "custom_id": "t-1",
                "params": {"model": MODEL, "max_tokens": 64, "messages": HELLO},
            },
            {
                "custom_id": "t-2",
                "params": {"model": MODEL, "max_tokens": 64, "messages": []},
            },
        ]
    )
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2 and batch.results_url is None
    assert [item.custom_id for item in fake.batch_items] == ["t-1", "t-2"]

    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await client.messages.batches.results(batch.id)  # its retrieve is poll 1
    polled = await client.messages.batches.retrieve(batch.id)
    assert polled.processing_status == "ended" and polled.results_url is not None
    assert polled.request_counts.succeeded == 1 and polled.request_counts.errored == 1

    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    ok, failed = results["t-1"], results["t-2"]
    assert ok.type == "succeeded" and isinstance(ok.message.content[0], TextBlock)
    assert ok.message.content[0].text == f"triaged {HELLO[0]['content']}"
    assert failed.type == "errored"
    assert failed.error.error.type == "invalid_request_error"

    listed = await client.messages.batches.list()
    assert [b.id for b in listed.data] == [batch.id]
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve("msgbatch_missing")


# ------------------------------------------------------------------ schema synthesis


def test_synthesised_input_follows_refs_and_unions() -> None:
    schema = {
        "$defs": {"Route": {"type": "string", "enum": ["oncall", "docs"]}},
        "type": "object",
        "properties": {
            "route": {"$ref": "#/$defs/Route"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "count": {"type": "integer", "minimum": 3},
            "kind": {"const": "triage"},
        },
    }
    assert synthesize_input(schema) == {
        "route": "oncall",
        "note": "fake",
        "count": 3,
        "kind": "triage",
    }
