"""Per-message latency of the local tiers: rules, then the topic and severity models, as the product builds them.

The router is trained from the built-in config as `supportbot serve` does at start; each text of the labelled
files (by default the realistic held-out messages, long incident reports included, and the templated dev file;
without them, the config's route examples) is routed `--repeats` times after one warm-up pass.
Wall time (perf_counter) and the routing thread's CPU time (thread_time, steadier on a busy machine) are
reported as p50/p99 in microseconds. Goal: p99 < 2 ms. `router_quality.py` scores the same router.

    .venv/bin/python benchmarks/router_latency.py [FILE.jsonl] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import load_config  # noqa: E402
from bot.router.hybrid import RulesThenLocal  # noqa: E402
from bot.router.local import LocalRouter  # noqa: E402
from bot.router.rules import RulesRouter  # noqa: E402

DEFAULT_DATA = (REPO / "benchmarks" / "data" / "realistic_heldout.jsonl",
                REPO.parent / "shared" / "data" / "route_dev.jsonl")
GOAL_P99_US = 2000.0


def texts_from(paths: Sequence[Path]) -> tuple[list[str], str]:
    """The texts of labelled JSONL files, or the config's route examples when there are none."""
    found = [path for path in paths if path.exists()]
    if found:
        texts = [str(json.loads(line)["text"]) for path in found
                 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts, ", ".join(path.name for path in found)
    examples = [example for route in load_config().routes.values() for example in route.examples]
    return examples, "the built-in config's route examples"


def _percentile(ordered: Sequence[float], pct: float) -> float:
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


async def _route_all(router: RulesThenLocal, texts: Sequence[str], repeats: int) -> tuple[list[float], list[float]]:
    wall: list[float] = []
    cpu: list[float] = []
    for text in texts:  # warm-up pass, not measured
        await router.route(text)
    for _ in range(repeats):
        for text in texts:
            started, started_cpu = time.perf_counter(), time.thread_time()
            await router.route(text)
            cpu.append((time.thread_time() - started_cpu) * 1e6)
            wall.append((time.perf_counter() - started) * 1e6)
    return sorted(wall), sorted(cpu)


def measure(paths: Sequence[Path], repeats: int) -> dict[str, Any]:
    texts, source = texts_from(paths)
    if not texts:
        raise SystemExit(f"no texts to route in {source}")
    config = load_config()
    started = time.perf_counter()
    router = RulesThenLocal(RulesRouter(config), LocalRouter.from_config(config))
    train_ms = (time.perf_counter() - started) * 1000
    wall, cpu = asyncio.run(_route_all(router, texts, repeats))
    p99 = _percentile(wall, 99)
    return {
        "texts": len(texts), "source": source, "repeats": repeats, "routed": len(wall),
        "p50_us": round(_percentile(wall, 50), 1), "p99_us": round(p99, 1), "max_us": round(wall[-1], 1),
        "cpu_p50_us": round(_percentile(cpu, 50), 1), "cpu_p99_us": round(_percentile(cpu, 99), 1),
        "train_ms": round(train_ms, 1), "goal_p99_us": GOAL_P99_US, "meets_goal": p99 < GOAL_P99_US,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", type=Path, default=list(DEFAULT_DATA),
                        help="labelled JSONL ({\"text\", ...} a line); default benchmarks/data/realistic_heldout.jsonl "
                             "and ../shared/data/route_dev.jsonl, the config's route examples when missing")
    parser.add_argument("--repeats", type=int, default=5, help="measured passes over the texts")
    parser.add_argument("--quick", action="store_true", help="one measured pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    report = measure(args.data, 1 if args.quick else args.repeats)
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Rules then local models over {report['texts']} texts × {report['repeats']} "
                        f"({report['source']})")
    for column in ("p50 µs", "p99 µs", "max µs", "CPU p50 µs", "CPU p99 µs", "training ms"):
        table.add_column(column, justify="right")
    table.add_row(*(str(report[key]) for key in ("p50_us", "p99_us", "max_us", "cpu_p50_us", "cpu_p99_us",
                                                  "train_ms")))
    console = Console()
    console.print(table)
    console.print(f"goal p99 < {GOAL_P99_US / 1000:.0f} ms: {'met' if report['meets_goal'] else 'NOT met'}",
                  highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
