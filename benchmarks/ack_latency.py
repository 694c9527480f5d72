"""Ack latency of POST /slack/events under concurrent senders while every LLM call takes seconds.

The bot runs as `supportbot serve` does (HTTP mode, real aiohttp server, SQLite file or PostgreSQL), with an
LLM port that sleeps before answering. The fake Slack Web API runs on its own thread and event loop, and the
senders (playing Slack's Events API, signed requests, some of them retries) run in a separate process, so
neither bills its work to the bot's event loop. Latency is measured by the senders: request sent to
response read.

`--cold` measures the first seconds instead: a fresh `supportbot serve` process (started from the installed
command, the fake Anthropic API answering in `--llm-seconds` from a process of its own) gets the burst as
soon as /healthz answers, with no warm-up requests, so whatever the server does on first use (imports,
first queries, connection set-up) lands inside the measured acks.

    .venv/bin/python benchmarks/ack_latency.py                 # 400 requests, 20 senders, LLM 2 s
    .venv/bin/python benchmarks/ack_latency.py --cold --requests 2000 --concurrency 50
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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._fake_anthropic import DUMMY_KEY, fake_process  # noqa: E402
from benchmarks._serve import CHANNEL as SERVE_CHANNEL  # noqa: E402
from benchmarks._serve import fake_slack, serve_process, throwaway_schema  # noqa: E402
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


# --- the senders (a separate process) ---------------------------------------------------------------


def _requests(count: int, retry_ratio: float, seed: int, texts: list[str],
              channel: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Event payloads, about `retry_ratio` of them redeliveries of an earlier event (X-Slack-Retry-Num)."""
    rng = random.Random(seed)
    base = int(time.time())
    sent: list[dict[str, Any]] = []
    out: list[tuple[bytes, dict[str, Any]]] = []
    for index in range(count):
        if sent and rng.random() < retry_ratio:
            out.append((b"", {"retry_of": rng.randrange(len(sent))}))
            continue
        event = sp.message_event(channel, f"U0USER{index % 50:03d}", rng.choice(texts),
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
    offsets: list[float] = []  # when each request was sent, seconds after the first
    statuses: dict[int, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body, retry = queue.get_nowait()
            headers = {"Content-Type": "application/json", **sp.sign(body, sp.SIGNING_SECRET)}
            if retry:
                headers.update({"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
            sent = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                latencies.append((time.perf_counter() - sent) * 1000)
                offsets.append(sent - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return {"latencies_ms": latencies, "offsets_s": offsets, "statuses": statuses,
            "seconds": time.perf_counter() - started}


def sender_main(url: str, count: int, concurrency: int, retry_ratio: float, seed: int, *, channel: str,
                warmup: bool) -> None:
    texts = [example for route in load_config().routes.values() for example in route.examples] or ["help"]
    if warmup:
        asyncio.run(_send_all(url, _requests(WARMUP_REQUESTS, 0.0, seed + 1, texts, channel),
                              min(concurrency, WARMUP_REQUESTS)))
    result = asyncio.run(_send_all(url, _requests(count, retry_ratio, seed, texts, channel), concurrency))
    print(json.dumps(result))


async def run_senders(url: str, args: argparse.Namespace, *, channel: str, warmup: bool) -> dict[str, Any]:
    """The sender process against `url`: its JSON report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--sender", url, "--requests", str(args.requests),
        "--concurrency", str(args.concurrency), "--retry-ratio", str(args.retry_ratio), "--seed", str(args.seed),
        "--channel", channel, *(() if warmup else ("--no-warmup",)),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the sender process failed (exit {process.returncode})")
    report: dict[str, Any] = json.loads(stdout)
    return report


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


def _summary(sent: dict[str, Any]) -> dict[str, Any]:
    latencies: list[float] = sent["latencies_ms"]
    offsets: list[float] = sent["offsets_s"]
    first_second = [ms for ms, at in zip(latencies, offsets, strict=True) if at < 1.0] or [0.0]
    first_5s = [ms for ms, at in zip(latencies, offsets, strict=True) if at < 5.0] or [0.0]
    worst = max(range(len(latencies)), key=latencies.__getitem__)
    return {
        "requests": len(latencies),
        "p50_ms": round(_percentile(latencies, 0.50), 2), "p90_ms": round(_percentile(latencies, 0.90), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2), "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "first_second_p99_ms": round(_percentile(first_second, 0.99), 2),
        "first_5s_p99_ms": round(_percentile(first_5s, 0.99), 2),
        "worst_sent_at_s": round(offsets[worst], 3),
        "statuses": {str(k): v for k, v in sorted(sent["statuses"].items())},
        "requests_per_s": round(len(latencies) / sent["seconds"], 1),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cold:
        return await measure_cold(args)
    from bot.observability import configure_logging

    configure_logging("ERROR")
    config = load_config()
    config = config.model_copy(update={
        "bot": config.bot.model_copy(update={"support_channels": [CHANNEL]}),
        "escalation": config.escalation.model_copy(update={"channel": "C0PAGES", "oncall": ["U0ONCALL"]}),
    })
    with tempfile.TemporaryDirectory() as tmp, fake_slack() as slack:
        async with _database(args.database_url, Path(tmp)) as database_url:
            sent, in_flight = await _serve_and_send(args, config, slack.fake, database_url)
            replies = slack.replies()
    return {
        "start": "warm", "concurrency": args.concurrency, "llm_seconds": args.llm_seconds,
        "retry_ratio": args.retry_ratio, "database": database_url.split(":", 1)[0], **_summary(sent),
        "accepted_not_yet_answered_at_end": in_flight, "replies_posted_during_run": replies,
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }


async def measure_cold(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh `supportbot serve` process, the burst sent the moment /healthz first answers."""
    with fake_slack() as slack, fake_process(latency_s=args.llm_seconds, tools={}) as anthropic:
        async with throwaway_schema(args.database_url) as database_url:
            with serve_process(slack_api_url=slack.fake.url, anthropic_url=anthropic.url, anthropic_key=DUMMY_KEY,
                               max_concurrency=16, database_url=database_url) as server:
                sent = await run_senders(f"{server.url}/slack/events", args, channel=SERVE_CHANNEL, warmup=False)
                replies = slack.replies()
    return {
        "start": "cold", "concurrency": args.concurrency, "llm_seconds": args.llm_seconds,
        "retry_ratio": args.retry_ratio, "database": (database_url or "sqlite+aiosqlite").split(":", 1)[0],
        **_summary(sent), "replies_posted_during_run": replies,
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
    server = await start_server(settings, config, host="127.0.0.1", port=0, llm=SleepingLLM(config, args.llm_seconds),
                                instance_id="bench", before_listening=freeze_startup_objects)  # as `serve` does
    try:
        sent = await run_senders(f"{server.url}/slack/events", args, channel=CHANNEL, warmup=True)
        from storage import repositories as repo

        async with server.runtime.db.sessions() as session:
            counts = await repo.inbox_counts(session)
        return sent, counts.get("pending", 0) + counts.get("processing", 0)
    finally:
        await server.runtime.dispatcher.drain(1.0)  # the backlog is the LLM's, not what is measured
        await server.stop()


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"POST /slack/events ack latency — {report['requests']} requests, "
                        f"{report['concurrency']} senders, LLM {report['llm_seconds']} s per call, "
                        f"{report['start']} start")
    columns = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "first_second_p99_ms", "first_5s_p99_ms", "requests_per_s")
    for column in ("p50 ms", "p90 ms", "p99 ms", "max ms", "p99 1st s", "p99 first 5 s", "req/s", "statuses"):
        table.add_column(column, justify="right")
    table.add_row(*(str(report[key]) for key in columns), json.dumps(report["statuses"]))
    console = Console()
    console.print(table)
    waiting = report.get("accepted_not_yet_answered_at_end")
    console.print(f"database {report['database']}, {report['cpus']} CPUs, Python {report['python']}; "
                  + (f"{waiting} accepted messages not yet answered at the end, " if waiting is not None else "")
                  + f"{report['replies_posted_during_run']} replies posted during the run; slowest ack sent "
                  f"{report['worst_sent_at_s']} s into the run; goal p99 < 50 ms: "
                  f"{'met' if report['p99_ms'] < 50 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="measured requests (after 20 warm-up ones)")
    parser.add_argument("--concurrency", type=int, default=20, help="senders at once")
    parser.add_argument("--llm-seconds", type=float, default=2.0, help="how long every LLM call takes")
    parser.add_argument("--retry-ratio", type=float, default=0.1, help="share of requests that are Slack retries")
    parser.add_argument("--cold", action="store_true",
                        help="a fresh `supportbot serve` process, measured from its first request (no warm-up)")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file; a PostgreSQL URL gets a throwaway schema")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--sender", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--channel", default=CHANNEL, help=argparse.SUPPRESS)
    parser.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        sender_main(args.sender, args.requests, args.concurrency, args.retry_ratio, args.seed, channel=args.channel,
                    warmup=not args.no_warmup)
        return
    report = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
