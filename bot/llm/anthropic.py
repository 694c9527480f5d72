"""Claude through the official async SDK: cached system prompts, a bounded retry budget, typed answers.

Retries are ours, not the SDK's (the client runs with `max_retries=0`): the SDK honours any
`retry-after`, even one of several minutes, and a Slack user must not wait that long. Here each
attempt has a hard time limit (`[llm] timeout_s`), a failed attempt is retried at most
`[llm] max_retries` times, a server-requested wait longer than `[llm] max_retry_wait_s` ends the
retries at once (the fallback model gets its turn), and nothing outlives the call's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic
import structlog

try:  # the HTTP client the SDK is built on: httpx2 in its newer releases, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _http  # type: ignore[no-redef]
from anthropic.types import Message

from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.errors import LLMBadOutput, LLMError, LLMUnavailable
from bot.llm.base import RETRYABLE_KINDS, BatchProgress, LLMRequest, LLMResponse, TextSink, Usage
from bot.settings import Settings

log = structlog.get_logger(__name__)

# Below this, another attempt cannot finish: give up rather than start it.
MIN_ATTEMPT_S = 0.05
# Backoff without a retry-after: 0.5 s, 1 s, 2 s, ... with jitter, never above max_retry_wait_s.
BACKOFF_BASE_S = 0.5
# Message Batches: at most this many requests per batch (the API allows 100,000 / 256 MB).
BATCH_CHUNK = 10_000
# What the SDK imports on its first request, not before: anyio's asyncio backend (for httpcore's locks) and
# OpenTelemetry's propagators (for the trace headers).
DEFERRED_MODULES = ("anyio._backends._asyncio", "opentelemetry.propagate")


@dataclass(frozen=True)
class BatchPolling:
    """How a batch is polled: first wait, doubling up to `max_interval_s`, for at most `timeout_s`."""

    first_interval_s: float = 2.0
    max_interval_s: float = 60.0
    timeout_s: float = 24 * 3600.0


@dataclass(frozen=True)
class _Failure:
    kind: str
    message: str
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def load_what_the_sdk_defers() -> None:
    """Do at start-up what the SDK leaves to its first request, where it blocked the event loop for ~100 ms
    (more on a busy machine) in the middle of the first burst: importing modules, and building the
    validator of `Message`, which pydantic defers because of its forward references."""
    for module in DEFERRED_MODULES:
        with contextlib.suppress(ImportError):  # a later SDK may not use it: nothing to load then
            importlib.import_module(module)
    Message.model_rebuild()


class AnthropicLLM:
    provider = "anthropic"
    supports_batch = True

    def __init__(
        self, settings: Settings, config: Config, *, clock: Clock | None = None,
        client: anthropic.AsyncAnthropic | None = None, batch_polling: BatchPolling | None = None,
    ) -> None:
        if settings.anthropic_api_key is None:
            raise ValueError("AnthropicLLM needs ANTHROPIC_API_KEY")
        self._llm = config.llm
        self._clock = clock or SystemClock()
        self._batch_polling = batch_polling or BatchPolling()
        self._client = client or anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url or None,
            timeout=config.llm.timeout_s,
            max_retries=0,
            # A body of the wrong shape is an error, not a Message full of None.
            _strict_response_validation=True,
        )
        load_what_the_sdk_defers()

    # --- one call -------------------------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = self._clock.monotonic()
        budget = request.deadline_s if request.deadline_s is not None else self._llm.deadline_s
        retries = request.max_retries if request.max_retries is not None else self._llm.max_retries
        params = message_params(request)
        failures: list[_Failure] = []
        while True:
            remaining = budget - (self._clock.monotonic() - started)
            attempt_timeout = min(self._llm.timeout_s, remaining)
            if attempt_timeout < MIN_ATTEMPT_S:
                raise self._give_up(request, failures, "no time left in the call's deadline")
            try:
                async with asyncio.timeout(attempt_timeout):
                    if request.stream_to is not None and request.tool is None:
                        message = await self._streamed(params, request.stream_to, attempt_timeout,
                                                       restart=bool(failures))
                    else:
                        message = await self._client.messages.create(**params, timeout=attempt_timeout)
            except Exception as exc:  # every failure is classified; none escapes as a raw SDK error
                failure = classify(exc, timeout_s=attempt_timeout)
                failures.append(failure)
            else:
                return parse_message(message, request, latency_ms=(self._clock.monotonic() - started) * 1000)
            if not failure.retryable:
                raise self._give_up(request, failures, None)
            if len(failures) > retries:
                raise self._give_up(request, failures, None)
            wait = self._wait_before_retry(len(failures), failure)
            if wait > self._llm.max_retry_wait_s:
                raise self._give_up(request, failures, f"the server asked to wait {wait:.0f}s, longer than "
                                    f"the {self._llm.max_retry_wait_s:.0f}s this bot waits")
            if budget - (self._clock.monotonic() - started) - wait < MIN_ATTEMPT_S:
                raise self._give_up(request, failures, "no time left in the call's deadline for a retry")
            log.info("llm_retry", model=request.model, purpose=request.purpose, kind=failure.kind,
                     attempt=len(failures), wait_s=round(wait, 2))
            await self._clock.sleep(wait)

    async def _streamed(self, params: dict[str, Any], sink: TextSink, timeout_s: float, *, restart: bool) -> Message:
        """One attempt as a stream: each text delta goes to `sink` as it arrives."""
        if restart:
            await sink.restart()
        async with self._client.messages.stream(**params, timeout=timeout_s) as stream:
            async for delta in stream.text_stream:
                await sink.write(delta)
            try:
                return await stream.get_final_message()
            except AssertionError as exc:  # the SDK's own check: the stream ended without a whole message
                raise anthropic.APIResponseValidationError(
                    stream.response, None, message="the stream ended before the message was complete") from exc

    def _wait_before_retry(self, failed_attempts: int, failure: _Failure) -> float:
        if failure.retry_after is not None:
            return max(0.0, float(failure.retry_after))
        backoff: float = BACKOFF_BASE_S * 2.0 ** (failed_attempts - 1)
        return min(backoff, self._llm.max_retry_wait_s) * (1 - 0.25 * random.random())

    def _give_up(self, request: LLMRequest, failures: list[_Failure], why: str | None) -> LLMUnavailable:
        if not failures:
            return LLMUnavailable(f"{request.model}: {why}", kind="deadline")
        last = failures[-1]
        attempts = f" after {len(failures)} attempts" if len(failures) > 1 else ""
        message = f"{request.model}: {last.message}{attempts}" + (f"; {why}" if why else "")
        return LLMUnavailable(message, kind=last.kind)

    # --- many calls as one Message Batch ----------------------------------------------------------

    async def complete_batch(
        self, requests: Sequence[LLMRequest], *, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> list[LLMResponse | LLMError]:
        """Run `requests` through the Message Batches API: half price, answers within 24 h, not seconds."""
        started = self._clock.monotonic()
        # Batch bookkeeping calls are not on a user's critical path: the SDK's own retries are fine.
        client = self._client.with_options(max_retries=max(2, self._llm.max_retries))
        results: list[LLMResponse | LLMError | None] = [None] * len(requests)
        batch_ids: list[tuple[str, int]] = []
        try:
            for offset in range(0, len(requests), BATCH_CHUNK):
                chunk = requests[offset: offset + BATCH_CHUNK]
                batch = await client.messages.batches.create(requests=[
                    {"custom_id": f"r{offset + i}", "params": message_params(request)}  # type: ignore[typeddict-item]
                    for i, request in enumerate(chunk)
                ])
                batch_ids.append((batch.id, len(chunk)))
                log.info("llm_batch_created", batch_id=batch.id, requests=len(chunk))
            await self._wait_for_batches(client, batch_ids, len(requests), on_progress)
            for batch_id, _ in batch_ids:
                async for line in await client.messages.batches.results(batch_id):
                    index = int(line.custom_id.removeprefix("r"))
                    if not 0 <= index < len(requests):
                        continue
                    results[index] = self._batch_result(line.result, requests[index], started)
        except LLMError as exc:
            return [result or exc for result in results]
        except Exception as exc:  # the batch as a whole failed: every unanswered item says why
            failure = classify(exc, timeout_s=self._llm.timeout_s)
            ids = ", ".join(batch_id for batch_id, _ in batch_ids) or "none created"
            error = LLMUnavailable(f"message batch failed ({ids}): {failure.message}", kind=failure.kind)
            return [result or error for result in results]
        missing = LLMUnavailable("no result for this request in the batch", kind="expired")
        return [result or missing for result in results]

    async def _wait_for_batches(
        self, client: anthropic.AsyncAnthropic, batch_ids: list[tuple[str, int]], total: int,
        on_progress: Callable[[BatchProgress], None] | None,
    ) -> None:
        polling = self._batch_polling
        started = self._clock.monotonic()
        interval = polling.first_interval_s
        pending = {batch_id for batch_id, _ in batch_ids}
        done_by_batch = {batch_id: 0 for batch_id, _ in batch_ids}
        while True:
            for batch_id in sorted(pending):
                batch = await client.messages.batches.retrieve(batch_id)
                counts = batch.request_counts
                done_by_batch[batch_id] = counts.succeeded + counts.errored + counts.canceled + counts.expired
                if batch.processing_status == "ended":
                    pending.discard(batch_id)
            if on_progress is not None:
                on_progress(BatchProgress(done=sum(done_by_batch.values()), total=total,
                                          status="ended" if not pending else "in_progress"))
            if not pending:
                return
            if self._clock.monotonic() - started > polling.timeout_s:
                for batch_id in pending:
                    await client.messages.batches.cancel(batch_id)
                raise LLMUnavailable(f"message batch not finished after {polling.timeout_s:.0f}s; canceled",
                                     kind="expired")
            await self._clock.sleep(interval)
            interval = min(interval * 2, polling.max_interval_s)

    def _batch_result(self, result: Any, request: LLMRequest, started: float) -> LLMResponse | LLMError:
        latency_ms = (self._clock.monotonic() - started) * 1000
        if result.type == "succeeded":
            try:
                response = parse_message(result.message, request, latency_ms=latency_ms)
            except LLMError as exc:
                return exc
            return LLMResponse(text=response.text, model=response.model, provider="anthropic-batch",
                               tool_input=response.tool_input, usage=response.usage,
                               stop_reason=response.stop_reason, latency_ms=latency_ms)
        if result.type == "errored":
            error = getattr(result.error, "error", None)
            error_type = str(getattr(error, "type", "api_error"))
            return LLMUnavailable(f"{request.model}: {getattr(error, 'message', error_type)}",
                                  kind=_ERROR_KINDS.get(error_type, "server_error"))
        return LLMUnavailable(f"{request.model}: batch request {result.type}", kind=str(result.type))

    async def close(self) -> None:
        await self._client.close()


# The API's error types (in batch results and in a stream's `error` event) as failure kinds.
_ERROR_KINDS: Mapping[str, str] = {
    "invalid_request_error": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
}


def message_params(request: LLMRequest) -> dict[str, Any]:
    """The Messages API body for `request`; the system prompt is a cacheable block."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.system:
        # The system prompt (and the tool before it) is the same for every message of a route or
        # purpose: one cache breakpoint at its end makes later calls read it from the prompt cache.
        params["system"] = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
    # `request.temperature` is not sent: this SDK's Messages API has no sampling parameters, so
    # voting samples differ through the model's own sampling and routing relies on the forced tool.
    if request.tool is not None:
        params["tools"] = [{"name": request.tool.name, "description": request.tool.description,
                            "input_schema": dict(request.tool.input_schema)}]
        params["tool_choice"] = {"type": "tool", "name": request.tool.name}
    return params


