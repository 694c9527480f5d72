"""Resident memory of a real `supportbot serve` process: idle after start-up, and after answering N messages.

The server runs as an operator starts it (Slack HTTP mode, SQLite, the Anthropic SDK talking to the fake
Anthropic API, the shipped router with its classifier trained at start). RSS and its peak (VmRSS, VmHWM)
are read from /proc/<pid>/status: once start-up has settled, then after N signed events have all been
answered through the fake Slack API. Goal: idle RSS < 150 MB.

    .venv/bin/python benchmarks/memory_rss.py                 # 500 messages
    .venv/bin/python benchmarks/memory_rss.py --json          # one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._fake_anthropic import DUMMY_KEY, fake_process  # noqa: E402
from benchmarks._serve import (  # noqa: E402
    fake_slack,
    proc_status_kb,
    seed_messages,
    send_events,
    serve_process,
    wait_for_replies,
)

GOAL_IDLE_MB = 150.0
SETTLE_S = 2.0


def _mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb is not None else None


async def measure(n: int, latency_s: float, concurrency: int, timeout_s: float) -> dict[str, Any]:
    with fake_slack() as slack, fake_process(latency_s=latency_s, tools={}) as anthropic, \
            serve_process(slack_api_url=slack.fake.url, anthropic_url=anthropic.url, anthropic_key=DUMMY_KEY,
                          max_concurrency=concurrency) as server:
        await asyncio.sleep(SETTLE_S)  # past start-up: the background loops started, the first sweep run
        idle = proc_status_kb(server.pid)
        messages = seed_messages(slack, n)
        sent = await send_events(server.url, messages)
        replies, _ = await wait_for_replies(slack, n, timeout_s)
        await asyncio.sleep(SETTLE_S / 2)
        loaded = proc_status_kb(server.pid)
    return {
        "n": n, "answered": replies, "complete": replies >= n, "statuses": sent["statuses"],
        "latency_ms": latency_s * 1000, "concurrency": concurrency, "mode": "http (Slack), SQLite, Anthropic SDK",
        "idle_rss_mb": _mb(idle.get("VmRSS")), "idle_hwm_mb": _mb(idle.get("VmHWM")),
        "loaded_rss_mb": _mb(loaded.get("VmRSS")), "loaded_hwm_mb": _mb(loaded.get("VmHWM")),
        "idle_rss_anon_mb": _mb(idle.get("RssAnon")), "loaded_rss_anon_mb": _mb(loaded.get("RssAnon")),
        "goal_idle_mb": GOAL_IDLE_MB, "meets_goal": (idle.get("VmRSS") or 0) / 1024 < GOAL_IDLE_MB,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="messages answered before the loaded reading")
    parser.add_argument("--latency-ms", type=float, default=50, help="the fake's latency per LLM call")
    parser.add_argument("--concurrency", type=int, default=16, help="[bot] max_concurrency of the server")
    parser.add_argument("--timeout", type=float, default=180, help="give up waiting for replies after this")
    parser.add_argument("--quick", action="store_true", help="150 messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    n = 150 if args.quick else args.n
    report = asyncio.run(measure(n, args.latency_ms / 1000, args.concurrency, args.timeout))
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"supportbot serve resident memory ({report['mode']})")
    for column in ("", "RSS MB", "peak (VmHWM) MB", "anonymous MB"):
        table.add_column(column, justify="right")
    table.add_row("idle after start-up", str(report["idle_rss_mb"]), str(report["idle_hwm_mb"]),
                  str(report["idle_rss_anon_mb"]))
    table.add_row(f"after {report['answered']}/{n} messages", str(report["loaded_rss_mb"]),
                  str(report["loaded_hwm_mb"]), str(report["loaded_rss_anon_mb"]))
    console = Console()
    console.print(table)
    console.print(f"goal idle < {GOAL_IDLE_MB:.0f} MB: {'met' if report['meets_goal'] else 'NOT met'}",
                  highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
