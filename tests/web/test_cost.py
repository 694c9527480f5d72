"""Estimated cost of LLM calls, as the dashboard shows it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.config import load_config
from bot.web.stats import call_cost
from storage.review import LLMCallFact


def fact(provider: str, model: str, *, tokens_in: int, tokens_out: int, cache_read: int = 0) -> LLMCallFact:
    return LLMCallFact(created_at=datetime(2026, 1, 5, tzinfo=UTC), purpose="reply", model=model, route="billing",
                       input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=cache_read,
                       cache_creation_tokens=0, latency_ms=10.0, failed=False, provider=provider)


def test_claude_calls_are_priced_from_the_config_and_offline_ones_are_free() -> None:
    prices = load_config().llm.prices
    # claude-haiku-4-5: $1 per million input tokens, $5 output, $0.10 cache reads.
    priced = call_cost(fact("anthropic", "claude-haiku-4-5", tokens_in=1_000_000, tokens_out=200_000,
                            cache_read=500_000), prices)
    assert priced == pytest.approx(1.0 + 1.0 + 0.05)
    assert call_cost(fact("offline", "claude-haiku-4-5", tokens_in=1_000_000, tokens_out=1), prices) == 0.0
    assert call_cost(fact("anthropic", "some-unpriced-model", tokens_in=10, tokens_out=10), prices) is None