def parse_message(message: Message, request: LLMRequest, *, latency_ms: float) -> LLMResponse:
    """A typed response, or LLMBadOutput when the answer is not the tool call that was forced."""
    text = "".join(block.text for block in message.content if block.type == "text")
    tool_input: Mapping[str, Any] | None = None
    if request.tool is not None:
        calls = [b for b in message.content if b.type == "tool_use" and b.name == request.tool.name]
        if not calls or not isinstance(calls[0].input, dict):
            said = f" and said {text[:120]!r}" if text else ""
            raise LLMBadOutput(f"{request.model} did not call {request.tool.name} "
                               f"(stop_reason={message.stop_reason}){said}")
        if message.stop_reason == "max_tokens":
            raise LLMBadOutput(f"{request.model}'s {request.tool.name} call was cut off at max_tokens")
        tool_input = calls[0].input
    usage = message.usage
    return LLMResponse(
        text=text,
        model=message.model or request.model,
        provider=AnthropicLLM.provider,
        tool_input=tool_input,
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_creation_tokens=usage.cache_creation_input_tokens or 0,
        ),
        stop_reason=message.stop_reason,
        latency_ms=latency_ms,
    )


def classify(exc: BaseException, *, timeout_s: float) -> _Failure:
    """An SDK (or transport) exception as a failure kind, a readable message and the wait it asked for."""
    if isinstance(exc, TimeoutError | anthropic.APITimeoutError):
        return _Failure("timeout", f"no answer within {timeout_s:g}s")
    if isinstance(exc, anthropic.APIConnectionError | _http.TransportError):
        # The SDK wraps failures to connect, but not a connection cut in the middle of a streamed body.
        return _Failure("connection", f"connection failed: {exc}")
    if isinstance(exc, anthropic.APIResponseValidationError):
        return _Failure("bad_response", f"the API sent a body that is not a Messages response: {exc.message}")
    if isinstance(exc, json.JSONDecodeError):
        # This SDK raises the decoder's error as is for a truncated or garbled body.
        return _Failure("bad_response", f"the API sent a body that is not valid JSON: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        retry_after = _retry_after(exc)
        if status == 200:
            # An `error` event in the middle of a streamed answer: its type says what happened.
            kind = _ERROR_KINDS.get(_error_type(exc), "server_error")
            return _Failure(kind, f"the answer's stream broke off: {detail}", retry_after)
        if status == 429:
            return _Failure("rate_limited", f"rate limited (HTTP 429): {detail}", retry_after)
        if status == 529:
            return _Failure("overloaded", f"overloaded (HTTP 529): {detail}", retry_after)
        if status == 408:
            return _Failure("timeout", f"request timeout (HTTP 408): {detail}", retry_after)
        if status >= 500 or status == 409:
            return _Failure("server_error", f"server error (HTTP {status}): {detail}", retry_after)
        if status in (401, 403):
            return _Failure("auth", f"refused (HTTP {status}): {detail}; check ANTHROPIC_API_KEY")
        return _Failure("bad_request", f"request refused (HTTP {status}): {detail}")
    if isinstance(exc, anthropic.AnthropicError):
        return _Failure("bad_response", f"{type(exc).__name__}: {exc}")
    # Anything else is a bug on our side (a wrong argument, say): it must surface, not be retried.
    raise exc


def _error_type(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    error = body.get("error") if isinstance(body, Mapping) else None
    return str(error.get("type")) if isinstance(error, Mapping) else "api_error"


def _error_detail(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])[:300]
    return str(exc.message)[:300]


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue
    return None
