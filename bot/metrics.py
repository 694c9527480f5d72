"""Prometheus metrics of one process, in a registry of its own so tests can run many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.llm.base import Usage

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "supportbot_messages_total", "Messages finished, by route and outcome",
            ["route", "outcome"], registry=self.registry,
        )
        self.duplicates = Counter(
            "supportbot_duplicate_events_total", "Events dropped as duplicates or retries",
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "supportbot_ack_latency_seconds", "Time from receiving a Slack request to acking it",
            buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.pipeline_latency = Histogram(
            "supportbot_pipeline_latency_seconds", "Time from receipt to reply or escalation",
            ["outcome"], buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.llm_latency = Histogram(
            "supportbot_llm_latency_seconds", "LLM call latency", ["purpose", "model"],
            buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.llm_tokens = Counter(
            "supportbot_llm_tokens_total", "LLM tokens", ["model", "kind"], registry=self.registry
        )
        self.llm_errors = Counter(
            "supportbot_llm_errors_total", "LLM calls that failed", ["purpose", "kind"],
            registry=self.registry,
        )
        self.llm_circuit_open = Gauge(
            "supportbot_llm_circuit_open", "1 while calls to this model fail at once after repeated failures",
            ["model"], registry=self.registry,
        )
        self.escalations = Gauge(
            "supportbot_escalations", "Escalations by state", ["state"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "supportbot_queue_depth", "Messages accepted and not yet finished by this process",
            registry=self.registry,
        )
        self.background_passes = Counter(
            "supportbot_background_passes_total", "Passes of the inbox recovery and the escalation sweep",
            ["job"], registry=self.registry,
        )
        self.in_flight = Gauge(
            "supportbot_in_flight", "Messages being processed right now", registry=self.registry
        )

    def llm_call(
        self, purpose: str, model: str, latency_ms: float, usage: Usage | None, *, error: str | None
    ) -> None:
        self.llm_latency.labels(purpose, model).observe(latency_ms / 1000)
        if error is not None:
            self.llm_errors.labels(purpose, error).inc()
        if usage is not None:
            self.llm_tokens.labels(model, "input").inc(usage.input_tokens)
            self.llm_tokens.labels(model, "output").inc(usage.output_tokens)
            self.llm_tokens.labels(model, "cache_read").inc(usage.cache_read_tokens)
            self.llm_tokens.labels(model, "cache_creation").inc(usage.cache_creation_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
