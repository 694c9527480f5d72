"""Wraps any LLM so every call — answer or error — lands in `llm_calls` and the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from bot.clock import Clock
from bot.errors import LLMError
from bot.llm.base import LLM, BatchProgress, LLMRequest, LLMResponse, LLMWrapper
from bot.metrics import Metrics
from storage import repositories as repo
from storage.engine import Database

log = structlog.get_logger(__name__)


class RecordingLLM(LLMWrapper):
    def __init__(self, inner: LLM, db: Database, clock: Clock, metrics: Metrics) -> None:
        super().__init__(inner)
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[list[int | None]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = self._clock.monotonic()
        try:
            response = await self.inner.complete(request)
        except LLMError as exc:
            latency_ms = (self._clock.monotonic() - started) * 1000
            await self._record([self._row(request, None, latency_ms, exc)])
            self._metrics.llm_call(request.purpose, request.model, latency_ms, None, error=exc.kind)
            raise
        latency_ms = response.latency_ms or (self._clock.monotonic() - started) * 1000
        [call_id] = await self._record([self._row(request, response, latency_ms, None)])
        self._metrics.llm_call(request.purpose, response.model, latency_ms, response.usage, error=None)
        return replace(response, call_id=call_id, latency_ms=latency_ms)

    async def complete_batch(
        self, requests: Sequence[LLMRequest], *, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> list[LLMResponse | LLMError]:
        started = self._clock.monotonic()
        results = await super().complete_batch(requests, on_progress=on_progress)
        elapsed_ms = (self._clock.monotonic() - started) * 1000
        rows = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, LLMError):
                rows.append(self._row(request, None, elapsed_ms, result, provider=f"{self.provider}-batch"))
                self._metrics.llm_call(request.purpose, request.model, elapsed_ms, None, error=result.kind)
            else:
                rows.append(self._row(request, result, result.latency_ms or elapsed_ms, None))
                self._metrics.llm_call(request.purpose, result.model, result.latency_ms or elapsed_ms,
                                       result.usage, error=None)
        call_ids = await self._record(rows)
        return [result if isinstance(result, LLMError) else replace(result, call_id=call_id)
                for result, call_id in zip(results, call_ids, strict=True)]

    def _row(
        self, request: LLMRequest, response: LLMResponse | None, latency_ms: float, error: LLMError | None,
        *, provider: str | None = None,
    ) -> dict[str, Any]:
        """The `llm_calls` row of one call."""
        usage = response.usage if response is not None else None
        return {
            "conversation_id": request.conversation_id,
            "purpose": request.purpose,
            "provider": (response.provider if response is not None else provider or self.provider)[:16],
            "model": (response.model if response is not None else request.model)[:64],
            "route": request.route,
            "input_tokens": usage.input_tokens if usage else 0,
            "output_tokens": usage.output_tokens if usage else 0,
            "cache_read_tokens": usage.cache_read_tokens if usage else 0,
            "cache_creation_tokens": usage.cache_creation_tokens if usage else 0,
            "latency_ms": latency_ms,
            "stop_reason": response.stop_reason if response is not None else None,
            "error": f"{error.kind}: {error}"[:2000] if error is not None else None,
            "created_at": self._clock.now(),
        }

    async def _record(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """Row ids once written. Calls that finish together (voting samples, triage) share one transaction:
        whoever arrives while a write is under way joins the next one instead of queueing for its own."""
        waiter: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, waiter))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await asyncio.shield(waiter)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._db.sessions.begin() as session:
                    new_ids = iter(await repo.add_llm_calls(session, [row for rows, _ in batch for row in rows]))
                ids: list[list[int | None]] = [[next(new_ids) for _ in rows] for rows, _ in batch]
            except Exception:
                # Losing call records must never cost a user the answer.
                purposes = sorted({row["purpose"] for rows, _ in batch for row in rows})
                log.exception("llm_call_not_recorded", purposes=purposes)
                ids = [[None] * len(rows) for rows, _ in batch]
            for (_, waiter), written in zip(batch, ids, strict=True):
                if not waiter.done():
                    waiter.set_result(list(written))
