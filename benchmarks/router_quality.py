"""Cross-validated quality, calibration and speed of the local router, alone and behind the rules."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Config, load_config  # noqa: E402
from bot.router.local import (  # noqa: E402
    LabeledText,
    LocalRouter,
    config_examples,
    normalized_key,
    training_examples,
)
from bot.router.rules import RulesRouter  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "route_dev.jsonl"
AUTHORED_SOURCE = "supportbot"
SHIPPED_DATA = REPO / "bot" / "router" / "data" / "training.jsonl"


@dataclass(frozen=True)
class Outcome:
    """One routed test message: the truth, what was predicted, how sure, and which tier decided."""

    truth: str
    route: str
    confidence: float
    decided_by: str


@dataclass(frozen=True)
class Labelled:
    text: str
    route: str


def read_jsonl(path: Path) -> list[Labelled]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            rows.append(Labelled(text=str(data["text"]), route=str(data["route"])))
        except (ValueError, KeyError) as exc:
            raise SystemExit(f"{path}:{number}: not a {{'text', 'route'}} JSON object ({exc})") from None
    return rows


def stratified_folds(rows: Sequence[Labelled], folds: int) -> list[list[int]]:
    """Deterministic stratified folds: within each route, every `folds`-th message goes to the same fold."""
    assignment: dict[int, int] = {}
    by_route: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_route.setdefault(row.route, []).append(index)
    for members in by_route.values():
        for position, index in enumerate(members):
            assignment[index] = position % folds
    return [[i for i in range(len(rows)) if assignment[i] == fold] for fold in range(folds)]


def route_all(router: LocalRouter, rules: RulesRouter, rows: Sequence[Labelled]) -> tuple[
    list[Outcome], list[Outcome], list[float]
]:
    """Each row through the local router alone and through rules-then-local; local latencies in ms."""
    local: list[Outcome] = []
    combined: list[Outcome] = []
    latencies: list[float] = []

    async def run() -> None:
        for row in rows:
            started = time.perf_counter()
            decision = await router.route(row.text)
            latencies.append((time.perf_counter() - started) * 1000)
            local.append(Outcome(row.route, decision.route, decision.confidence, "local"))
            rule = rules.match(row.text)
            chosen = rule if rule is not None else decision
            combined.append(Outcome(row.route, chosen.route, chosen.confidence, chosen.decided_by))

    asyncio.run(run())
    return local, combined, latencies


def metrics(outcomes: Sequence[Outcome], routes: Sequence[str], threshold: float) -> dict[str, object]:
    per_route: dict[str, dict[str, float]] = {}
    for route in routes:
        tp = sum(o.truth == route and o.route == route for o in outcomes)
        fp = sum(o.truth != route and o.route == route for o in outcomes)
        fn = sum(o.truth == route and o.route != route for o in outcomes)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_route[route] = {"precision": precision, "recall": recall, "f1": f1,
                            "support": sum(o.truth == route for o in outcomes)}
    scored = [r for r in routes if per_route[r]["support"]]
    correct = [o.truth == o.route for o in outcomes]
    sure = [o.confidence >= threshold for o in outcomes]
    confident = [c for c, s in zip(correct, sure, strict=True) if s]
    unsure = [c for c, s in zip(correct, sure, strict=True) if not s]
    return {
        "n": len(outcomes),
        "accuracy": _mean(correct),
        "macro_f1": statistics.fmean(per_route[r]["f1"] for r in scored) if scored else 0.0,
        "escalate_recall": per_route["escalate"]["recall"] if "escalate" in per_route else None,
        "per_route": per_route,
        "below_threshold_share": 1.0 - _mean(sure),
        "accuracy_confident": _mean(confident) if confident else None,
        "accuracy_unsure": _mean(unsure) if unsure else None,
        # What hybrid mode could reach if the LLM were right on every message sent to it.
        "hybrid_ceiling_accuracy": _mean([c or not s for c, s in zip(correct, sure, strict=True)]),
        "ece": expected_calibration_error(outcomes),
        "mean_confidence": _mean([o.confidence for o in outcomes]),
    }


def expected_calibration_error(outcomes: Sequence[Outcome], bins: int = 10) -> float:
    """Mean |accuracy - confidence| over ten equal-width confidence bins, weighted by bin size."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [o for o in outcomes if low <= o.confidence < high or (b == bins - 1 and o.confidence == 1)]
        if members:
            gap = _mean([o.truth == o.route for o in members]) - _mean([o.confidence for o in members])
            total += len(members) * abs(gap)
    return total / len(outcomes) if outcomes else 0.0


def _mean(values: Sequence[float | bool]) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0


def cross_validate(
    config: Config, rows: Sequence[Labelled], folds: int, *, with_dev_training: bool
) -> tuple[list[Outcome], list[Outcome], list[float]]:
    """Out-of-fold outcomes: each fold routed by a router that never saw its texts.

    The shipped data includes public-dataset rows that may also be in the file under test: any
    training row whose normalised text is in the test fold is dropped before training.
    """
    rules = RulesRouter(config)
    base = training_examples(config)
    local: list[Outcome] = []
    combined: list[Outcome] = []
    train_ms: list[float] = []
    for fold in stratified_folds(rows, folds):
        held_out = {normalized_key(rows[i].text) for i in fold}
        in_fold = set(fold)
        examples = [(e, w) for e, w in base if normalized_key(e.text) not in held_out]
        if with_dev_training:
            examples += [(LabeledText(r.text, r.route), 1.0) for i, r in enumerate(rows)
                         if i not in in_fold and normalized_key(r.text) not in held_out]
        started = time.perf_counter()
        router = LocalRouter.from_examples(config.route_names, examples, fallback=config.fallback_route)
        train_ms.append((time.perf_counter() - started) * 1000)
        fold_local, fold_combined, _ = route_all(router, rules, [rows[i] for i in fold])
        local += fold_local
        combined += fold_combined
    return local, combined, train_ms


