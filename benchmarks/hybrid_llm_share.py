"""Hybrid routing cost: the share of messages that reach Claude, and LLM calls per message, on a labelled file.

Hybrid mode asks Claude only when no rule matches and the local classifier's confidence is below
`[router] confidence_threshold`. This runs the real HybridRouter (rules -> LocalRouter -> LLMRouter)
over every message, with a stand-in LLM that counts calls (no network), at the configured
threshold and a few others, and reports which tier decided and how accurate each tier was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Config, load_config  # noqa: E402
from bot.llm.base import LLMRequest, LLMResponse  # noqa: E402
from bot.llm.offline import OfflineLLM  # noqa: E402
from bot.router.hybrid import HybridRouter  # noqa: E402
from bot.router.llm import LLMRouter  # noqa: E402
from bot.router.local import LocalRouter  # noqa: E402
from bot.router.rules import RulesRouter  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "route_dev.jsonl"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


class CountingLLM:
    """Counts route calls; answers with the offline provider so the run needs no key and no network."""

    provider = "counting"

    def __init__(self, config: Config) -> None:
        self.inner = OfflineLLM(config)
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        return await self.inner.complete(request)


def read(path: Path) -> list[tuple[str, str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                data = json.loads(line)
                rows.append((str(data["text"]), str(data["route"])))
            except (ValueError, KeyError) as exc:
                raise SystemExit(f"{path}:{number}: not a {{'text', 'route'}} JSON object ({exc})") from None
    return rows


async def run(config: Config, local: LocalRouter, rows: list[tuple[str, str]], threshold: float) -> dict[str, object]:
    llm = CountingLLM(config)
    router = HybridRouter(RulesRouter(config), local, LLMRouter(config, llm), threshold)
    tiers: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for text, truth in rows:
        decision = await router.route(text)
        tiers[decision.decided_by] += 1
        correct[decision.decided_by] += decision.route == truth
    n = len(rows)
    reached = tiers["llm"] + tiers["hybrid"]
    return {
        "threshold": threshold, "n": n, "llm_share": round(reached / n, 4),
        "llm_calls_per_message": round(llm.calls / n, 4), "llm_calls": llm.calls,
        "decided_by": {tier: tiers.get(tier, 0) for tier in ("rules", "local", "llm", "hybrid")},
        # Accuracy of the messages each cheap tier kept for itself (the LLM tier here is a stand-in).
        "rules_accuracy": round(correct["rules"] / tiers["rules"], 4) if tiers["rules"] else None,
        "local_accuracy": round(correct["local"] / tiers["local"], 4) if tiers["local"] else None,
    }


def shipped_texts() -> set[str]:
    """Texts in the classifier's shipped training data: a dev message found there is not a fair test."""
    shipped = REPO / "bot" / "router" / "data" / "training.jsonl"
    if not shipped.exists():
        return set()
    return {" ".join(str(json.loads(line).get("text", "")).lower().split())
            for line in shipped.read_text(encoding="utf-8").splitlines() if line.strip()}


async def measure(path: Path, thresholds: Sequence[float]) -> dict[str, object]:
    config = load_config()
    rows = read(path)
    local = LocalRouter.from_config(config)
    results = [await run(config, local, rows, threshold) for threshold in thresholds]
    configured = next(r for r in results if r["threshold"] == config.router.confidence_threshold)
    seen = shipped_texts()
    unseen = [(text, route) for text, route in rows if " ".join(text.lower().split()) not in seen]
    fair = await run(config, local, unseen, config.router.confidence_threshold) if unseen else None
    return {"data": str(path), "configured_threshold": config.router.confidence_threshold, **{
        k: configured[k] for k in ("n", "llm_share", "llm_calls_per_message", "decided_by")}, "sweep": results,
        "in_training_data": len(rows) - len(unseen), "unseen": fair}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="labelled JSONL ({\"text\", \"route\"} a line); default ../shared/data/route_dev.jsonl")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    config = load_config()
    thresholds = sorted({*THRESHOLDS, config.router.confidence_threshold})
    report = asyncio.run(measure(args.data, thresholds))
    if args.json:
        print(json.dumps(report))
        return 0
    table = Table(title=f"Hybrid routing on {args.data.name} ({report['n']} messages; * = configured threshold)")
    for column in ("threshold", "reach Claude", "LLM calls / message", "rules", "local", "llm", "local accuracy"):
        table.add_column(column, justify="right")
    for row in report["sweep"]:  # type: ignore[union-attr]
        tiers = row["decided_by"]
        mark = " *" if row["threshold"] == report["configured_threshold"] else ""
        table.add_row(f"{row['threshold']:.2f}{mark}", f"{row['llm_share']:.1%}", f"{row['llm_calls_per_message']:.3f}",
                      str(tiers["rules"]), str(tiers["local"]), str(tiers["llm"] + tiers["hybrid"]),
                      f"{row['local_accuracy']:.1%}" if row["local_accuracy"] is not None else "–")
    console = Console()
    console.print(table)
    fair = report["unseen"]
    if report["in_training_data"]:
        note = f"{report['in_training_data']} of {report['n']} messages are also in the shipped training data"
        if isinstance(fair, dict):
            note += (f"; on the other {fair['n']} at the configured threshold: {fair['llm_share']:.1%} reach "
                     f"Claude, {fair['llm_calls_per_message']:.3f} LLM calls/message, local accuracy "
                     f"{fair['local_accuracy']:.1%}")
        console.print(note, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
