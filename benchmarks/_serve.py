"""A real `supportbot serve` process in Slack HTTP mode for benchmarks, with the fakes and signed senders around it.

The server is a child process started from the installed `supportbot` command, as an operator would start
it: its CPU and memory are its own, not shared with the fakes or the senders. The fake Slack Web API runs
on a thread of the benchmark process (it counts the replies), the fake Anthropic API in a process of its
own (`benchmarks/_fake_anthropic.py`). Everything binds 127.0.0.1; the child is stopped with SIGTERM (as a
supervisor would) and killed if it does not stop, and its temp directory (config, SQLite file, log) removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fakes import slack_payloads as sp  # noqa: E402
from tests.fakes.slack_api import FakeSlackAPI  # noqa: E402

CHANNEL = "C0BENCH"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

# Texts the shipped router sends, confidently and without rules, to the non-sensitive routes
# (technical, sales, general) and that name no sensitive keyword: each one is answered with a single
# LLM call, no vote and no LLM routing. The benchmarks count the calls to check that it stayed so.
ONE_CALL_TEXTS = (
    "the API returns 401 even though my key is correct",
    "the app crashes when I upload a file",
    "how do I reset my password, the link expired",
    "the export button does nothing in Firefox",
    "can I add five more seats to our team plan?",
    "how much is the enterprise plan?",
    "do you offer a discount for nonprofits?",
    "webhooks stopped firing after we rotated the secret",
    "is there a way to change the language of the interface?",
    "our SSO login loops back to the sign-in page",
    "can we get a demo for our sales team next week?",
    "the dashboard is very slow to load since yesterday",
    "hi there, quick question about your opening hours",
    "does the mobile app work offline?",
    "I'd like a quote for 200 seats",
)


class FakeSlackThread:
    """The fake Slack Web API on its own thread and event loop, so it does not share the senders' loop."""

    def __init__(self) -> None:
        self.fake = FakeSlackAPI()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="fake-slack", daemon=True)
        self._ready = threading.Event()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.fake.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Slack API did not start")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a plain function of the fake on its own loop's thread and return its result."""

        async def run() -> Any:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def replies(self) -> int:
        """Complete answers the bot has given so far: accepted posts in a thread, and finished streams."""
        return sum(1 for call in self.fake.calls if call.ok and (
            call.method == "chat.stopStream" or (call.method == "chat.postMessage" and call.params.get("thread_ts"))))


@contextmanager
def fake_slack() -> Iterator[FakeSlackThread]:
    server = FakeSlackThread()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ServerProcess:
    """A running `supportbot serve` child: its pid, URL and log file."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def bench_config(*, max_concurrency: int, streaming: bool = True) -> str:
    """A config that only tunes the bot: the built-in routes, rules, router mode and voting stay as shipped."""
    return (
        "[bot]\n"
        f'support_channels = ["{CHANNEL}"]\n'
        f"max_concurrency = {max_concurrency}\n"
        "[slack]\n"
        f"streaming = {str(streaming).lower()}\n"
        "[escalation]\n"
        'channel = "C0PAGES"\n'
        'oncall = ["U0ONCALL"]\n'
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _supportbot_command() -> list[str]:
    script = Path(sys.executable).parent / "supportbot"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from bot.cli import main; main()"]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@asynccontextmanager
async def throwaway_schema(url: str | None) -> AsyncIterator[str | None]:
    """None stays None (a fresh SQLite file); a PostgreSQL URL gets a schema of its own, dropped afterwards."""
    if url is None or not url.startswith("postgres") or "schema=" in url:
        yield url
        return
    import asyncpg

    raw = url.split("?")[0].replace("postgresql+asyncpg", "postgresql")
    schema = f"bench_{os.getpid()}_{int(time.time())}"

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(raw, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        await execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def serve_process(
    *, slack_api_url: str, anthropic_url: str, anthropic_key: str, max_concurrency: int,
    database_url: str | None = None, log_level: str = "INFO", streaming: bool = True,
) -> Iterator[ServerProcess]:
    """Start `supportbot serve` in HTTP mode against the fakes, wait until /healthz answers, stop it after.

    The database is a fresh SQLite file in the server's temp directory unless `database_url` is given."""
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as tmp:
        config = Path(tmp) / "supportbot.toml"
        config.write_text(bench_config(max_concurrency=max_concurrency, streaming=streaming), encoding="utf-8")
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
        env = {
            **inherited,
            "SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": sp.SIGNING_SECRET, "SLACK_API_URL": slack_api_url,
            "ANTHROPIC_API_KEY": anthropic_key, "ANTHROPIC_BASE_URL": anthropic_url,
            "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            "SUPPORTBOT_CONFIG": str(config), "SUPPORTBOT_INSTANCE_ID": "bench",
            "SUPPORTBOT_LOG_LEVEL": log_level,
        }
        port = _free_port()
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*_supportbot_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = ServerProcess(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _healthy(server.url):
                if process.poll() is not None:
                    raise RuntimeError(f"supportbot serve exited with {process.returncode}:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"supportbot serve did not answer /healthz in {START_TIMEOUT_S:.0f} s:\n"
                                       f"{server.log_tail()}")
                time.sleep(0.1)
            yield server
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) and friends of a process, in kB, from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") or key.startswith("Rss"):
            number = rest.split()
            if number and number[0].isdigit():
                values[key] = int(number[0])
    return values


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seed_messages(slack: FakeSlackThread, count: int, *, first: int = 0) -> list[tuple[str, str]]:
    """Post `count` user messages in the fake's channel (as people would): (ts, text) of each."""
    base = int(time.time())

    def seed() -> list[tuple[str, str]]:
        out = []
        for index in range(first, first + count):
            text = ONE_CALL_TEXTS[index % len(ONE_CALL_TEXTS)]
            ts = f"{base}.{index:06d}"
            slack.fake.seed_message(CHANNEL, text, user=f"U0USER{index % 50:03d}", ts=ts)
            out.append((ts, text))
        return out

    result: list[tuple[str, str]] = slack.call(seed)
    return result


async def send_events(url: str, messages: Sequence[tuple[str, str]], *, senders: int = 8) -> dict[str, Any]:
    """POST each message as a signed `event_callback` to /slack/events from `senders` connections."""
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for index, (ts, text) in enumerate(messages):
        event = sp.message_event(CHANNEL, f"U0USER{index % 50:03d}", text, ts)
        queue.put_nowait(json.dumps(sp.event_callback(event)).encode())
    statuses: dict[int, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = {"Content-Type": "application/json", **sp.sign(body, sp.SIGNING_SECRET)}
            async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))
    return {"statuses": {str(k): v for k, v in sorted(statuses.items())}, "seconds": time.perf_counter() - started}


async def wait_for_replies(slack: FakeSlackThread, target: int, timeout_s: float) -> tuple[int, float]:
    """Poll the fake until it holds `target` replies or `timeout_s` passes: (replies, monotonic time seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        replies = slack.replies()
        now = time.monotonic()
        if replies >= target or now > deadline:
            return replies, now
        await asyncio.sleep(0.01)

