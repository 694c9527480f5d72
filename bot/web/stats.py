"""Aggregates behind the dashboard's charts: messages per route over time, escalation rate, vote
agreement, latency percentiles, tokens and estimated cost per route, and how threads ended (resolution rate,
CSAT from 👍/👎)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.vocabulary import SETTLED
from storage.review import DecisionFact, LLMCallFact

ROUTING = "(routing)"
AGREEMENT_BINS = (("≤20%", 0.2), ("21–40%", 0.4), ("41–60%", 0.6), ("61–80%", 0.8), ("81–99%", 0.999),
                  ("100%", 1.0))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks, like numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Buckets:
    starts: list[datetime]
    step: timedelta

    @property
    def labels(self) -> list[str]:
        fmt = "%H:%M" if self.step < timedelta(days=1) else "%b %d"
        return [start.strftime(fmt) for start in self.starts]

    def index(self, moment: datetime) -> int | None:
        if not self.starts or moment < self.starts[0]:
            return None
        found = int((moment - self.starts[0]) / self.step)
        return found if found < len(self.starts) else None


def buckets_for(facts: Sequence[DecisionFact], since: datetime | None, until: datetime) -> Buckets:
    """Hourly buckets for up to two days, daily beyond; from `since` (or the oldest fact) to `until`."""
    start = since or min((fact.created_at for fact in facts), default=until - timedelta(days=1))
    span = until - start
    step = timedelta(hours=1) if span <= timedelta(hours=48) else timedelta(days=1)
    if step == timedelta(hours=1):
        first = start.replace(minute=0, second=0, microsecond=0)
    else:
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    count = max(1, min(400, math.ceil((until - first) / step)))
    return Buckets([first + step * i for i in range(count)], step)


def messages_per_route(facts: Sequence[DecisionFact], buckets: Buckets, routes: Sequence[str]) -> dict[str, list[int]]:
    series = {route: [0] * len(buckets.starts) for route in routes}
    for fact in facts:
        index = buckets.index(fact.created_at)
        if index is not None:
            series.setdefault(fact.route, [0] * len(buckets.starts))[index] += 1
    return {route: counts for route, counts in series.items() if any(counts)} or series


def escalation_rate(facts: Sequence[DecisionFact], buckets: Buckets) -> list[tuple[int, int]]:
    """(messages, escalated) per bucket."""
    totals = [[0, 0] for _ in buckets.starts]
    for fact in facts:
        index = buckets.index(fact.created_at)
        if index is not None:
            totals[index][0] += 1
            totals[index][1] += int(fact.escalated)
    return [(total, escalated) for total, escalated in totals]


def agreement_histogram(facts: Sequence[DecisionFact]) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for fact in facts:
        if fact.vote_agreement is None:
            continue
        for label, upper in AGREEMENT_BINS:
            if fact.vote_agreement <= upper + 1e-9:
                counts[label] += 1
                break
    return [(label, counts[label]) for label, _ in AGREEMENT_BINS]


@dataclass(frozen=True)
class LatencyRow:
    label: str
    count: int
    p50: float
    p90: float
    p99: float


def latency_percentiles(facts: Sequence[DecisionFact], routes: Sequence[str]) -> list[LatencyRow]:
    """p50/p90/p99 of receipt-to-reply latency (ms), for all messages and per route."""
    by_route: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for fact in facts:
        if fact.latency_ms is not None:
            by_route[fact.route].append(fact.latency_ms)
            every.append(fact.latency_ms)
    rows = []
    for label, values in [("all", every), *((route, by_route[route]) for route in routes)]:
        if values:
            rows.append(LatencyRow(label, len(values), *(percentile(values, q) or 0.0 for q in (50, 90, 99))))
    return rows


@dataclass(frozen=True)
class UsageRow:
    route: str
    calls: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    # None when some model of this route has no price in the config.
    cost_usd: float | None
    p50_ms: float | None
    p90_ms: float | None
    models: tuple[str, ...]

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens


def call_cost(call: LLMCallFact, prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """US dollars for one call from `[llm] prices` (per million tokens); cache writes cost 1.25x input.
    The offline provider's calls are free (their token counts are estimates)."""
    if call.provider == "offline":
        return 0.0
    price = prices.get(call.model)
    if price is None:
        return None
    input_price = price.get("input", 0.0)
    return (call.input_tokens * input_price + call.output_tokens * price.get("output", 0.0)
            + call.cache_read_tokens * price.get("cache_read", input_price * 0.1)
            + call.cache_creation_tokens * price.get("cache_write", input_price * 1.25)) / 1_000_000


