"""The fallback step: when a route's model stays unavailable, ask `[llm] fallback_model` once, within one deadline.

It wraps the circuit breaker and, under it, the recording LLM, so the log shows the truth: a failed call
on the first model and, when it helped, a second call on the fallback model. When both fail, the error
says what each one did and the pipeline escalates to a person with an honest note.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from bot.clock import Clock
from bot.config import LLMSection
from bot.errors import LLMError, LLMUnavailable
from bot.llm.base import LLM, NO_FALLBACK_KINDS, LLMRequest, LLMResponse, LLMWrapper

log = structlog.get_logger(__name__)


class FallbackLLM(LLMWrapper):
    """Batches have no fallback: failed items are reported, and a batch job is not urgent."""

    def __init__(self, inner: LLM, settings: LLMSection, clock: Clock) -> None:
        super().__init__(inner)
        self._settings = settings
        self._clock = clock

    async def complete(self, request: LLMRequest) -> LLMResponse:
        fallback = self._settings.fallback_model
        deadline_s = request.deadline_s if request.deadline_s is not None else self._settings.deadline_s
        if not fallback or fallback == request.model:
            return await self.inner.complete(replace(request, deadline_s=deadline_s))
        started = self._clock.monotonic()
        # Keep one attempt's worth of time for the fallback model, whatever the first one does.
        reserve = min(self._settings.timeout_s, deadline_s / 2)
        try:
            return await self.inner.complete(replace(request, deadline_s=deadline_s - reserve))
        except LLMUnavailable as first:
            if first.kind in NO_FALLBACK_KINDS:
                raise
            left = deadline_s - (self._clock.monotonic() - started)
            if request.stream_to is not None:
                await request.stream_to.restart()
            log.warning("llm_fallback", model=request.model, fallback=fallback, purpose=request.purpose,
                        kind=first.kind, error=str(first)[:300])
            try:
                return await self.inner.complete(
                    replace(request, model=fallback, deadline_s=left, max_retries=0))
            except LLMError as second:
                raise LLMUnavailable(f"{first}; the fallback model failed too: {second}", kind=first.kind) from second
