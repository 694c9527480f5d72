"""Tiered routing: rules for the unmistakable, the local topic and severity models next, Claude when they are unsure."""

from __future__ import annotations

import dataclasses
import time

from bot.errors import LLMError
from bot.router.base import RouteDecision, RoutingContext
from bot.router.llm import LLMRouter, unusable
from bot.router.local import LocalRouter
from bot.router.rules import RulesRouter


class RulesThenLocal:
    """Mode "local": the configured rules, then the local models; severity overrides a topic either way."""

    name = "local"

    def __init__(self, rules: RulesRouter, local: LocalRouter) -> None:
        self.rules = rules
        self.local = local

    @property
    def escalation_route(self) -> str | None:
        return self.local.classifier.escalation_route

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        started = time.perf_counter()
        guess = await self.local.route(text, context)
        rule = self.rules.match(text)
        if rule is None:
            return guess
        escalation = self.escalation_route
        topic = _topic(guess, escalation)
        if rule.route == escalation or escalation is None or guess.route != escalation:
            # The rule stands; the log keeps the topic the models saw.
            return dataclasses.replace(rule, reason=f"{rule.reason}; topic {topic}",
                                       latency_ms=(time.perf_counter() - started) * 1000)
        # A topic rule matched, but the severity detector says a person must come now.
        return dataclasses.replace(guess, reason=f"{guess.reason} (and the rule route {rule.route})",
                                   latency_ms=(time.perf_counter() - started) * 1000)


def _topic(decision: RouteDecision, escalation: str | None) -> str:
    """The most likely route other than the escalation route, with its share, e.g. "billing 0.81"."""
    topics = {route: p for route, p in decision.scores.items() if route != escalation}
    if not topics:
        return "unknown"
    best = max(topics, key=topics.__getitem__)
    total = sum(topics.values())
    return f"{best} {topics[best] / total:.2f}" if total > 0 else best


def deferral(decision: RouteDecision, *, threshold: float, severity_threshold: float,
             escalation_route: str | None) -> str | None:
    """Why hybrid mode would ask the LLM about this rules-or-local decision, or None when it would not."""
    if decision.decided_by == "rules":
        return None
    if decision.confidence < threshold:
        return f"local confidence {decision.confidence:.2f} is below {threshold:.2f}"
    if escalation_route is not None and decision.route != escalation_route:
        severity = decision.scores.get(escalation_route, 0.0)
        if severity >= severity_threshold:
            return f"severity {severity:.2f} is not clearly low (asks from {severity_threshold:.2f})"
    return None


class HybridRouter:
    name = "hybrid"

    def __init__(self, rules: RulesRouter, local: LocalRouter, llm: LLMRouter, threshold: float,
                 severity_threshold: float = 1.0) -> None:
        self.first = RulesThenLocal(rules, local)
        self.llm = llm
        self.threshold = threshold
        self.severity_threshold = severity_threshold

    def deferral(self, decision: RouteDecision) -> str | None:
        return deferral(decision, threshold=self.threshold, severity_threshold=self.severity_threshold,
                        escalation_route=self.first.escalation_route)

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        started = time.perf_counter()
        guess = await self.first.route(text, context)
        why = self.deferral(guess)
        if why is None:
            return guess
        try:
            asked = await self.llm.attempt(text, context)
        except LLMError as exc:
            # Claude gave nothing usable: the local guess stands, and the log says so.
            return RouteDecision(
                route=guess.route,
                confidence=guess.confidence,
                decided_by="hybrid",
                reason=f"{unusable(exc)}; kept the local guess {guess.route} {guess.confidence:.2f}",
                scores=guess.scores,
                llm_calls=1,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        return RouteDecision(
            route=asked.route,
            confidence=asked.confidence,
            decided_by="llm",
            reason=f"{asked.reason} (asked because the {why}; local guess {guess.route} {guess.confidence:.2f})",
            scores=guess.scores,
            llm_calls=asked.llm_calls,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
