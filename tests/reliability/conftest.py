"""Real `supportbot serve` processes for the reliability suite, with the fakes of Slack and Anthropic in the test.

Each child is started as an operator starts it (`python -m bot.cli serve --port P`, configured only through
its environment and a TOML file), its output goes to a file, and whatever is still running at the end of a
test is killed: no test leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from storage.engine import open_database
from storage.models import InboundEvent
from tests.conftest import BOT_TOKEN
from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage
from tests.slack.conftest import (  # noqa: F401  (a fixture shared with the Slack tests)
    CUSTOMER,
    ONCALL,
    PAGES,
    STAFF,
    SUPPORT,
    slack_config,
)

START_TIMEOUT_S = 90.0  # a hang guard, not a speed check: replicas start together on a shared 2-core machine
STOP_TIMEOUT_S = 10.0

# The built-in routes with a support channel, on-call, fast LLM budgets and short re-pages; `extra` on top.
BASE_TOML = f"""
[bot]
support_channels = ["{SUPPORT}"]
staff = ["{STAFF}"]

[escalation]
oncall = ["{ONCALL}"]
channel = "{PAGES}"
{{escalation}}

[llm]
timeout_s = 2
max_retries = 2
deadline_s = 15
max_retry_wait_s = 0.2
"""

# Texts the shipped router sends to each persona (no rule, no pleasantry); billing ones are voted on.
QUESTIONS = (
    "the app crashes every time I upload a file",
    "how do I reset my password, the link expired",
    "I was charged twice this month for the same invoice",
    "can I add five more seats to our team plan?",
    "the API returns 401 even though my key is correct",
    "how much is the enterprise plan?",
    "the export button does nothing in Firefox",
    "where can I download last month's invoice?",
    "webhooks stopped firing after we rotated the secret",
    "is there a way to change the language of the interface?",
)
ESCALATING = "This is unacceptable, my lawyer will hear about this"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServeProcess:
    """One `supportbot serve` child: start, probe, SIGTERM, SIGKILL, and what it printed."""

    name: str
    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    # The command line, when not `python -m bot.cli serve --host H --port P` (e.g. the Dockerfile's CMD).
    argv: list[str] | None = None
    process: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.cwd / f"{self.name}.log"

    async def start(self) -> None:
        assert self.process is None or self.process.returncode is not None, f"{self.name} is running"
        self.runs += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- run {self.runs}\n".encode())
            argv = self.argv or [sys.executable, "-m", "bot.cli", "serve", "--host", self.host,
                                 "--port", str(self.port)]
            self.process = await asyncio.create_subprocess_exec(
                *argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)

    async def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
            while True:
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return dict(await response.json())
                await asyncio.sleep(0.1)

    async def background_passes(self) -> float:
        """How many inbox recovery passes this process has made (its /metrics counter)."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as response:
            text = await response.text()
        found = re.search(r'^supportbot_background_passes_total\{job="recover"\} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    async def wait_for_passes(self, count: int, timeout_s: float = 15.0) -> None:
        """Wait until the process has made `count` more recovery passes: by then, any work left over (a second
        attempt, a retry) would have been picked up."""
        target = await self.background_passes() + count
        async with asyncio.timeout(timeout_s):
            while True:  # polled over HTTP: the counter lives in another process
                if await self.background_passes() >= target:
                    return
                await asyncio.sleep(0.05)

    def signal(self, number: int) -> None:
        assert self.process is not None and self.process.returncode is None, f"{self.name} is not running"
        self.process.send_signal(number)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self.signal(signal.SIGKILL)

    async def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time; safe on a process that already ended."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def serve_env(
    *, database_url: str, config_path: Path, instance_id: str, slack: FakeSlackAPI | None = None,
    anthropic: FakeAnthropicAPI | None = None, lease_s: float = 3.0, recovery_interval_s: float = 0.5,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment an operator would give one replica; none of the developer's own settings leak in."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SLACK_", "ANTHROPIC_", "DATABASE_URL", "SUPPORTBOT_"))}
    env.update({
        "DATABASE_URL": database_url,
        "SUPPORTBOT_CONFIG": str(config_path),
        "SUPPORTBOT_INSTANCE_ID": instance_id,
        "SUPPORTBOT_LEASE_S": str(lease_s),
        "SUPPORTBOT_RECOVERY_INTERVAL_S": str(recovery_interval_s),
        "PYTHONUNBUFFERED": "1",
    })
    if slack is not None:
        env.update({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": sp.SIGNING_SECRET,
                    "SLACK_API_URL": slack.url})
    if anthropic is not None:
        env.update({"ANTHROPIC_API_KEY": anthropic.api_key, "ANTHROPIC_BASE_URL": anthropic.url})
    env.update(extra or {})
    return env


SpawnServe = Callable[..., Awaitable[ServeProcess]]


@pytest.fixture
async def spawn_serve(tmp_path: Path) -> AsyncIterator[SpawnServe]:
    """Starts `supportbot serve` children (and, unless told not to, waits for /healthz); kills leftovers."""
    started: list[ServeProcess] = []

    async def spawn(name: str, env: dict[str, str], *, host: str = "127.0.0.1", wait: bool = True,
                    port: int | None = None, argv: list[str] | None = None) -> ServeProcess:
        child = ServeProcess(name=name, env=env, cwd=tmp_path, host=host, argv=argv)
        if port is not None:
            child.port = port
        started.append(child)
        await child.start()
        if wait:
            await child.wait_healthy()
        return child

    try:
        yield spawn
    finally:
        for child in started:
            process = child.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 5)


