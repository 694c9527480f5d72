"""The review dashboard: decisions with filters, conversation inspection, charts, route corrections, and the
local playground, all behind one gate (token or session cookie, CSRF on every state change)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from aiohttp import web

from bot.domain import Citation
from bot.runtime import Runtime
from bot.vocabulary import DECIDED_BY
from bot.web import charts
from bot.web.filters import FilterForm, parse_filters
from bot.web.review import call_fact, review_json, thread_view
from bot.web.security import (
    ACCESS_KEY,
    CSRF_FIELD,
    SESSION_COOKIE,
    DashboardAuth,
    Refused,
    dashboard_token,
    loopback_host,
    safe_next,
    same_origin,
)
from bot.web.stats import DashboardStats, build_stats, call_cost
from bot.web.throttle import TokenThrottle
from storage import repositories as repo
from storage import review as reviewing
from storage.models import DecisionRecord, RouteCorrection, parse_row_id

if TYPE_CHECKING:
    import jinja2

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
REVIEWER_DEFAULT = "dashboard"


class Retrainer:
    """Retrains the local router after corrections, off the request path; bursts coalesce into one more run."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.runs = 0
        self.corrections_used: int | None = None
        self.last_error: str | None = None
        self.finished_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def request(self) -> None:
        if self.running:
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="retrain-local-router")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                self.corrections_used = await self._runtime.retrain_local_router()
                self.last_error = None
            except Exception as exc:  # the next correction (or restart) trains again
                log.exception("local_router_retrain_failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.runs += 1
            self.finished_at = datetime.now(UTC)
            if not self._again:
                return

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def as_json(self) -> dict[str, Any]:
        return {"retraining": self.running, "retrain_runs": self.runs, "corrections_used": self.corrections_used,
                "last_retrain_at": self.finished_at.isoformat() if self.finished_at else None,
                "last_error": self.last_error}


@dataclass
class Dashboard:
    runtime: Runtime
    auth: DashboardAuth
    retrainer: Retrainer
    static: dict[str, tuple[bytes, str]]
    # Set when the local playground is mounted (local mode only).
    playground_enabled: bool = False

    @cached_property
    def templates(self) -> jinja2.Environment:
        """Made on the first page: a bot nobody looks at does not hold jinja2 (about 2 MB). Its templates
        are compiled on first use either way."""
        return _environment()

    @property
    def routes(self) -> list[str]:
        return self.runtime.config.route_names

    # --- the gate ----------------------------------------------------------------------------------

    def guard(self, handler: Handler, *, page: bool) -> Handler:
        """Authenticate and check CSRF on state changes (every response gets the security headers anyway)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            response = await self._enter(request, handler, page=page)
            access = request.get(ACCESS_KEY)
            if access is not None and access.new_cookie is not None:
                self.auth.set_session_cookie(request, response, access.new_cookie)
            return response

        return guarded

    async def _enter(self, request: web.Request, handler: Handler, *, page: bool) -> web.StreamResponse:
        if not self.auth.required and not loopback_host(request):
            return self.error(request, 403, "This dashboard has no SUPPORTBOT_DASHBOARD_TOKEN, so it only answers "
                                            "on 127.0.0.1 or localhost.", page=page)
        access = await self.auth.identify(request)
        if isinstance(access, Refused):
            if page and request.method in ("GET", "HEAD") and not access.tried_token:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
            return self.refused(request, access, page=page)
        request[ACCESS_KEY] = access
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            refused = await self.auth.check_csrf(request, access)
            if refused is not None:
                log.warning("dashboard_csrf_refused", path=request.path, reason=refused)
                return self.error(request, 403, refused, page=page)
        return await handler(request)

    def refused(self, request: web.Request, refused: Refused, *, page: bool) -> web.Response:
        response = self.error(request, refused.status, refused.message, page=page)
        if refused.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="supportbot"'
        if refused.retry_after_s is not None:
            response.headers["Retry-After"] = str(refused.retry_after_s)
        return response

    # --- rendering ---------------------------------------------------------------------------------

    def render(self, request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
        access = request.get(ACCESS_KEY)
        session = access.session_id if access is not None else None
        settings = self.runtime.settings
        html = self.templates.get_template(template).render(
            csrf_field=CSRF_FIELD,
            csrf_token=self.auth.csrf_token(session) if session else "",
            auth_required=self.auth.required,
            signed_in=access is not None and access.via == "session" and self.auth.required,
            playground_enabled=self.playground_enabled,
            run_mode=settings.run_mode,
            llm_provider=self.runtime.llm.provider,
            router_mode=self.runtime.config.router.mode,
            path=request.path,
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def error(self, request: web.Request, status: int, message: str, *, page: bool) -> web.Response:
        if page:
            return self.render(request, "error.html", status=status, status_code=status, message=message)
        return web.json_response({"error": message}, status=status)

    def colors(self) -> dict[str, str]:
        return charts.route_colors(self.routes)


DASHBOARD_KEY = web.AppKey("dashboard", Dashboard)


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("bot.web").joinpath("static")
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.web", "templates"),
        # Every Slack message is untrusted: escape everything, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda value: "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
    env.filters["ms"] = _duration
    env.filters["pct"] = lambda value: "–" if value is None else f"{value:.0%}"
    env.filters["usd"] = lambda value: "n/a" if value is None else f"${value:,.4f}"
    env.filters["num"] = lambda value: f"{value:,}"
    env.filters["citation"] = Citation.from_record
    return env


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _duration(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def add_dashboard_routes(app: web.Application, runtime: Runtime) -> Dashboard:
    token = dashboard_token(runtime.settings)
    throttle = None if token is None else TokenThrottle(runtime.db, runtime.clock, token,
                                                        runtime.settings.trusted_proxies)
    dashboard = Dashboard(
        runtime=runtime,
        auth=DashboardAuth(token, throttle=throttle),
        retrainer=Retrainer(runtime),
        static=_load_static(),
    )
    app[DASHBOARD_KEY] = dashboard

    async def stop_retraining(_app: web.Application) -> None:
        await dashboard.retrainer.close()

    app.on_cleanup.append(stop_retraining)
    page = dashboard.guard
    app.router.add_get("/", page(partial(_home, dashboard), page=True))
    app.router.add_get("/dashboard", page(partial(_overview, dashboard), page=True))
    app.router.add_get("/decisions", page(partial(_decisions, dashboard), page=True))
    app.router.add_get("/conversations/{id:\\d+}", page(partial(_conversation, dashboard), page=True))
    app.router.add_post("/decisions/{id:\\d+}/correction",
                        page(partial(_correct_form, dashboard), page=True))
    app.router.add_get("/api/decisions", page(partial(_api_decisions, dashboard), page=False))
    app.router.add_get("/api/conversations/{id:\\d+}",
                       page(partial(_api_conversation, dashboard), page=False))
    app.router.add_get("/api/stats", page(partial(_api_stats, dashboard), page=False))
    app.router.add_post("/api/decisions/{id:\\d+}/correction",
                        page(partial(_correct_api, dashboard), page=False))
    app.router.add_get("/api/router", page(partial(_api_router, dashboard), page=False))
    app.router.add_post("/logout", page(partial(_logout, dashboard), page=True))
    app.router.add_get("/login", partial(_login_page, dashboard))
    app.router.add_post("/login", partial(_login, dashboard))
    app.router.add_get("/static/{name}", partial(_static, dashboard))
    return dashboard



# --- pages -------------------------------------------------------------------------------------------


async def _home(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/playground" if dashboard.playground_enabled else "/dashboard")


async def _overview(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form = parse_filters(request.query, routes=dashboard.routes, now=dashboard.runtime.clock.now(),
                         default_since="7d")
    stats = await _stats(dashboard, form)
    colors = dashboard.colors()
    labels = stats.buckets.labels
    rendered = {
        "per_route": charts.stacked_bars("messages-per-route", "Messages per route", labels, stats.per_route, colors),
        "escalations": charts.rate_bars("escalation-rate", "Escalation rate", labels, stats.escalations),
        "resolution": charts.rate_bars("resolution-rate", "Resolved by the bot, of settled threads", labels,
                                       stats.resolution_rate),
        "csat": charts.rate_bars("csat", "👍 of rated answers", labels, stats.csat),
        "agreement": charts.histogram("vote-agreement", "Vote agreement", stats.agreement),
        "latency": charts.latency_bars("latency", "Latency percentiles", stats.latency),
        "cost": charts.cost_bars("cost-per-route", "Tokens and estimated cost per route", stats.usage, colors),
    }
    return dashboard.render(request, "overview.html", _filter_status(form), form=form, stats=stats,
                            charts=rendered, colors=colors, routes=dashboard.routes, decided_by_values=DECIDED_BY,
                            min_agreement=dashboard.runtime.config.voting.min_agreement,
                            step_label="hour" if stats.buckets.step.total_seconds() < 86400 else "day")


def _filter_status(form: FilterForm) -> int:
    """A page with a bad filter still shows (the errors above the list, the bad values left out), as a 400."""
    return 400 if form.errors else 200


async def _stats(dashboard: Dashboard, form: FilterForm) -> DashboardStats:
    until = form.filters.until or dashboard.runtime.clock.now()
    async with dashboard.runtime.db.sessions() as session:
        facts = await reviewing.decision_facts(session, form.filters)
        calls = await reviewing.llm_call_facts(session, since=form.filters.since, until=form.filters.until)
    return build_stats(facts, calls, since=form.filters.since, until=until, routes=dashboard.routes,
                       prices=dashboard.runtime.config.llm.prices)


async def _decisions(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form = parse_filters(request.query, routes=dashboard.routes, now=dashboard.runtime.clock.now())
    async with dashboard.runtime.db.sessions() as session:
        rows = await reviewing.query_logs(session, form.filters)
        total = await reviewing.count_logs(session, form.filters)
    pages = max(1, math.ceil(total / form.page_size))
    return dashboard.render(request, "decisions.html", _filter_status(form), form=form, rows=rows, total=total,
                            pages=pages, routes=dashboard.routes, decided_by_values=DECIDED_BY,
                            colors=dashboard.colors())


async def _conversation(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    conversation_id = parse_row_id(request.match_info["id"])
    review = None
    if conversation_id is not None:
        async with dashboard.runtime.db.sessions() as session:
            review = await reviewing.conversation_review(session, conversation_id)
    if review is None:
        return dashboard.error(request, 404, f"There is no conversation #{_shown_id(request)}.", page=True)
    prices = dashboard.runtime.config.llm.prices
    costs = {call.id: call_cost(call_fact(call), prices) for call in review.llm_calls}
    corrected = request.query.get("corrected")
    return dashboard.render(
        request, "conversation.html", review=review, thread=thread_view(review), costs=costs,
        routes=dashboard.routes, colors=dashboard.colors(), score_bars=charts.score_bars,
        corrected=parse_row_id(corrected) if corrected else None,
        playground_link=dashboard.playground_enabled and review.conversation.source == "local",
    )


# --- route corrections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectionOutcome:
    status: int
    message: str
    conversation_id: int | None = None
    old_route: str | None = None
    new_route: str | None = None


async def _correct(dashboard: Dashboard, request: web.Request, fields: Mapping[str, Any]) -> CorrectionOutcome:
    decision_id = parse_row_id(request.match_info["id"])
    route = str(fields.get("route") or "").strip()
    reviewer = " ".join(str(fields.get("reviewer") or "").split())[:64] or REVIEWER_DEFAULT
    note = str(fields.get("note") or "").strip()[:2000]
    if route not in dashboard.routes:
        return CorrectionOutcome(400, f"{route!r} is not a configured route (use one of "
                                      f"{', '.join(dashboard.routes)})")
    if decision_id is None:
        return CorrectionOutcome(404, f"There is no routing decision #{_shown_id(request)}.")
    runtime = dashboard.runtime
    async with runtime.db.sessions.begin() as session:
        current = await reviewing.current_route(session, decision_id)
        if current is None:
            return CorrectionOutcome(404, f"There is no routing decision #{decision_id}.")
        decision = await session.get(DecisionRecord, decision_id)
        assert decision is not None
        conversation_id = decision.conversation_id
        if current == route:
            return CorrectionOutcome(200, f"Decision #{decision_id} is already routed to {route}; nothing changed.",
                                     conversation_id, current, route)
        await repo.add_correction(session, RouteCorrection(
            decision_id=decision_id, old_route=current, new_route=route, reviewer=reviewer, note=note,
            created_at=runtime.clock.now()))
    log.info("route_corrected", decision_id=decision_id, old_route=current, new_route=route, reviewer=reviewer)
    dashboard.retrainer.request()
    return CorrectionOutcome(201, f"Decision #{decision_id} corrected from {current} to {route}; the local router "
                                  "is retraining with every correction.", conversation_id, current, route)


async def _correct_form(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    outcome = await _correct(dashboard, request, form)
    if outcome.status >= 400 or outcome.conversation_id is None:
        return dashboard.error(request, outcome.status, outcome.message, page=True)
    decision_id = request.match_info["id"]
    raise web.HTTPSeeOther(f"/conversations/{outcome.conversation_id}?corrected={decision_id}#decision-{decision_id}")


async def json_object(request: web.Request) -> dict[str, Any] | None:
    """The request's body as a JSON object, or None when it is not one (not JSON, nested too deep, a list)."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


async def _correct_api(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    if body is None:
        return web.json_response({"error": "send a JSON object like {\"route\": \"billing\"}"}, status=400)
    outcome = await _correct(dashboard, request, body)
    if outcome.status >= 400:
        return web.json_response({"error": outcome.message}, status=outcome.status)
    return web.json_response({"decision_id": parse_row_id(request.match_info["id"]), "old_route": outcome.old_route,
                              "route": outcome.new_route, "message": outcome.message}, status=outcome.status)


def _shown_id(request: web.Request) -> str:
    """The id as typed, cut short: an id that names no row is still quoted back, never at any length."""
    raw = request.match_info["id"]
    return raw if len(raw) <= 20 else raw[:20] + "…"


# --- JSON ------------------------------------------------------------------------------------------------


def _bad_filters(form: FilterForm) -> web.Response | None:
    if form.errors:
        return web.json_response({"error": "bad filter: " + "; ".join(form.errors)}, status=400)
    return None


async def _api_decisions(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form = parse_filters(request.query, routes=dashboard.routes, now=dashboard.runtime.clock.now())
    if (bad := _bad_filters(form)) is not None:
        return bad
    async with dashboard.runtime.db.sessions() as session:
        rows = await reviewing.query_logs(session, form.filters)
        total = await reviewing.count_logs(session, form.filters)
    return web.json_response({"total": total, "page": form.page, "limit": form.page_size,
                              "pages": max(1, math.ceil(total / form.page_size)),
                              "decisions": [row.as_json() for row in rows]})


async def _api_conversation(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    conversation_id = parse_row_id(request.match_info["id"])
    review = None
    if conversation_id is not None:
        async with dashboard.runtime.db.sessions() as session:
            review = await reviewing.conversation_review(session, conversation_id)
    if review is None:
        return web.json_response({"error": f"there is no conversation #{_shown_id(request)}"}, status=404)
    prices = dashboard.runtime.config.llm.prices
    return web.json_response(review_json(review, {c.id: call_cost(call_fact(c), prices) for c in review.llm_calls}))


async def _api_stats(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    form = parse_filters(request.query, routes=dashboard.routes, now=dashboard.runtime.clock.now(),
                         default_since="7d")
    if (bad := _bad_filters(form)) is not None:
        return bad
    stats = await _stats(dashboard, form)
    return web.json_response(stats.as_json())


async def _api_router(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    return web.json_response({"mode": dashboard.runtime.config.router.mode,
                              "threshold": dashboard.runtime.config.router.confidence_threshold,
                              **dashboard.retrainer.as_json()})


# --- login, logout, static ---------------------------------------------------------------------------------


async def _login_page(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    target = safe_next(request.query.get("next"))
    if not dashboard.auth.required:
        raise web.HTTPSeeOther(target)
    return dashboard.render(request, "login.html", next=target, failed=None)


async def _login(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    auth = dashboard.auth
    form = await request.post()
    target = safe_next(str(form.get("next") or "/"))
    if not auth.required:
        raise web.HTTPSeeOther(target)
    if not same_origin(request):
        return dashboard.error(request, 403, "the login form was posted from another site", page=True)
    refused = await auth.check_token(request, str(form.get("token") or ""))
    if refused is not None:
        response = dashboard.render(request, "login.html", status=refused.status, next=target,
                                    failed=refused.message)
        if refused.retry_after_s is not None:
            response.headers["Retry-After"] = str(refused.retry_after_s)
        return response
    response = see_other(target)
    auth.set_session_cookie(request, response, auth.new_session())
    log.info("dashboard_login", client=auth.throttle.client(request) if auth.throttle else request.remote)
    return response


async def _logout(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    response = see_other("/login" if dashboard.auth.required else "/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def _static(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    found = dashboard.static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type,
                        charset="utf-8", headers={"Cache-Control": "public, max-age=300"})

