"""The dashboard's SLA page: response times per route against their targets, and threads close to a breach."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from aiohttp import web

from bot.domain import SLA_METRIC_NAMES, duration_text
from bot.sla.report import sla_report
from bot.vocabulary import SlaMetric
from bot.web.dashboard import Dashboard
from bot.web.filters import parse_filters
from storage import sla as clocks

NEAR_BREACH_LIMIT = 50


@dataclass(frozen=True)
class NearBreach:
    """A running clock past its warning time: how long is left (negative: late by that much)."""

    conversation_id: int
    escalation_id: int | None
    metric: SlaMetric
    route: str | None
    channel: str
    thread_ts: str
    deadline: datetime
    left_s: float

    @property
    def label(self) -> str:
        return SLA_METRIC_NAMES[self.metric]

    @property
    def left(self) -> str:
        return f"{duration_text(self.left_s)} left" if self.left_s >= 0 else f"late by {duration_text(-self.left_s)}"

    def as_json(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "escalation_id": self.escalation_id, "metric": self.metric,
                "route": self.route, "channel": self.channel, "thread_ts": self.thread_ts,
                "deadline": self.deadline.isoformat(), "left_s": round(self.left_s)}


def add_sla_routes(app: web.Application, dashboard: Dashboard) -> None:
    app.router.add_get("/sla", dashboard.guard(partial(_page, dashboard), page=True))
    app.router.add_get("/api/sla", dashboard.guard(partial(_api, dashboard), page=False))


async def _numbers(dashboard: Dashboard, request: web.Request) -> tuple[Any, list[Any], list[NearBreach]]:
    runtime = dashboard.runtime
    now = runtime.clock.now()
    form = parse_filters(request.query, routes=dashboard.routes, now=now, default_since="7d")
    async with runtime.db.sessions() as session:
        started = await clocks.clocks_since(session, form.filters.since)
        running = await clocks.running_near_deadline(session, now=now, limit=NEAR_BREACH_LIMIT)
    near = [NearBreach(clock.conversation_id, clock.escalation_id, cast(SlaMetric, clock.metric), clock.route,
                       channel, thread_ts, clock.deadline, (clock.deadline - now).total_seconds())
            for clock, channel, thread_ts in running if clock.deadline is not None]
    return form, sla_report(started, runtime.sla.policy, now), near


async def _page(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form, scopes, near = await _numbers(dashboard, request)
    return dashboard.render(request, "sla.html", 400 if form.errors else 200, form=form, scopes=scopes, near=near,
                            metric_names=SLA_METRIC_NAMES, span=_span)


async def _api(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form, scopes, near = await _numbers(dashboard, request)
    if form.errors:
        return web.json_response({"errors": form.errors}, status=400)
    return web.json_response({"scopes": [scope.as_json(form.filters.since) for scope in scopes],
                              "near_breach": [item.as_json() for item in near]})


def _span(seconds: float | None) -> str:
    return "–" if seconds is None else duration_text(seconds)
