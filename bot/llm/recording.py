"""Wraps any LLM so every call — answer or error — lands in `llm_calls` and the metrics."""

from __future__ import annotations

import time
from dataclasses import replace

import structlog

from bot.clock import Clock
from bot.errors import LLMError
from bot.llm.base import LLM, LLMRequest, LLMResponse
from bot.metrics import Metrics
from storage import repositories as repo
from storage.engine import Database
from storage.models import LLMCall

log = structlog.get_logger(__name__)


class RecordingLLM:
    def __init__(self, inner: LLM, db: Database, clock: Clock, metrics: Metrics) -> None:
        self.inner = inner
        self.provider = inner.provider
        self._db = db
        self._clock = clock
        self._metrics = metrics

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        try:
            response = await self.inner.complete(request)
        except LLMError as exc:
            latency_ms = (time.perf_counter() - started) * 1000
            await self._record(request, None, latency_ms, f"{exc.kind}: {exc}")
            self._metrics.llm_call(request.purpose, request.model, latency_ms, None, error=exc.kind)
            raise
        latency_ms = response.latency_ms or (time.perf_counter() - started) * 1000
        call_id = await self._record(request, response, latency_ms, None)
        self._metrics.llm_call(request.purpose, response.model, latency_ms, response.usage, error=None)
        return replace(response, call_id=call_id, latency_ms=latency_ms)

    async def _record(
        self, request: LLMRequest, response: LLMResponse | None, latency_ms: float, error: str | None
    ) -> int | None:
        usage = response.usage if response is not None else None
        call = LLMCall(
            conversation_id=request.conversation_id,
            purpose=request.purpose,
            provider=response.provider if response is not None else self.provider,
            model=response.model if response is not None else request.model,
            route=request.route,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cache_read_tokens=usage.cache_read_tokens if usage else 0,
            cache_creation_tokens=usage.cache_creation_tokens if usage else 0,
            latency_ms=latency_ms,
            stop_reason=response.stop_reason if response is not None else None,
            error=error[:2000] if error else None,
            created_at=self._clock.now(),
        )
        try:
            async with self._db.sessions.begin() as session:
                return await repo.add_llm_call(session, call)
        except Exception:
            # Losing one call record must not lose the user's answer.
            log.exception("llm_call_not_recorded", purpose=request.purpose)
            return None
