"""A circuit breaker per model: while a model is down, calls to it fail at once instead of each one
spending its retries and deadline on it.

After `[llm] circuit_failures` calls in a row to one model end unavailable (429/529/5xx, timeouts,
connection errors, a spent deadline), calls to that model fail at once with kind `circuit_open` for
`circuit_cooldown_s`. Then one call is let through as a probe; its success closes the circuit, its
failure opens it for another cool-down. It sits under the fallback step, so a route whose model is down
goes straight to the fallback model, and in a full outage the user gets the honest note and a person in
moments rather than after a minute. Calls refused here never reached a model and are not in `llm_calls`;
the metrics count them as errors of kind `circuit_open`.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from bot.clock import Clock
from bot.config import LLMSection
from bot.errors import LLMError, LLMUnavailable
from bot.llm.base import LLM, LLMRequest, LLMResponse, LLMWrapper
from bot.metrics import Metrics

log = structlog.get_logger(__name__)

# A request the API refused as malformed says nothing about the model's health.
_NOT_AN_OUTAGE = frozenset({"bad_request"})


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float | None = None
    probing: bool = False


class CircuitBreaker(LLMWrapper):
    """Message batches pass straight through: they are not urgent, and their failures are reported per item."""

    def __init__(self, inner: LLM, settings: LLMSection, clock: Clock, metrics: Metrics) -> None:
        super().__init__(inner)
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._circuits: dict[str, _Circuit] = {}

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._settings.circuit_failures == 0:
            return await self.inner.complete(request)
        circuit = self._circuits.setdefault(request.model, _Circuit())
        probe = False
        if circuit.open_until is not None:
            wait_s = circuit.open_until - self._clock.monotonic()
            if wait_s > 0 or circuit.probing:
                self._metrics.llm_errors.labels(request.purpose, "circuit_open").inc()
                raise LLMUnavailable(
                    f"{request.model} failed {circuit.failures} times in a row; not asked again for "
                    f"{max(wait_s, 0):.0f} s", kind="circuit_open")
            probe = circuit.probing = True
        try:
            response = await self.inner.complete(request)
        except LLMUnavailable as exc:
            if exc.kind not in _NOT_AN_OUTAGE:
                self._failed(request.model, circuit, exc)
            raise
        except LLMError:
            self._answered(request.model, circuit)  # the model answered, just not usefully
            raise
        finally:
            if probe:
                circuit.probing = False
        self._answered(request.model, circuit)
        return response

    def _failed(self, model: str, circuit: _Circuit, exc: LLMUnavailable) -> None:
        circuit.failures += 1
        if circuit.failures < self._settings.circuit_failures:
            return
        if circuit.open_until is None:
            log.warning("llm_circuit_opened", model=model, failures=circuit.failures, kind=exc.kind,
                        cooldown_s=self._settings.circuit_cooldown_s)
        circuit.open_until = self._clock.monotonic() + self._settings.circuit_cooldown_s
        self._metrics.llm_circuit_open.labels(model).set(1)

    def _answered(self, model: str, circuit: _Circuit) -> None:
        if circuit.open_until is not None:
            log.info("llm_circuit_closed", model=model, after_failures=circuit.failures)
            self._metrics.llm_circuit_open.labels(model).set(0)
        circuit.failures, circuit.open_until = 0, None
