"""Cross-validated quality, calibration and speed of the local router, alone and behind the rules.

Three settings, each scored for the local router alone and for rules-then-local (what `local` mode does;
hybrid mode adds Claude below the confidence threshold):

  cv       stratified k-fold on the labelled file; trained on the config's examples, the shipped data and
           the other folds. Shipped rows whose text is in the test fold are dropped first (the shipped data
           includes public-dataset rows that are also in route_dev.jsonl).
  shipped  the product as shipped: config examples + shipped data (test-fold texts dropped), no rows of
           the labelled file; every row scored out of fold.
  own      a generalisation proxy: trained on the config's examples and our own authored rows only
           (no public-dataset rows at all), scored on every row of the file.

Run: python benchmarks/router_quality.py [FILE.jsonl] [--json] [--compare-sklearn]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    """Start-up (cold import, training) and per-message latency of the router as the product builds it."""
    probe = ("import time; t = time.perf_counter(); import bot.router.local; "
             "print((time.perf_counter() - t) * 1000)")
    import_ms = [float(subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                                      check=True).stdout) for _ in range(3)]
    base = training_examples(config)
    wall, cpu = _time_training(lambda: LocalRouter.from_config(config), repeats)
    # About 3,000 examples: the shipped set twice over, the copy reworded so that it is not a duplicate.
    bigger = base + [(LabeledText(f"{e.text} please, thanks", e.route), w) for e, w in base]
    wall_3k, cpu_3k = _time_training(
        lambda: LocalRouter.from_examples(config.route_names, bigger, fallback=config.fallback_route), repeats)
    router = LocalRouter.from_config(config)
    latencies: list[float] = []
    for _ in range(3):
        latencies += route_all(router, RulesRouter(config), rows)[2]
    latencies.sort()
    # CPU time of the routing thread: what a message costs, without the scheduler's pauses on a busy machine.
    cpu_latencies = []
    for _ in range(3):
        for row in rows:
            started = time.thread_time()
            router.classifier.predict(row.text)
            cpu_latencies.append((time.thread_time() - started) * 1000)
    cpu_latencies.sort()
    return {
        "import_ms": statistics.median(import_ms),
        "train_examples": float(len(base)),
        "train_wall_ms": wall,
        "train_cpu_ms": cpu,
        "train_examples_big": float(len(bigger)),
        "train_wall_ms_big": wall_3k,
        "train_cpu_ms_big": cpu_3k,
        "predict_p50_ms": _percentile(latencies, 50),
        "predict_p99_ms": _percentile(latencies, 99),
        "predict_cpu_p50_ms": _percentile(cpu_latencies, 50),
        "predict_cpu_p99_ms": _percentile(cpu_latencies, 99),
        "temperature": router.classifier.temperature,
    }


def _time_training(train: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `train`; CPU time is the steadier one on a shared machine."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        train()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def compare_sklearn(config: Config, rows: Sequence[Labelled], folds: int) -> dict[str, float]:
    """The same model built from scikit-learn parts, to weigh its import cost against its speed."""
    probe = ("import time; t = time.perf_counter(); import sklearn.feature_extraction.text, "
             "sklearn.linear_model, sklearn.calibration, sklearn.pipeline; print((time.perf_counter() - t) * 1000)")
    import_ms = statistics.median(
        float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
        for _ in range(3))
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    def build() -> object:
        features = FeatureUnion([
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2)),
        ])
        model = CalibratedClassifierCV(LogisticRegression(C=1.0, max_iter=500, class_weight="balanced"),
                                       method="temperature", cv=2)
        return make_pipeline(features, model)

    base = training_examples(config)
    texts, labels = [e.text for e, _ in base], [e.route for e, _ in base]
    wall, cpu = _time_training(lambda: build().fit(texts, labels), 3)  # type: ignore[attr-defined]
    fitted = build()
    fitted.fit(texts, labels)  # type: ignore[attr-defined]
    latencies = []
    for row in rows:
        started = time.perf_counter()
        fitted.predict_proba([row.text])  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    correct = []
    for fold in stratified_folds(rows, folds):
        held_out = {normalized_key(rows[i].text) for i in fold}
        kept = [(t, label) for t, label in zip(texts, labels, strict=True) if normalized_key(t) not in held_out]
        model = build()
        model.fit([t for t, _ in kept], [label for _, label in kept])  # type: ignore[attr-defined]
        predicted = model.predict([rows[i].text for i in fold])  # type: ignore[attr-defined]
        correct += [p == rows[i].route for p, i in zip(predicted, fold, strict=True)]
    return {
        "import_ms": import_ms, "train_wall_ms": wall, "train_cpu_ms": cpu,
        "predict_p50_ms": _percentile(latencies, 50), "predict_p99_ms": _percentile(latencies, 99),
        "shipped_setting_accuracy": _mean(correct),
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
    console = Console(width=150)
    console.print(f"{report['data']}: {report['n']} messages, {report['folds']}-fold; settings are explained "
                  "in this script's docstring.")
    summary = Table(title=f"Router quality (hybrid threshold {threshold:g})")
    columns = ("setting", "router", "accuracy", "macro-F1", "escalate R", "ECE", f"share < {threshold:g}",
               "acc ≥ thr", "acc < thr", "hybrid ceiling")
    for column in columns:
        summary.add_column(column, justify="left" if column in ("setting", "router") else "right")
    settings = report["settings"]
    assert isinstance(settings, dict)
    for setting, by_router in settings.items():
        for router, m in by_router.items():
            summary.add_row(setting, router, _fmt(m["accuracy"]), _fmt(m["macro_f1"]), _fmt(m["escalate_recall"]),
                            _fmt(m["ece"]), _fmt(m["below_threshold_share"]), _fmt(m["accuracy_confident"]),
                            _fmt(m["accuracy_unsure"]), _fmt(m["hybrid_ceiling_accuracy"]))
    console.print(summary)
    console.print("share < thr: would go to Claude in hybrid mode; hybrid ceiling: accuracy if Claude were always "
                  "right on those.")
    detail = Table(title="Per route P / R / F1")
    detail.add_column("route")
    for setting, by_router in settings.items():
        for router in by_router:
            detail.add_column(f"{setting}\n{router}", justify="right")
    for route in routes:
        cells = []
        for by_router in settings.values():
            for m in by_router.values():
                pr = m["per_route"][route]
                cells.append(f"{pr['precision']:.2f} / {pr['recall']:.2f} / {pr['f1']:.2f}")
        detail.add_row(route, *cells)
    console.print(detail)
    for title, key in (("Speed (the router as from_config builds it)", "speed"),
                       ("scikit-learn equivalent (for comparison)", "sklearn")):
        values = report.get(key)
        if not isinstance(values, dict):
            continue
        timing = Table(title=title)
        timing.add_column("measure")
        timing.add_column("value", justify="right")
        for name, value in values.items():
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
    parser.add_argument("--compare-sklearn", action="store_true",
                        help="also time an equivalent scikit-learn pipeline (import, training, prediction)")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    threshold = config.router.confidence_threshold if args.threshold is None else args.threshold
    rows = [r for r in read_jsonl(args.data) if r.route in config.routes]
    routes = config.route_names

    settings: dict[str, dict[str, dict[str, object]]] = {}
    cv_local, cv_combined, cv_train_ms = cross_validate(config, rows, args.folds, with_dev_training=True)
    settings["cv"] = {
        "local": metrics(cv_local, routes, threshold), "rules+local": metrics(cv_combined, routes, threshold)}
    sh_local, sh_combined, _ = cross_validate(config, rows, args.folds, with_dev_training=False)
    settings["shipped"] = {
        "local": metrics(sh_local, routes, threshold), "rules+local": metrics(sh_combined, routes, threshold)}
    own_local, own_combined = own_data_only(config, rows)
    settings["own"] = {
        "local": metrics(own_local, routes, threshold), "rules+local": metrics(own_combined, routes, threshold)}
    report: dict[str, object] = {
        "data": str(args.data), "n": len(rows), "folds": args.folds, "threshold": threshold,
        "settings": settings,
        "speed": {**speed(config, rows, args.repeats), "cv_fold_train_wall_ms": statistics.median(cv_train_ms)},
    }
    if args.compare_sklearn:
        report["sklearn"] = compare_sklearn(config, rows, args.folds)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, routes, threshold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
