"""Voting overhead: wall time of an N-sample vote divided by one reply call, through the fake Anthropic API.

Both go through the real stack: AsyncAnthropic -> the fake on loopback (fixed latency per call, in
its own process as the real API is elsewhere) -> the recorder writing llm_calls to SQLite. The
samples run concurrently, so the goal is a ratio close to 1 (≤ 1.15 for N = 5), not N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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

TEXT = "I was charged twice this month for the same invoice"
GOAL = 1.15


async def measure(samples: int, latency_s: float, repeats: int) -> dict[str, object]:
    verdict = {"verdict": "reply", "draft": "Please send the invoice number.", "reason": "safe"}
    with fake_process(latency_s=latency_s, tools={"submit_verdict": verdict}) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
                            anthropic_api_key=DUMMY_KEY, anthropic_base_url=fake.url)
        config = load_config().model_copy(update={
            "voting": load_config().voting.model_copy(update={"samples": samples})})
        runtime = await build_runtime(settings, config, chat=LocalChat(), instance_id="bench")
        try:
            handler = runtime.pipeline.handlers["billing"]
            voter = runtime.pipeline.voter
            # Warm up as a running bot is: connections open in the pool, the prompt cache filled.
            await handler.draft(runtime.llm, (), TEXT)
            await voter.vote(handler, (), TEXT, conversation_id=None)
            singles, votes, ratios = [], [], []
            for _ in range(repeats):
                started = time.perf_counter()
                await handler.draft(runtime.llm, (), TEXT)
                single = time.perf_counter() - started
                started = time.perf_counter()
                result = await voter.vote(handler, (), TEXT, conversation_id=None)
                voted = time.perf_counter() - started
                assert result.majority == "reply" and len(result.samples) == samples
                singles.append(single)
                votes.append(voted)
                ratios.append(voted / single)
        finally:
            await runtime.close()
    # Single calls have one request in flight: a peak of N means the samples overlapped.
    peak = fake.max_in_flight
    return {
        "samples": samples, "latency_ms": latency_s * 1000, "repeats": repeats,
        "single_ms": round(statistics.median(singles) * 1000, 1),
        "vote_ms": round(statistics.median(votes) * 1000, 1),
        "ratio_median": round(statistics.median(ratios), 3), "ratio_max": round(max(ratios), 3),
        "max_in_flight": peak, "goal": GOAL, "meets_goal": statistics.median(ratios) <= GOAL,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5, help="N, voting samples")
    parser.add_argument("--latency-ms", type=float, default=300, help="the fake's latency per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    report = asyncio.run(measure(args.samples, args.latency_ms / 1000, args.repeats))
    if args.json:
        print(json.dumps(report))
        return 0
    table = Table(title=f"Voting overhead, N = {args.samples}, fake latency {args.latency_ms:.0f} ms")
    for column in ("single call", "vote (N samples)", "ratio (median)", "ratio (max)", "peak in flight", "goal"):
        table.add_column(column, justify="right")
    table.add_row(f"{report['single_ms']} ms", f"{report['vote_ms']} ms", str(report["ratio_median"]),
                  str(report["ratio_max"]), str(report["max_in_flight"]), f"≤ {GOAL}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
