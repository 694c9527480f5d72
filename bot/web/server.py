"""The aiohttp server of `supportbot serve`: health, metrics, and the mode-specific routes on one port."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import platform
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from sqlalchemy import text

from bot.clock import Clock
from bot.config import Config
from bot.errors import ConfigError, SupportbotError
from bot.llm.base import LLM
from bot.local_chat import LocalChat
from bot.ports import ChatPort
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.web.security import dashboard_token, security_headers_on_every_response
from storage import review

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

log = structlog.get_logger(__name__)

RUNTIME_KEY = web.AppKey("runtime", Runtime)
# Set when shutdown begins: /healthz answers 503 "draining" so a load balancer stops sending here.
DRAINING_KEY = web.AppKey("draining", asyncio.Event)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME_KEY]
    if request.app[DRAINING_KEY].is_set():
        return web.json_response({"status": "draining", "in_flight": runtime.dispatcher.pending,
                                  "instance": runtime.instance_id}, status=503)
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
        counts = await review.escalation_counts(session)
    for state in ("paged", "acknowledged", "resolved", "expired"):
        runtime.metrics.escalations.labels(state).set(counts.get(state, 0))
    return web.Response(body=runtime.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_web_app(runtime: Runtime, *, playground: LocalChat | None = None) -> web.Application:
    """Probes, the dashboard, and in local mode the playground on the chat the runtime posts to."""
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.on_response_prepare.append(security_headers_on_every_response)
    app[RUNTIME_KEY] = runtime
    app[DRAINING_KEY] = asyncio.Event()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from bot.web.dashboard import add_dashboard_routes
    from bot.web.playground import add_playground_routes
    from bot.web.sla import add_sla_routes

    dashboard = add_dashboard_routes(app, runtime)
    add_sla_routes(app, dashboard)
    add_playground_routes(app, dashboard, playground)
    return app


@dataclass
class RunningServer:
    """The started server of `supportbot serve`: one runtime, one aiohttp site, and Slack when configured."""

    runtime: Runtime
    app: web.Application
    host: str
    port: int
    # Undoes start_server in reverse: what started last stops first.
    shutdown: AsyncExitStack
    slack: SlackBot | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Say "draining" on /healthz, stop Socket Mode, drain in-flight messages, then stop HTTP and close.

        HTTP stays up while draining: a late event is still written to the inbox and acked (the next
        start or another replica answers it) instead of being refused, and probes see the 503."""
        log.info("shutting_down")
        await self.shutdown.aclose()


async def migrate_in_child_process(settings: Settings) -> None:
    """`supportbot db upgrade` in a child process: Alembic's ~10 MB of modules never load into the server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "db", "upgrade", env={**os.environ, "DATABASE_URL": settings.database_url},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        detail = lines[-1].removeprefix("error: ").removeprefix("migration failed: ") if lines else "no output"
        raise SupportbotError(f"database migration failed: {detail}")


async def start_server(
    settings: Settings, config: Config, *, host: str, port: int, clock: Clock | None = None,
    llm: LLM | None = None, instance_id: str | None = None, in_children: bool = False,
    before_listening: Callable[[], None] | None = None,
) -> RunningServer:
    """Build the runtime (with the Slack transport in http/socket mode) and start serving; `port=0` picks one.

    With `in_children` the migrations run in a child process (Alembic never loads into the server; the local
    router always trains in one); `before_listening` runs once everything is built and
    warmed up, just before the port opens."""
    dashboard_token(settings)  # a blank or short token stops the start before anything is built
    mode = settings.run_mode
    if in_children:
        await migrate_in_child_process(settings)
    local_chat = LocalChat(clock) if mode == "local" else None
    chat: ChatPort | None = local_chat
    if mode in ("http", "socket"):
        from bot.slack.transport import open_slack_chat

        chat = await open_slack_chat(settings, config)
    # Start-up in order; each step registers its undoing, so shutdown (or a failed start) runs them backwards.
    shutdown = AsyncExitStack()
    slack: SlackBot | None = None
    try:
        runtime = await shutdown.enter_async_context(open_runtime(
            settings, config, chat=chat, clock=clock, llm=llm, instance_id=instance_id, migrate=not in_children))
        problem = runtime.escalations.paging_problem() if mode in ("http", "socket") else None
        if problem is not None:
            # In Slack an escalation tells the customer a person is coming: refuse a config that can page nobody
            # (local mode, where the playground answers pages, is the place to try the bot without one).
            raise ConfigError(config.source, "escalation", problem)
        app = build_web_app(runtime, playground=local_chat)
        if mode in ("http", "socket"):
            from bot.slack.app import attach_slack

            slack = await attach_slack(app, runtime)
            shutdown.push_async_callback(slack.close_async)  # a start that fails after this disconnects too
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        shutdown.push_async_callback(runner.cleanup)
        # The default executor starts its first thread on first use, and the loop waits for it to start: the
        # first DNS lookup and the Anthropic SDK's first request (it resolves the platform in a thread) both do.
        await asyncio.to_thread(platform.uname)
        if before_listening is not None:
            before_listening()
        site = web.TCPSite(runner, host, port)
        await site.start()
        shutdown.push_async_callback(site.stop)
        # Stopping: /healthz says draining, Socket Mode stops receiving, then messages in flight finish while
        # HTTP stays up (late events are acked into the inbox for the next start).
        shutdown.push_async_callback(runtime.drain)
        if slack is not None:
            shutdown.push_async_callback(slack.close_async)
        shutdown.callback(app[DRAINING_KEY].set)
        await runtime.start()
    except BaseException:
        await shutdown.aclose()
        raise
    bound_port = int(runner.addresses[0][1]) if port == 0 else port
    log.info("serving", mode=mode, url=f"http://{host}:{bound_port}/", llm=runtime.llm.provider)
    return RunningServer(runtime=runtime, app=app, host=host, port=bound_port, shutdown=shutdown, slack=slack)


def freeze_startup_objects() -> None:
    """Keep what start-up built (config, classifier, ORM, Bolt) out of the garbage collector's full passes.

    Those objects live as long as the process; scanning them made each full collection a ~100 ms pause
    that held up every Slack ack in flight at that moment. Then the memory start-up used and freed (training
    the local router, mostly) goes back to the system instead of staying in the allocator's free lists."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # glibc only; elsewhere nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def serve(settings: Settings, config: Config, *, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM, then stop taking work and drain in-flight messages."""
    # Frozen before the port opens: a full collection (~0.5 s on a busy machine) must not hold up the first acks.
    server = await start_server(settings, config, host=host, port=port, in_children=True,
                                before_listening=freeze_startup_objects)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
