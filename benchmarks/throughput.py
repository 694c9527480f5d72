"""End-to-end throughput of `supportbot serve` against the limit set by LLM latency and concurrency.

N messages go as signed Slack events to a real `supportbot serve` process (Slack HTTP mode, SQLite, the
shipped router and voting) whose `[bot] max_concurrency` is C and whose every LLM call (the fake Anthropic
API, in a process of its own) takes L seconds. The clock runs from the first event sent until the fake
Slack API holds every reply. With k LLM calls per message, no system can beat C / (k × L) messages a
second; the ratio to that limit is our overhead. The texts are non-sensitive and confidently routed,
so k = 1 (no vote, no LLM routing); k is measured from the server's own /metrics and reported.

The Slack adapter also starts a burst's messages at most 1 / PROCESSING_START_INTERVAL_S a second (20/s,
to keep acks fast): the limit reported is the lower of the two, and `limited_by` says which. The defaults
(L = 1 s, C = 16: 16 messages/s) keep the LLM limit the binding one.

    .venv/bin/python benchmarks/throughput.py                       # 300 messages, L = 1 s, C = 16
    .venv/bin/python benchmarks/throughput.py --json                # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._fake_anthropic import DUMMY_KEY, fake_process  # noqa: E402
from benchmarks._serve import (  # noqa: E402
    fake_slack,
    process_cpu_seconds,
    seed_messages,
    send_events,
    serve_process,
    throwaway_schema,
    wait_for_replies,
)

GOAL_RATIO = 0.9


def server_counters(url: str) -> dict[str, float]:
    """LLM calls (by purpose) and finished messages (by outcome) from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        body = response.read().decode()
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "supportbot_llm_latency_seconds_count":
                key = f"llm_calls:{sample.labels['purpose']}"
            elif sample.name == "supportbot_llm_latency_seconds_sum":
                key = "llm_seconds"
            elif sample.name == "supportbot_messages_total":
                key = f"messages:{sample.labels['outcome']}"
            elif sample.name in ("supportbot_pipeline_latency_seconds_sum", "supportbot_ack_latency_seconds_sum"):
                key = sample.name.removeprefix("supportbot_").removesuffix("_sum")
            else:
                continue
            counters[key] = counters.get(key, 0.0) + sample.value
    return counters


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: round(value - before.get(key, 0.0), 3) for key, value in sorted(after.items())
            if value - before.get(key, 0.0)}


async def measure(
    n: int, latency_s: float, concurrency: int, warmup: int, timeout_s: float, database_url: str | None = None
) -> dict[str, Any]:
    async with throwaway_schema(database_url) as url:
        report = await _measure(n, latency_s, concurrency, warmup, timeout_s, url)
    return {**report, "database": (database_url or "sqlite").split(":", 1)[0].split("+")[0]}


