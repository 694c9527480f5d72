"""Response times for people reading them: per route and overall, as `supportbot sla` and the dashboard show.

For each metric: how many clocks were met (`count`), p50/p90 of their counted time (business hours where
they apply), the target, the share met in time among clocks whose outcome is known, breaches, and how many
clocks still run. A breach is a deadline passed without the clock being met by it, whether or not the sweep
has recorded it yet, so the numbers do not depend on when the sweep last ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from bot.sla.policy import SlaPolicy
from bot.vocabulary import SLA_METRICS, SlaMetric
from bot.web.stats import percentile
from storage.models import SlaClock


@dataclass(frozen=True)
class MetricStats:
    count: int
    p50_s: float | None
    p90_s: float | None
    target_s: float | None
    share_met: float | None
    breaches: int
    open: int

    def as_json(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {"count": self.count, "p50_s": rounded(self.p50_s), "p90_s": rounded(self.p90_s),
                "target_s": self.target_s, "share_met": rounded(self.share_met), "breaches": self.breaches,
                "open": self.open}


@dataclass(frozen=True)
class ScopeStats:
    """One route's numbers (`route` None: clocks of threads never routed), or every route's (`overall`)."""

    route: str | None
    overall: bool
    metrics: dict[SlaMetric, MetricStats]

    def as_json(self, since: datetime | None) -> dict[str, Any]:
        return {"scope": "overall" if self.overall else "route", "route": self.route,
                "since": since.isoformat() if since is not None else None,
                **{metric: stats.as_json() for metric, stats in self.metrics.items()}}


def breached(clock: SlaClock, now: datetime) -> bool:
    """The deadline passed with the clock neither met nor stopped by then."""
    deadline = clock.deadline
    if deadline is None or deadline > now:
        return False
    return all(moment is None or moment > deadline for moment in (clock.met_at, clock.stopped_at))


def elapsed_s(clock: SlaClock, policy: SlaPolicy) -> float | None:
    """The counted time of a met clock (as the sweep wrote it, or worked out now if it has not yet)."""
    if clock.met_at is None:
        return None
    if clock.elapsed_s is not None:
        return clock.elapsed_s
    return policy.elapsed_s(cast(SlaMetric, clock.metric), clock.started_at, clock.met_at)


def metric_stats(clocks: Iterable[SlaClock], target_s: float | None, policy: SlaPolicy, now: datetime) -> MetricStats:
    rows = list(clocks)
    times = [t for t in (elapsed_s(clock, policy) for clock in rows) if t is not None]
    breaches = sum(breached(clock, now) for clock in rows)
    in_time = sum(clock.met_at is not None and clock.deadline is not None and clock.met_at <= clock.deadline
                  for clock in rows)
    running = sum(clock.met_at is None and clock.stopped_at is None for clock in rows)
    return MetricStats(count=len(times), p50_s=percentile(times, 50), p90_s=percentile(times, 90),
                       target_s=target_s, share_met=in_time / (in_time + breaches) if in_time + breaches else None,
                       breaches=breaches, open=running)


def sla_report(clocks: Sequence[SlaClock], policy: SlaPolicy, now: datetime) -> list[ScopeStats]:
    """One ScopeStats per route seen (in name order, unrouted last), then the overall one."""
    named = sorted({clock.route for clock in clocks if clock.route is not None})
    routes: list[str | None] = [*named, *([None] if any(clock.route is None for clock in clocks) else [])]

    def scope(route: str | None, overall: bool) -> ScopeStats:
        chosen = clocks if overall else [clock for clock in clocks if clock.route == route]
        return ScopeStats(route, overall, {
            metric: metric_stats((clock for clock in chosen if clock.metric == metric),
                                 policy.target_s(metric, route=route, channel=None), policy, now)
            for metric in SLA_METRICS})

    return [scope(route, False) for route in routes] + [scope(None, True)]
