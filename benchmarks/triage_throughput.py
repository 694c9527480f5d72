"""Triage throughput: N messages through a fake Claude with fixed latency, at a bounded concurrency.

The ideal is N × latency / concurrency (1,000 × 0.2 s / 16 = 12.5 s): the pool is always full and
nothing but the model's latency costs time. The measured run goes through the whole stack — the
SDK, the fake on loopback (in its own process, as the real API is elsewhere), the fallback step and
the recorder writing every call to SQLite — so the gap to the ideal is our overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._fake_anthropic import DUMMY_KEY, fake_process  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.local_chat import LocalChat  # noqa: E402
from bot.observability import configure_logging  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.triage import TriageItem, triage_concurrently  # noqa: E402

TEXTS = [
    "I was charged twice this month", "the API returns 401 even though my key is correct",
    "how much is the enterprise plan?", "where is my order?", "I want to speak to a manager",
    "my invoice shows the wrong VAT number", "the app crashes when I upload a file", "hi there",
]


async def measure(n: int, latency_s: float, concurrency: int) -> dict[str, object]:
    items = [TriageItem(index=i, text=f"{TEXTS[i % len(TEXTS)]} (#{i})", where=f"bench:{i + 1}") for i in range(n)]
    answer = {"route": "general", "summary": "a message", "themes": ["bench"], "urgency": "normal"}
    with fake_process(latency_s=latency_s, tools={"triage_message": answer}) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp}/bench.db", anthropic_api_key=DUMMY_KEY,
                            anthropic_base_url=fake.url)
        runtime = await build_runtime(settings, load_config(), chat=LocalChat(), instance_id="bench")
        try:
            started = time.perf_counter()
            outcomes = await triage_concurrently(items, runtime.llm, runtime.config, concurrency=concurrency)
            seconds = time.perf_counter() - started
        finally:
            await runtime.close()
    peak = fake.max_in_flight
    ideal = n * latency_s / concurrency
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    return {"n": n, "latency_ms": latency_s * 1000, "concurrency": concurrency, "seconds": round(seconds, 2),
            "ideal_seconds": round(ideal, 2), "efficiency": round(ideal / seconds, 3),
            "messages_per_s": round(n / seconds, 1), "failed": failed, "max_in_flight": peak}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="messages")
    parser.add_argument("--latency-ms", type=float, default=200, help="the fake's latency per call")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    report = asyncio.run(measure(args.n, args.latency_ms / 1000, args.concurrency))
    if args.json:
        print(json.dumps(report))
        return 0
    table = Table(title=f"Triage of {args.n} messages, fake latency {args.latency_ms:.0f} ms, "
                        f"concurrency {args.concurrency}")
    for column in ("measured", "ideal", "efficiency", "messages/s", "peak in flight", "failed"):
        table.add_column(column, justify="right")
    table.add_row(f"{report['seconds']} s", f"{report['ideal_seconds']} s", f"{report['efficiency']:.0%}",
                  str(report["messages_per_s"]), str(report["max_in_flight"]), str(report["failed"]))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