async def _measure(
    n: int, latency_s: float, concurrency: int, warmup: int, timeout_s: float, database_url: str | None
) -> dict[str, Any]:
    with fake_slack() as slack, fake_process(latency_s=latency_s, tools={}) as anthropic, \
            serve_process(slack_api_url=slack.fake.url, anthropic_url=anthropic.url, anthropic_key=DUMMY_KEY,
                          max_concurrency=concurrency, database_url=database_url) as server:
        # Warm up as a running bot is: pooled connections open, the first queries compiled.
        warm = seed_messages(slack, warmup)
        await send_events(server.url, warm)
        replies, _ = await wait_for_replies(slack, warmup, timeout_s)
        if replies < warmup:
            raise SystemExit(f"warm-up: {replies} of {warmup} replies; server log:\n{server.log_tail()}")
        messages = seed_messages(slack, n, first=warmup)
        before = server_counters(server.url)
        cpu_before = process_cpu_seconds(server.pid)
        started = time.monotonic()
        sent = await send_events(server.url, messages)
        replies, finished = await wait_for_replies(slack, warmup + n, timeout_s)
        seconds = finished - started
        cpu_seconds = process_cpu_seconds(server.pid) - cpu_before
        counts = _difference(server_counters(server.url), before)
    answered = replies - warmup
    llm_calls = int(sum(v for k, v in counts.items() if k.startswith("llm_calls:")))
    calls_per_message = llm_calls / answered if answered else 0.0
    per_message = max(calls_per_message, 1.0)  # the limit of the intended one-call case if none were counted
    llm_limit = concurrency / (per_message * latency_s)
    from bot.slack.app import PROCESSING_START_INTERVAL_S

    pacing = 1 / PROCESSING_START_INTERVAL_S
    limit = min(llm_limit, pacing)
    rate = answered / seconds if seconds > 0 else 0.0
    return {
        "n": n, "answered": answered, "complete": answered >= n, "latency_ms": latency_s * 1000,
        "concurrency": concurrency, "seconds": round(seconds, 3), "send_seconds": round(sent["seconds"], 3),
        "statuses": sent["statuses"], "messages_per_s": round(rate, 2),
        "llm_calls_per_message": round(calls_per_message, 3), "llm_limit_messages_per_s": round(llm_limit, 2),
        "start_pacing_messages_per_s": round(pacing, 2), "limit_messages_per_s": round(limit, 2),
        "limited_by": "llm" if llm_limit <= pacing else "start pacing",
        "ideal_seconds": round(n / limit, 3), "ratio": round(rate / limit, 3), "goal_ratio": GOAL_RATIO,
        "meets_goal": answered >= n and rate / limit >= GOAL_RATIO,
        "server_cpu_ms_per_message": round(cpu_seconds * 1000 / answered, 2) if answered else None,
        # Where a message's time in the server went: its whole pipeline, of which the LLM calls.
        "pipeline_ms_per_message": _per(counts.get("pipeline_latency_seconds"), answered),
        "llm_ms_per_message": _per(counts.get("llm_seconds"), answered),
        "ack_ms_mean": _per(counts.get("ack_latency_seconds"), n),
        "server_counters": counts, "warmup": warmup, "cpus": os.cpu_count(),
        "note": "non-sensitive, confidently routed texts: one LLM call per message, no vote",
    }


def _per(seconds: float | None, count: int) -> float | None:
    return round(seconds * 1000 / count, 1) if seconds is not None and count else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="messages measured (after the warm-up)")
    parser.add_argument("--latency-ms", type=float, default=1000, help="L, the fake's latency per LLM call")
    parser.add_argument("--concurrency", type=int, default=16, help="C, [bot] max_concurrency of the server")
    parser.add_argument("--warmup", type=int, default=16, help="messages answered before the clock starts")
    parser.add_argument("--timeout", type=float, default=180, help="give up waiting for replies after this")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file; a PostgreSQL URL gets a throwaway schema")
    parser.add_argument("--quick", action="store_true", help="200 messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.n
    report = asyncio.run(measure(n, args.latency_ms / 1000, args.concurrency, args.warmup, args.timeout,
                                 args.database_url))
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"End-to-end throughput, {n} messages, LLM {args.latency_ms:.0f} ms per call, "
                        f"max_concurrency {args.concurrency}, {report['database']}")
    for column in ("answered", "seconds", "ideal", "messages/s", "C/(k·L)", "start pacing", "ratio to lower",
                   "LLM calls/msg", "server CPU/msg"):
        table.add_column(column, justify="right")
    table.add_row(f"{report['answered']}/{n}", f"{report['seconds']} s", f"{report['ideal_seconds']} s",
                  str(report["messages_per_s"]), str(report["llm_limit_messages_per_s"]),
                  str(report["start_pacing_messages_per_s"]), f"{report['ratio']:.0%}",
                  str(report["llm_calls_per_message"]), f"{report['server_cpu_ms_per_message']} ms")
    console = Console()
    console.print(table)
    console.print(f"{report['note']}; server counters {json.dumps(report['server_counters'])}; goal ratio ≥ "
                  f"{GOAL_RATIO}: {'met' if report['meets_goal'] else 'NOT met'}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
