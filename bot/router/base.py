"""What every router returns: one configured route, a confidence, which tier decided, and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

DecidedBy = Literal["rules", "local", "llm", "hybrid", "correction"]


@dataclass(frozen=True)
class RouteDecision:
    route: str
    confidence: float
    decided_by: DecidedBy
    reason: str
    # Per-route scores of the tier that decided (empty for rules).
    scores: Mapping[str, float] = field(default_factory=dict)
    llm_calls: int = 0
    latency_ms: float = 0.0


@dataclass(frozen=True)
class RoutingContext:
    """What a router may look at besides the text: the thread so far, and where to log LLM calls."""

    history: tuple[str, ...] = ()
    conversation_id: int | None = None


class Router(Protocol):
    name: str

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision: ...
