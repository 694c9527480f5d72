"""Hybrid routing with a perfect LLM behind it: accuracy, LLM calls per message, and escalations kept wrong.

Runs the real HybridRouter (rules -> topic and severity models -> LLMRouter) over every message of each set,
with a fake LLM that counts its calls and always answers the true route: what hybrid mode is worth if Claude
is right whenever it is asked, and what it costs. Whatever the local tiers keep for themselves and get wrong
stays wrong; a true escalation must be caught by the rules or the severity detector, or sent to the LLM.

Sets (never trained on; see benchmarks/data/README.md): realistic_heldout.jsonl, cicd_heldout.jsonl (a new
domain, no team data), and the templated ../shared/data/route_dev.jsonl scored leave-fold-out (5 folds, each
routed by a router trained without the shipped rows whose text is in that fold).

Goals: realistic ≥ 0.97 at ≤ 0.35 calls/msg; templated ≥ 0.985 at ≤ 0.25; no escalation kept wrong.

    .venv/bin/python benchmarks/hybrid_llm_share.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.router_quality import (  # noqa: E402
    SETS,
    TEMPLATED_FOLDS,
    Labelled,
    read_jsonl,
    stratified_folds,
    templated_data,
)
from bot.config import Config, load_config  # noqa: E402
from bot.llm.base import LLMRequest, LLMResponse  # noqa: E402
from bot.router.features import normalized_key  # noqa: E402
from bot.router.hybrid import HybridRouter  # noqa: E402
from bot.router.llm import LLMRouter  # noqa: E402
from bot.router.local import LocalRouter  # noqa: E402
from bot.router.rules import RulesRouter  # noqa: E402
from bot.router.training import training_examples  # noqa: E402

THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.9)
GOALS = {"realistic": (0.97, 0.35), "cicd": (0.97, 0.35), "templated": (0.985, 0.25)}


class PerfectLLM:
    """Answers the route tool with the true route of the message being routed, and counts its calls."""

    provider = "perfect-fake"

    def __init__(self) -> None:
        self.truth = ""
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        return LLMResponse(text="", model=request.model, provider=self.provider, stop_reason="tool_use",
                           tool_input={"route": self.truth, "confidence": 1.0, "reason": "the true route"})


async def run(config: Config, local: LocalRouter, rows: Sequence[Labelled], threshold: float) -> Counter[str]:
    llm = PerfectLLM()
    router = HybridRouter(RulesRouter(config), local, LLMRouter(config, llm), threshold,
                          config.router.severity_threshold)
    escalation = config.escalation_route
    counts: Counter[str] = Counter()
    for row in rows:
        llm.truth = row.route
        decision = await router.route(row.text)
        counts["n"] += 1
        counts["correct"] += decision.route == row.route
        counts["escalations"] += row.route == escalation
        counts["escalations_kept_wrong"] += row.route == escalation and decision.route != escalation
        counts["lookalikes"] += "lookalike" in row.tags
        counts["lookalikes_escalated"] += "lookalike" in row.tags and decision.route == escalation
        counts[f"decided_by_{decision.decided_by}"] += 1
    counts["llm_calls"] = llm.calls
    return counts


def summarise(counts: Counter[str], threshold: float) -> dict[str, Any]:
    n = counts["n"]
    return {
        "threshold": threshold, "n": n, "accuracy": round(counts["correct"] / n, 4),
        "llm_calls_per_message": round(counts["llm_calls"] / n, 4),
        "escalations_kept_wrong": counts["escalations_kept_wrong"], "escalations": counts["escalations"],
        "lookalikes_escalated": counts["lookalikes_escalated"], "lookalikes": counts["lookalikes"],
        "decided_by": {tier: counts[f"decided_by_{tier}"] for tier in ("rules", "local", "llm", "hybrid")},
    }


async def held_out(config: Config, rows: Sequence[Labelled], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    local = await asyncio.to_thread(LocalRouter.from_config, config)
    return [summarise(await run(config, local, rows, threshold), threshold) for threshold in thresholds]


async def leave_fold_out(config: Config, rows: Sequence[Labelled], thresholds: Sequence[float]) -> list[
    dict[str, Any]
]:
    totals = {threshold: Counter[str]() for threshold in thresholds}
    base = training_examples(config)
    for fold in stratified_folds(rows, TEMPLATED_FOLDS):
        kept = {normalized_key(rows[i].text) for i in fold}
        examples = [(e, w) for e, w in base if normalized_key(e.text) not in kept]
        local = await asyncio.to_thread(LocalRouter.from_examples, config.route_names, examples,
                                        fallback=config.fallback_route, escalation_route=config.escalation_route)
        for threshold in thresholds:
            totals[threshold] += await run(config, local, [rows[i] for i in fold], threshold)
    return [summarise(totals[threshold], threshold) for threshold in thresholds]


async def measure(quick: bool) -> dict[str, Any]:
    config = load_config()
    configured = config.router.confidence_threshold
    thresholds = sorted({configured} if quick else {*THRESHOLDS, configured})
    sets: dict[str, Any] = {}
    for name in ("realistic", "cicd"):
        if SETS[name].exists():
            rows = [r for r in read_jsonl(SETS[name]) if r.route in config.routes]
            sets[name] = {"data": str(SETS[name]), "sweep": await held_out(config, rows, thresholds)}
    templated = templated_data()
    if templated is not None and not quick:
        rows = [r for r in read_jsonl(templated) if r.route in config.routes]
        sets["templated"] = {"data": str(templated), "sweep": await leave_fold_out(config, rows, thresholds)}
    for name, result in sets.items():
        at = next(row for row in result["sweep"] if row["threshold"] == configured)
        accuracy_goal, calls_goal = GOALS[name]
        result["configured"] = at
        result["meets_goals"] = (at["accuracy"] >= accuracy_goal and at["llm_calls_per_message"] <= calls_goal
                                 and at["escalations_kept_wrong"] == 0)
    return {"configured_threshold": configured, "severity_threshold": config.router.severity_threshold,
            "sets": sets}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="configured threshold only, no templated set")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    report = asyncio.run(measure(args.quick))
    if args.json:
        print(json.dumps(report))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Hybrid routing with a perfect LLM (* = configured threshold; severity threshold "
                        f"{report['severity_threshold']:g})")
    for column in ("set", "threshold", "accuracy", "LLM calls/msg", "esc kept wrong", "look-alikes escalated",
                   "rules", "local", "llm"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, result in report["sets"].items():
        for row in result["sweep"]:
            mark = " *" if row["threshold"] == report["configured_threshold"] else ""
            tiers = row["decided_by"]
            table.add_row(f"{name} ({row['n']})", f"{row['threshold']:.2f}{mark}", f"{row['accuracy']:.3f}",
                          f"{row['llm_calls_per_message']:.3f}",
                          f"{row['escalations_kept_wrong']}/{row['escalations']}",
                          f"{row['lookalikes_escalated']}/{row['lookalikes']}", str(tiers["rules"]),
                          str(tiers["local"]), str(tiers["llm"] + tiers["hybrid"]))
    Console(width=150).print(table)
    for name, result in report["sets"].items():
        goal, calls = GOALS[name]
        print(f"{name}: goal accuracy ≥ {goal} at ≤ {calls} calls/msg, no escalation kept wrong: "
              f"{'met' if result['meets_goals'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
