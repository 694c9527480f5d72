"""Prometheus metrics of one process, in a registry of its own so tests can run many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.llm.base import Usage

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Response times run from seconds (the bot) to days (a resolution).
_SLA_BUCKETS_S = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400)


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
            "supportbot_background_passes_total", "Passes of the inbox recovery and the escalation and SLA sweeps",
            ["job"], registry=self.registry,
        )
        self.sla_seconds = Histogram(
            "supportbot_sla_seconds", "Measured first response, first human response and resolution times "
            "(business hours where they apply)", ["metric"], buckets=_SLA_BUCKETS_S, registry=self.registry,
        )
        self.sla_warnings = Counter(
            "supportbot_sla_warnings_total", "Warnings posted before a target was missed", ["metric"],
            registry=self.registry,
        )
        self.sla_breaches = Counter(
            "supportbot_sla_breaches_total", "Targets missed", ["metric"], registry=self.registry,
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