def usage_per_route(calls: Sequence[LLMCallFact], prices: Mapping[str, Mapping[str, float]],
                    routes: Sequence[str]) -> list[UsageRow]:
    """Tokens, estimated cost and latency per route; routing calls (no route yet) get their own row."""
    grouped: dict[str, list[LLMCallFact]] = defaultdict(list)
    for call in calls:
        grouped[call.route or ROUTING].append(call)
    order = {route: index for index, route in enumerate([*routes, ROUTING])}
    rows = []
    for route in sorted(grouped, key=lambda r: (order.get(r, len(order)), r)):
        members = grouped[route]
        costs = [call_cost(call, prices) for call in members]
        latencies = [call.latency_ms for call in members]
        rows.append(UsageRow(
            route=route, calls=len(members), failed=sum(call.failed for call in members),
            input_tokens=sum(c.input_tokens for c in members), output_tokens=sum(c.output_tokens for c in members),
            cache_read_tokens=sum(c.cache_read_tokens for c in members),
            cache_creation_tokens=sum(c.cache_creation_tokens for c in members),
            cost_usd=None if any(cost is None for cost in costs) else sum(c for c in costs if c is not None),
            p50_ms=percentile(latencies, 50), p90_ms=percentile(latencies, 90),
            models=tuple(sorted({c.model for c in members})),
        ))
    return rows


@dataclass(frozen=True)
class Summary:
    messages: int
    escalated: int
    voted: int
    corrected: int
    llm_calls: int
    cost_usd: float
    unpriced_calls: int
    mean_agreement: float | None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.messages if self.messages else None


def summarize(facts: Sequence[DecisionFact], calls: Sequence[LLMCallFact],
              prices: Mapping[str, Mapping[str, float]]) -> Summary:
    costs = [call_cost(call, prices) for call in calls]
    agreements = [fact.vote_agreement for fact in facts if fact.vote_agreement is not None]
    return Summary(
        messages=len(facts), escalated=sum(f.escalated for f in facts), voted=sum(f.voted for f in facts),
        corrected=sum(f.decided_by == "correction" for f in facts), llm_calls=len(calls),
        cost_usd=sum(c for c in costs if c is not None), unpriced_calls=sum(c is None for c in costs),
        mean_agreement=sum(agreements) / len(agreements) if agreements else None,
    )


@dataclass(frozen=True)
class ResolutionRow:
    """How threads ended and how answers were rated, for all routes ("all") or one (a thread counts for the
    route of its first message; a rating for the route of the answer it rates)."""

    label: str
    threads: int
    resolved_by_bot: int
    resolved_by_human: int
    abandoned: int
    # A person was paged: the escalation is still open, or was resolved by them.
    escalated: int
    good: int
    bad: int

    @property
    def settled(self) -> int:
        return self.resolved_by_bot + self.resolved_by_human + self.abandoned

    @property
    def resolution_rate(self) -> float | None:
        """The share of settled threads the bot resolved."""
        return self.resolved_by_bot / self.settled if self.settled else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.threads if self.threads else None

    @property
    def csat(self) -> float | None:
        """The share of 👍 among rated answers."""
        return self.good / (self.good + self.bad) if self.good + self.bad else None

    def as_json(self) -> dict[str, Any]:
        return {"route": self.label, "threads": self.threads, "settled": self.settled,
                "resolved_by_bot": self.resolved_by_bot, "resolved_by_human": self.resolved_by_human,
                "abandoned": self.abandoned, "escalated": self.escalated,
                "resolution_rate": _round(self.resolution_rate, 4), "escalation_rate": _round(self.escalation_rate, 4),
                "feedback_good": self.good, "feedback_bad": self.bad, "csat": _round(self.csat, 4)}


def first_of_each_thread(facts: Sequence[DecisionFact]) -> list[DecisionFact]:
    """One fact per thread: its earliest decision among `facts`."""
    first: dict[int, DecisionFact] = {}
    for fact in facts:
        known = first.get(fact.conversation_id)
        if known is None or fact.created_at < known.created_at:
            first[fact.conversation_id] = fact
    return list(first.values())


def resolution_rows(facts: Sequence[DecisionFact], routes: Sequence[str]) -> list[ResolutionRow]:
    threads = first_of_each_thread(facts)

    def row(label: str, route: str | None) -> ResolutionRow:
        ended = Counter(t.resolution for t in threads if route is None or t.route == route)
        rated = Counter(f.feedback for f in facts if route is None or f.route == route)
        return ResolutionRow(label, sum(ended.values()), ended["resolved_by_bot"], ended["resolved_by_human"],
                             ended["abandoned"], ended["escalated"] + ended["resolved_by_human"], rated["good"],
                             rated["bad"])

    rows = [row("all", None), *(row(route, route) for route in routes)]
    return [r for r in rows if r.label == "all" or r.threads or r.good + r.bad]


