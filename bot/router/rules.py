"""Deterministic routing by regular expressions from the config, highest priority first."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from bot.config import Config, RuleConfig
from bot.router.base import RouteDecision, RoutingContext


@dataclass(frozen=True)
class CompiledRule:
    label: str
    route: str
    priority: int
    confidence: float
    regex: re.Pattern[str]


def compile_rules(rules: list[RuleConfig]) -> tuple[CompiledRule, ...]:
    compiled = [
        CompiledRule(
            label=rule.name or f"rule {index + 1}",
            route=rule.route,
            priority=rule.priority,
            confidence=rule.confidence,
            regex=re.compile(rule.pattern),
        )
        for index, rule in enumerate(rules)
    ]
    # Stable sort: among equal priorities the order in the file decides.
    return tuple(sorted(compiled, key=lambda rule: -rule.priority))


class RulesRouter:
    """Returns the first matching rule's route; `match` is None when no rule fires."""

    name = "rules"

    def __init__(self, config: Config) -> None:
        self._rules = compile_rules(config.router.rules)
        self._fallback = config.fallback_route

    def match(self, text: str) -> RouteDecision | None:
        started = time.perf_counter()
        for rule in self._rules:
            found = rule.regex.search(text)
            if found:
                return RouteDecision(
                    route=rule.route,
                    confidence=rule.confidence,
                    decided_by="rules",
                    reason=f"rule {rule.label!r} matched {found.group(0)!r}",
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
        return None

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        decision = self.match(text)
        if decision is not None:
            return decision
        return RouteDecision(
            route=self._fallback,
            confidence=0.0,
            decided_by="rules",
            reason=f"no rule matched; fallback route {self._fallback!r}",
        )
