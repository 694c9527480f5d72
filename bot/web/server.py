"""The aiohttp server of `supportbot serve`: health, metrics, and the mode-specific routes on one port."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web
from sqlalchemy import text

from bot.runtime import Runtime, build_runtime
from bot.config import Config
from bot.settings import Settings
from storage import repositories as repo

log = structlog.get_logger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    try:
        async with runtime.db.sessions() as session:
            await asyncio.wait_for(session.execute(text("SELECT 1")), timeout=2.0)
    except Exception as exc:
        return web.json_response({"status": "unhealthy", "database": f"error: {type(exc).__name__}"}, status=503)
    return web.json_response({
        "status": "ok",
        "mode": runtime.settings.run_mode,
        "llm": runtime.llm.provider,
        "router": runtime.config.router.mode,
        "database": runtime.db.dialect,
        "in_flight": runtime.dispatcher.pending,
        "instance": runtime.instance_id,
    })


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    async with runtime.db.sessions() as session:
        counts = await repo.escalation_counts(session)
    for state in ("paged", "acknowledged", "resolved", "expired"):
        runtime.metrics.escalations.labels(state).set(counts.get(state, 0))
    return web.Response(body=runtime.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_web_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from bot.web.dashboard import add_dashboard_routes

    add_dashboard_routes(app, runtime)
    return app


async def serve(settings: Settings, config: Config, *, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM, then stop taking work and drain in-flight messages."""
    runtime = await build_runtime(settings, config)
    app = build_web_app(runtime)
    mode = settings.run_mode
    socket_handler = None
    if mode in ("http", "socket"):
        from bot.slack.app import attach_slack

        socket_handler = await attach_slack(app, runtime)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    runtime.dispatcher.start_background(sweep=runtime.escalations.sweep)
    await runtime.dispatcher.recover()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("serving", mode=mode, url=f"http://{host}:{port}/", llm=runtime.llm.provider)
    try:
        await stop.wait()
    finally:
        log.info("shutting_down")
        if socket_handler is not None:
            await socket_handler.close_async()
        await site.stop()
        await runtime.close()
        await runner.cleanup()
