"""Hybrid routing: rules first, then the local classifier, and Claude only when the local one is unsure."""

from __future__ import annotations

import time

from bot.router.base import RouteDecision, RoutingContext
from bot.router.llm import LLMRouter
from bot.router.local import LocalRouter
from bot.router.rules import RulesRouter


class HybridRouter:
    name = "hybrid"

    def __init__(self, rules: RulesRouter, local: LocalRouter, llm: LLMRouter, threshold: float) -> None:
        self.rules = rules
        self.local = local
        self.llm = llm
        self.threshold = threshold

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        started = time.perf_counter()
        by_rule = self.rules.match(text)
        if by_rule is not None:
            return by_rule
        guess = await self.local.route(text, context)
        if guess.confidence >= self.threshold:
            return guess
        asked = await self.llm.attempt(text, context)
        elapsed = (time.perf_counter() - started) * 1000
        if isinstance(asked, RouteDecision):
            return RouteDecision(
                route=asked.route,
                confidence=asked.confidence,
                decided_by="llm",
                reason=f"{asked.reason} (local guess {guess.route} {guess.confidence:.2f} was "
                f"below {self.threshold:.2f})",
                scores=guess.scores,
                llm_calls=asked.llm_calls,
                latency_ms=elapsed,
            )
        # Claude gave nothing usable: the local guess stands, and the log says so.
        return RouteDecision(
            route=guess.route,
            confidence=guess.confidence,
            decided_by="hybrid",
            reason=f"{asked}; kept the local guess {guess.route} {guess.confidence:.2f}",
            scores=guess.scores,
            llm_calls=1,
            latency_ms=elapsed,
        )