def resolution_over_time(facts: Sequence[DecisionFact], buckets: Buckets) -> list[tuple[int, int]]:
    """(settled threads, resolved by the bot) per bucket of the thread's first message."""
    totals = [[0, 0] for _ in buckets.starts]
    for thread in first_of_each_thread(facts):
        index = buckets.index(thread.created_at)
        if index is not None and thread.resolution in SETTLED:
            totals[index][0] += 1
            totals[index][1] += int(thread.resolution == "resolved_by_bot")
    return [(settled, by_bot) for settled, by_bot in totals]


def csat_over_time(facts: Sequence[DecisionFact], buckets: Buckets) -> list[tuple[int, int]]:
    """(rated answers, 👍) per bucket."""
    totals = [[0, 0] for _ in buckets.starts]
    for fact in facts:
        index = buckets.index(fact.created_at)
        if index is not None and fact.feedback is not None:
            totals[index][0] += 1
            totals[index][1] += int(fact.feedback == "good")
    return [(rated, good) for rated, good in totals]


@dataclass(frozen=True)
class DashboardStats:
    summary: Summary
    buckets: Buckets
    per_route: dict[str, list[int]]
    escalations: list[tuple[int, int]]
    agreement: list[tuple[str, int]]
    latency: list[LatencyRow]
    usage: list[UsageRow]
    resolution: list[ResolutionRow]
    resolution_rate: list[tuple[int, int]]
    csat: list[tuple[int, int]]

    def as_json(self) -> dict[str, Any]:
        summary = self.summary
        return {
            "summary": {
                "messages": summary.messages, "escalated": summary.escalated,
                "escalation_rate": _round(summary.escalation_rate, 4), "voted": summary.voted,
                "corrected": summary.corrected, "mean_vote_agreement": _round(summary.mean_agreement, 4),
                "llm_calls": summary.llm_calls, "estimated_cost_usd": round(summary.cost_usd, 6),
                "unpriced_llm_calls": summary.unpriced_calls,
            },
            "buckets": [start.isoformat() for start in self.buckets.starts],
            "bucket_seconds": int(self.buckets.step.total_seconds()),
            "messages_per_route": self.per_route,
            "escalation_rate": [
                {"messages": total, "escalated": escalated,
                 "rate": _round(escalated / total if total else None, 4)}
                for total, escalated in self.escalations
            ],
            "vote_agreement": [{"bin": label, "count": count} for label, count in self.agreement],
            "latency_ms": [
                {"route": row.label, "count": row.count, "p50": round(row.p50, 1), "p90": round(row.p90, 1),
                 "p99": round(row.p99, 1)} for row in self.latency
            ],
            "llm_usage": [
                {"route": row.route, "calls": row.calls, "failed": row.failed, "input_tokens": row.input_tokens,
                 "output_tokens": row.output_tokens, "cache_read_tokens": row.cache_read_tokens,
                 "cache_creation_tokens": row.cache_creation_tokens, "models": list(row.models),
                 "estimated_cost_usd": _round(row.cost_usd, 6), "p50_ms": _round(row.p50_ms, 1),
                 "p90_ms": _round(row.p90_ms, 1)} for row in self.usage
            ],
            "resolution": [row.as_json() for row in self.resolution],
            "resolution_rate": [{"settled": settled, "resolved_by_bot": by_bot,
                                 "rate": _round(by_bot / settled if settled else None, 4)}
                                for settled, by_bot in self.resolution_rate],
            "csat": [{"rated": rated, "good": good, "rate": _round(good / rated if rated else None, 4)}
                     for rated, good in self.csat],
        }


def build_stats(facts: Sequence[DecisionFact], calls: Sequence[LLMCallFact], *, since: datetime | None,
                until: datetime, routes: Sequence[str], prices: Mapping[str, Mapping[str, float]]) -> DashboardStats:
    buckets = buckets_for(facts, since, until)
    return DashboardStats(
        summary=summarize(facts, calls, prices), buckets=buckets,
        per_route=messages_per_route(facts, buckets, routes), escalations=escalation_rate(facts, buckets),
        agreement=agreement_histogram(facts), latency=latency_percentiles(facts, routes),
        usage=usage_per_route(calls, prices, routes), resolution=resolution_rows(facts, routes),
        resolution_rate=resolution_over_time(facts, buckets), csat=csat_over_time(facts, buckets),
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