def own_data_only(config: Config, rows: Sequence[Labelled]) -> tuple[list[Outcome], list[Outcome]]:
    """Trained on the config's examples and our own authored rows only, evaluated on every row."""
    own = [
        (LabeledText(str(data["text"]), str(data["route"])), 1.0)
        for line in SHIPPED_DATA.read_text(encoding="utf-8").splitlines()
        if line.strip() and (data := json.loads(line))["source"] == AUTHORED_SOURCE
        and data["route"] in config.routes
    ]
    router = LocalRouter.from_examples(config.route_names, config_examples(config) + own,
                                       fallback=config.fallback_route)
    local, combined, _ = route_all(router, RulesRouter(config), rows)
    return local, combined


def speed(config: Config, rows: Sequence[Labelled], repeats: int) -> dict[str, float]:
    """Start-up (import, training) and per-message latency of the router as the product builds it."""
    import_ms = []
    for _ in range(3):
        probe = ("import time; t = time.perf_counter(); import bot.router.local; "
                 "print((time.perf_counter() - t) * 1000)")
        out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                             check=True)
        import_ms.append(float(out.stdout.strip()))
    train_ms = []
    router = None
    for _ in range(repeats):
        started = time.perf_counter()
        router = LocalRouter.from_config(config)
        train_ms.append((time.perf_counter() - started) * 1000)
    assert router is not None
    latencies: list[float] = []
    for _ in range(3):
        latencies += route_all(router, RulesRouter(config), rows)[2]
    latencies.sort()
    return {
        "import_ms": statistics.median(import_ms),
        "train_ms": statistics.median(train_ms),
        "train_examples": float(len(training_examples(config))),
        "predict_p50_ms": _percentile(latencies, 50),
        "predict_p99_ms": _percentile(latencies, 99),
        "temperature": router.classifier.temperature,
    }


def _percentile(ordered: Sequence[float], pct: float) -> float:
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_report(report: dict[str, object], routes: Sequence[str], threshold: float) -> None:
    console = Console()
    summary = Table(title=f"Router quality (hybrid threshold {threshold:g})")
    for column in ("setting", "router", "n", "accuracy", "macro-F1", "escalate R", "ECE",
                   f"share < {threshold:g}", "acc sure", "acc unsure", "hybrid ceiling"):
        summary.add_column(column, justify="left" if column in ("setting", "router") else "right")
    settings = report["settings"]
    assert isinstance(settings, dict)
    for setting, by_router in settings.items():
        for router, m in by_router.items():
            summary.add_row(setting, router, _fmt(m["n"]), _fmt(m["accuracy"]), _fmt(m["macro_f1"]),
                            _fmt(m["escalate_recall"]), _fmt(m["ece"]), _fmt(m["below_threshold_share"]),
                            _fmt(m["accuracy_confident"]), _fmt(m["accuracy_unsure"]),
                            _fmt(m["hybrid_ceiling_accuracy"]))
    console.print(summary)
    for setting, by_router in settings.items():
        detail = Table(title=f"Per route — {setting}")
        detail.add_column("route")
        for router in by_router:
            for column in ("P", "R", "F1"):
                detail.add_column(f"{router} {column}", justify="right")
        for route in routes:
            cells = []
            for m in by_router.values():
                pr = m["per_route"][route]
                cells += [_fmt(pr["precision"]), _fmt(pr["recall"]), _fmt(pr["f1"])]
            detail.add_row(route, *cells)
        console.print(detail)
    timing = Table(title="Speed (the router as from_config builds it)")
    timing.add_column("measure")
    timing.add_column("value", justify="right")
    speed_report = report["speed"]
    assert isinstance(speed_report, dict)
    for name, value in speed_report.items():
        timing.add_row(name, _fmt(value))
    console.print(timing)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="labelled JSONL, one {'text', 'route'} object a line")
    parser.add_argument("--config", type=Path, default=None, help="supportbot TOML (default: built-in)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=None,
                        help="hybrid confidence threshold (default: the config's)")
    parser.add_argument("--repeats", type=int, default=5, help="training runs timed")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    threshold = config.router.confidence_threshold if args.threshold is None else args.threshold
    rows = [r for r in read_jsonl(args.data) if r.route in config.routes]
    routes = config.route_names

    settings: dict[str, dict[str, dict[str, object]]] = {}
    cv_local, cv_combined, cv_train_ms = cross_validate(config, rows, args.folds, with_dev_training=True)
    settings["cv: shipped + config + dev train folds"] = {
        "local": metrics(cv_local, routes, threshold), "rules+local": metrics(cv_combined, routes, threshold)}
    sh_local, sh_combined, _ = cross_validate(config, rows, args.folds, with_dev_training=False)
    settings["as shipped: shipped + config (test-fold rows removed)"] = {
        "local": metrics(sh_local, routes, threshold), "rules+local": metrics(sh_combined, routes, threshold)}
    own_local, own_combined = own_data_only(config, rows)
    settings["own authored + config only, all rows"] = {
        "local": metrics(own_local, routes, threshold), "rules+local": metrics(own_combined, routes, threshold)}
    report: dict[str, object] = {
        "data": str(args.data), "n": len(rows), "folds": args.folds, "threshold": threshold,
        "settings": settings,
        "speed": {**speed(config, rows, args.repeats), "cv_train_ms_median": statistics.median(cv_train_ms)},
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, routes, threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