def write_config(tmp_path: Path, *, escalation: str = "", extra: str = "") -> Path:
    """The base config; `escalation` lines go in its [escalation] table, `extra` tables after it."""
    path = tmp_path / "supportbot.toml"
    path.write_text(BASE_TOML.replace("{escalation}", escalation) + extra)
    return path


# --- playing Slack towards a server ----------------------------------------------------------------


async def send_event(
    http: aiohttp.ClientSession, base_url: str, event: dict[str, Any], *, event_id: str,
    retry_num: int | None = None,
) -> int:
    body, headers = sp.encode_event_request(sp.event_callback(event, event_id=event_id), retry_num=retry_num)
    async with http.post(f"{base_url}/slack/events", data=body, headers=headers) as response:
        await response.read()
        return response.status


def seed_questions(fake: FakeSlackAPI, texts: list[str], *, channel: str = SUPPORT,
                   user: str = CUSTOMER) -> list[SlackMessage]:
    """Customers post these top-level messages in the support channel (stored in the fake Slack)."""
    return [fake.seed_message(channel, text, user=user, blocks=sp.rich_text_blocks(text)) for text in texts]


def bot_posts_per_thread(fake: FakeSlackAPI, channel: str = SUPPORT) -> dict[str, int]:
    """How many finished messages of the bot each thread of `channel` shows (posted, or streamed and stopped)."""
    counts: dict[str, int] = {}
    for message in fake.messages_in(channel):
        replies = [m for m in fake.messages_in(channel, message.ts)
                   if m.ts != message.ts and m.bot_id == fake.bot_id and m.stream_state != "streaming"]
        if replies:
            counts[message.ts] = len(replies)
    return counts


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
                     seen: Callable[[], object] | None = None) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110  (state of other processes and fakes: polled)
                await asyncio.sleep(0.05)
    except TimeoutError:
        detail = f"; seen: {seen()}" if seen is not None else ""
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{detail}") from None


async def inbox_rows(database_url: str) -> list[InboundEvent]:
    db = open_database(database_url)
    try:
        async with db.sessions() as session:
            return list((await session.execute(select(InboundEvent).order_by(InboundEvent.id))).scalars())
    finally:
        await db.dispose()


async def wait_for_inbox(database_url: str, predicate: Callable[[list[InboundEvent]], bool], timeout_s: float,
                         what: str) -> list[InboundEvent]:
    rows: list[InboundEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                rows = await inbox_rows(database_url)
                if predicate(rows):
                    return rows
                await asyncio.sleep(0.1)
    except TimeoutError:
        summary = [(row.id, row.status, row.lease_owner, row.attempts) for row in rows]
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; inbox: {summary}") from None


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of a JSON-logging process's output, parsed (a non-JSON line fails the test)."""
    parsed = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("--- run "):
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line[:300]!r}") from None
    return parsed
