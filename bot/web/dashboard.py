"""The review dashboard's routes (the full dashboard and playground build on these)."""

from __future__ import annotations

from aiohttp import web

from bot.runtime import Runtime
from storage import repositories as repo


def add_dashboard_routes(app: web.Application, runtime: Runtime) -> None:
    async def index(request: web.Request) -> web.Response:
        async with runtime.db.sessions() as session:
            rows = await repo.query_logs(session, repo.LogFilter(limit=50))
        return web.json_response({"decisions": [row.as_json() for row in rows]})

    app.router.add_get("/api/decisions", index)
