"""Ack latency of POST /slack/events under concurrent senders while every LLM call takes seconds.

The bot runs as `supportbot serve` does (HTTP mode, real aiohttp server, SQLite file or PostgreSQL), with an
LLM port that sleeps before answering. The fake Slack Web API runs on its own thread and event loop, and the
senders (playing Slack's Events API, signed requests, some of them retries) run in a separate process, so
neither bills its work to the bot's event loop. Latency is measured by the senders: request sent to
response read.

    .venv/bin/python benchmarks/ack_latency.py                 # 400 requests, 20 senders, LLM 2 s
    .venv/bin/python benchmarks/ack_latency.py --json          # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._serve import throwaway_schema  # noqa: E402
from bot.config import Config, load_config  # noqa: E402
from bot.llm.base import LLMRequest, LLMResponse  # noqa: E402
from bot.llm.offline import OfflineLLM  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.fakes import slack_payloads as sp  # noqa: E402
from tests.fakes.slack_api import FakeSlackAPI  # noqa: E402

CHANNEL = "C0SUPPORT"
WARMUP_REQUESTS = 20


class SleepingLLM:
    """The offline provider behind a fixed delay: a model that always takes `seconds` to answer."""

    provider = "sleeping"

    def __init__(self, config: Config, seconds: float) -> None:
        self._inner = OfflineLLM(config)
        self._seconds = seconds

    async def complete(self, request: LLMRequest) -> LLMResponse:
        await asyncio.sleep(self._seconds)
        return await self._inner.complete(request)


@contextmanager
def fake_slack_in_thread() -> Iterator[FakeSlackAPI]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    fake = FakeSlackAPI()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, name="fake-slack", daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the fake Slack API did not start")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


# --- the senders (a separate process) ---------------------------------------------------------------


def _requests(count: int, retry_ratio: float, seed: int, texts: list[str]) -> list[tuple[bytes, dict[str, Any]]]:
    """Event payloads, about `retry_ratio` of them redeliveries of an earlier event (X-Slack-Retry-Num)."""
    rng = random.Random(seed)
    base = int(time.time())
    sent: list[dict[str, Any]] = []
    out: list[tuple[bytes, dict[str, Any]]] = []
    for index in range(count):
        if sent and rng.random() < retry_ratio:
            out.append((b"", {"retry_of": rng.randrange(len(sent))}))
            continue
        event = sp.message_event(CHANNEL, f"U0USER{index % 50:03d}", rng.choice(texts),
                                 f"{base}.{index:06d}")
        payload = sp.event_callback(event)
        sent.append(payload)
        out.append((json.dumps(payload).encode(), {"payload_index": len(sent) - 1}))
    return [(body, info) if body else (json.dumps(sent[info["retry_of"]]).encode(), {"retry": True})
            for body, info in out]


async def _send_all(url: str, bodies: list[tuple[bytes, dict[str, Any]]], concurrency: int) -> dict[str, Any]:
    import aiohttp

    queue: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
    for body, info in bodies:
        queue.put_nowait((body, bool(info.get("retry"))))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body, retry = queue.get_nowait()
            headers = {"Content-Type": "application/json", **sp.sign(body, sp.SIGNING_SECRET)}
            if retry:
                headers.update({"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return {"latencies_ms": latencies, "statuses": statuses, "seconds": time.perf_counter() - started}


def sender_main(url: str, count: int, concurrency: int, retry_ratio: float, seed: int) -> None:
    texts = [example for route in load_config().routes.values() for example in route.examples] or ["help"]
    warmup = _requests(WARMUP_REQUESTS, 0.0, seed + 1, texts)
    asyncio.run(_send_all(url, warmup, min(concurrency, WARMUP_REQUESTS)))
    result = asyncio.run(_send_all(url, _requests(count, retry_ratio, seed, texts), concurrency))
    print(json.dumps(result))


# --- the bot (this process) --------------------------------------------------------------------------


@asynccontextmanager
async def _database(url: str | None, tmp: Path) -> AsyncIterator[str]:
    """A fresh SQLite file, or a throwaway schema in the given PostgreSQL database (dropped afterwards)."""
    async with throwaway_schema(url) as database_url:
        yield database_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bot.observability import configure_logging

    configure_logging("ERROR")
    config = load_config()
    config = config.model_copy(update={
        "bot": config.bot.model_copy(update={"support_channels": [CHANNEL]}),
        "escalation": config.escalation.model_copy(update={"channel": "C0PAGES", "oncall": ["U0ONCALL"]}),
    })
    with tempfile.TemporaryDirectory() as tmp, fake_slack_in_thread() as fake:
        async with _database(args.database_url, Path(tmp)) as database_url:
            sent, in_flight = await _serve_and_send(args, config, fake, database_url)
            replies = len(fake.successful_calls_to("chat.postMessage"))
    latencies: list[float] = sent["latencies_ms"]
    return {
        "requests": len(latencies), "concurrency": args.concurrency, "llm_seconds": args.llm_seconds,
        "retry_ratio": args.retry_ratio, "database": database_url.split(":", 1)[0],
        "p50_ms": round(_percentile(latencies, 0.50), 2), "p90_ms": round(_percentile(latencies, 0.90), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2), "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "statuses": {str(k): v for k, v in sorted(sent["statuses"].items())},
        "requests_per_s": round(len(latencies) / sent["seconds"], 1),
        "accepted_not_yet_answered_at_end": in_flight, "replies_posted_during_run": replies,
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }


async def _serve_and_send(
    args: argparse.Namespace, config: Config, fake: FakeSlackAPI, database_url: str
) -> tuple[dict[str, Any], int]:
    """Start the server as `supportbot serve` does, run the sender process against it, stop."""
    from bot.web.server import freeze_startup_objects, start_server

    settings = Settings(database_url=database_url, slack_bot_token="xoxb-bench",  # type: ignore[arg-type]
                        slack_signing_secret=sp.SIGNING_SECRET,  # type: ignore[arg-type]
                        slack_api_url=fake.url)
    server = await start_server(settings, config, host="127.0.0.1", port=0,
                                llm=SleepingLLM(config, args.llm_seconds), instance_id="bench")
    freeze_startup_objects()  # as `supportbot serve` does
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--sender", f"{server.url}/slack/events", "--requests", str(args.requests),
            "--concurrency", str(args.concurrency), "--retry-ratio", str(args.retry_ratio), "--seed", str(args.seed),
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        stdout, _ = await process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"the sender process failed (exit {process.returncode})")
        from storage import repositories as repo

        async with server.runtime.db.sessions() as session:
            counts = await repo.inbox_counts(session)
        return json.loads(stdout), counts.get("pending", 0) + counts.get("processing", 0)
    finally:
        await server.runtime.dispatcher.drain(1.0)  # the backlog is the LLM's, not what is measured
        await server.stop()


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"POST /slack/events ack latency — {report['requests']} requests, "
                        f"{report['concurrency']} senders, LLM {report['llm_seconds']} s per call")
    for column in ("p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "req/s", "statuses"):
        table.add_column(column, justify="right")
    table.add_row(*(str(report[key]) for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms",
                                                  "requests_per_s")), json.dumps(report["statuses"]))
    console = Console()
    console.print(table)
    console.print(f"database {report['database']}, {report['cpus']} CPUs, Python {report['python']}; "
                  f"{report['accepted_not_yet_answered_at_end']} accepted messages not yet answered at the end, "
                  f"{report['replies_posted_during_run']} replies posted during the run; goal p99 < 50 ms: "
                  f"{'met' if report['p99_ms'] < 50 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="measured requests (after 20 warm-up ones)")
    parser.add_argument("--concurrency", type=int, default=20, help="senders at once")
    parser.add_argument("--llm-seconds", type=float, default=2.0, help="how long every LLM call takes")
    parser.add_argument("--retry-ratio", type=float, default=0.1, help="share of requests that are Slack retries")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file; a PostgreSQL URL gets a throwaway schema")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--sender", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        sender_main(args.sender, args.requests, args.concurrency, args.retry_ratio, args.seed)
        return
    report = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
