"""`supportbot serve` as an operator starts it: the local router it trains in a child process at start knows the
reviewers' corrections, and a message a reviewer corrected is routed as corrected."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import Config
from bot.domain import InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from bot.web.server import build_web_app
from tests.web.conftest import TOKEN

BEARER = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = "the app crashes every time I upload a file"

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _correct_a_decision(database_url: str, config: Config) -> None:
    """A first run answers QUESTION and a reviewer corrects its route to sales through the dashboard's API."""
    settings = Settings(database_url=database_url, supportbot_dashboard_token=TOKEN)  # type: ignore[arg-type]
    runtime = await build_runtime(settings, config, chat=LocalChat(), instance_id="first-run")
    try:
        result = await runtime.pipeline.handle(InboundMessage(
            source="slack", team="T0TEAM", channel="CSUPPORT", user="UANN", text=QUESTION, ts="1800000000.000001",
            event_id="EvFirst"))
        assert result.route == "technical"
        runner = aiohttp.web.AppRunner(build_web_app(runtime))
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/api/decisions", headers=BEARER) as response:
                    [decision] = (await response.json())["decisions"]
                async with http.post(f"http://127.0.0.1:{port}/api/decisions/{decision['id']}/correction",
                                     json={"route": "sales"}, headers=BEARER) as response:
                    assert response.status == 201
        finally:
            await runner.cleanup()
    finally:
        await runtime.close()


async def test_serve_starts_with_a_router_that_knows_the_corrections(tmp_path: Path, config: Config) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    await _correct_a_decision(database_url, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_"))}
    env |= {"DATABASE_URL": database_url, "SUPPORTBOT_DASHBOARD_TOKEN": TOKEN}
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", "--port", str(port), env=env, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await _wait_healthy(http, base, server)
            async with http.post(f"{base}/api/playground/messages", json={"text": QUESTION}, headers=BEARER) as sent:
                assert sent.status == 202
                thread = (await sent.json())["thread_ts"]
            decision = await _decision(http, f"{base}/api/playground/state?thread={thread}")
        assert decision["route"] == "sales" and "reviewer corrected" in decision["reason"]
    finally:
        if server.returncode is None:
            server.terminate()
        await asyncio.wait_for(server.wait(), 60)
    written = log.read_text(errors="replace")
    assert "corrections=1" in written and "Traceback" not in written


async def _wait_healthy(http: aiohttp.ClientSession, base: str, server: asyncio.subprocess.Process) -> None:
    for _ in range(1200):
        if server.returncode is not None:
            pytest.fail(f"serve exited with {server.returncode}")
        try:
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("serve did not answer /healthz")


async def _decision(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    for _ in range(600):
        async with http.get(url, headers=BEARER) as response:
            state = await response.json()
        customer = [item for item in (state["thread"] or {}).get("items", []) if item["kind"] == "customer"]
        if customer and customer[0].get("decision"):
            decision: dict[str, Any] = customer[0]["decision"]
            return decision
        await asyncio.sleep(0.1)
    pytest.fail("the message was not routed")
