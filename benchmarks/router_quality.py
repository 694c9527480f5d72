"""Routing quality of the local tiers on realistic held-out messages, a new domain and templated data, side by side.

Evaluation sets (none of them is ever trained on; see benchmarks/data/README.md):

  realistic  benchmarks/data/realistic_heldout.jsonl: 250 support-channel messages, 50 a route, written apart
             from the training data (typos, emoji, mentions, pasted errors, long reports, other languages,
             escalations without a trigger word, innocent look-alikes).
  cicd       benchmarks/data/cicd_heldout.jsonl: 150 messages of a CI/CD and artifact-registry company, a domain
             the shipped data does not cover (benchmarks/router_learning_curve.py adds the team's own labels).
  dev        benchmarks/data/realistic_dev.jsonl: 300 realistic messages the thresholds were tuned on (reported,
             but not a fair test).
  templated  ../shared/data/route_dev.jsonl: public-dataset utterances, scored leave-fold-out: 5 stratified
             folds, each routed by a router trained on the config examples and the shipped data minus every row
             whose text is in that fold (the shipped data includes some of those public rows).

Candidates, each behind the same configured rules:

  tfidf-lr    what ships: TF-IDF topic classifier and severity detector, familiarity-aware calibration
  tfidf-lr-1  the single five-way classifier of before (escalate as a topic), same features and calibration
  tfidf-knn   k nearest training texts by TF-IDF cosine, similarity-weighted vote (same training data)

Columns: local accuracy and macro-F1; "hybrid ✓": accuracy of hybrid mode with an LLM that is always right
(a fake answering the true route whenever the local tiers defer), "calls": LLM calls per message, "esc kept
wrong": true escalations neither caught nor deferred (goal 0), "look-alikes": innocent look-alikes escalated
without asking the LLM (goal ≤ 1 in 20), "false esc": any message escalated wrongly without asking.

Run: python benchmarks/router_quality.py [--json] [--sets realistic,cicd,dev,templated] [--candidates ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import Config, load_config  # noqa: E402
from bot.evaluation import deferral_at  # noqa: E402
from bot.router.base import RouteDecision  # noqa: E402
from bot.router.features import NeighbourIndex, Vocabulary, normalized_key, terms  # noqa: E402
from bot.router.hybrid import RulesThenLocal  # noqa: E402
from bot.router.local import LocalRouter  # noqa: E402
from bot.router.rules import RulesRouter  # noqa: E402
from bot.router.training import LabeledText, training_examples  # noqa: E402

DATA = REPO / "benchmarks" / "data"
SETS = {
    "realistic": DATA / "realistic_heldout.jsonl",
    "cicd": DATA / "cicd_heldout.jsonl",
    "dev": DATA / "realistic_dev.jsonl",
}
TEMPLATED_CANDIDATES = (REPO.parent / "shared" / "data" / "route_dev.jsonl",
                        REPO.parent.parent / "shared" / "data" / "route_dev.jsonl")
CANDIDATES = ("tfidf-lr", "tfidf-lr-1", "tfidf-knn")
TEMPLATED_FOLDS = 5
KNN_K = 7

Examples = list[tuple[LabeledText, float]]


@dataclass(frozen=True)
class Labelled:
    text: str
    route: str
    tags: tuple[str, ...] = ()


def read_jsonl(path: Path) -> list[Labelled]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            rows.append(Labelled(str(data["text"]), str(data["route"]), tuple(data.get("tags") or ())))
        except (ValueError, KeyError) as exc:
            raise SystemExit(f"{path}:{number}: not a {{'text', 'route'}} JSON object ({exc})") from None
    return rows


def templated_data() -> Path | None:
    return next((path for path in TEMPLATED_CANDIDATES if path.exists()), None)


# --------------------------------------------------------------------------- candidates


class KnnClassifier:
    """k nearest training texts by word TF-IDF cosine; a route's score is its share of their similarity."""

    # RulesThenLocal reads `local.classifier.escalation_route`: no severity axis here.
    escalation_route = None

    def __init__(self, routes: Sequence[str], examples: Examples) -> None:
        self.classifier = self
        self.routes = tuple(routes)
        texts = [e for e, _ in examples if e.route in self.routes]
        self.labels = [e.route for e in texts]
        self.vocabulary, encoded = Vocabulary.fit([terms(e.text) for e in texts])
        self.index = NeighbourIndex.build(len(texts), len(self.vocabulary.index[0]), *encoded)

    async def route(self, text: str, context: object = None) -> RouteDecision:
        _, cols, values = self.vocabulary.encode([terms(text)])
        similarity = self.index.similarities(cols, values)
        nearest = similarity.argsort()[-KNN_K:]
        scores = dict.fromkeys(self.routes, 0.0)
        for row in nearest:
            scores[self.labels[int(row)]] += float(similarity[row])
        total = sum(scores.values())
        if total <= 0:
            scores = {route: 1.0 / len(self.routes) for route in self.routes}
        else:
            # The vote's share, shrunk by how close the neighbours are: far neighbours vote weakly.
            closeness = float(similarity[nearest].mean())
            scores = {route: closeness * s / total + (1 - closeness) / len(self.routes) for route, s in scores.items()}
        best = max(scores, key=scores.__getitem__)
        return RouteDecision(route=best, confidence=scores[best], decided_by="local", reason="knn", scores=scores)


def build(candidate: str, config: Config, examples: Examples) -> RulesThenLocal:
    """The rules, then the candidate's local tier, trained on `examples`."""
    rules = RulesRouter(config)
    if candidate == "tfidf-knn":
        return RulesThenLocal(rules, KnnClassifier(config.route_names, examples))  # type: ignore[arg-type]
    escalation = config.escalation_route if candidate == "tfidf-lr" else None
    local = LocalRouter.from_examples(config.route_names, examples, fallback=config.fallback_route,
                                      escalation_route=escalation)
    return RulesThenLocal(rules, local)


# --------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """Decisions of one candidate on one set, and the numbers the goals are about."""

    decisions: list[tuple[Labelled, RouteDecision]] = field(default_factory=list)

    def summary(self, config: Config) -> dict[str, Any]:
        escalation = config.escalation_route
        pairs = [(row.route, decision) for row, decision in self.decisions]
        deferral = deferral_at(pairs, config.router.confidence_threshold,
                               severity_threshold=config.router.severity_threshold, escalation_route=escalation)
        routes = config.route_names
        f1s = []
        for route in routes:
            tp = sum(t == route and d.route == route for t, d in pairs)
            predicted = sum(d.route == route for _, d in pairs)
            support = sum(t == route for t, _ in pairs)
            if support or predicted:
                precision = tp / predicted if predicted else 0.0
                recall = tp / support if support else 0.0
                f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        lookalikes = [(row, d) for row, d in self.decisions if "lookalike" in row.tags]
        kept_lookalike_escalations = sum(
            d.route == escalation and d.route != row.route and deferral_at(
                [(row.route, d)], config.router.confidence_threshold,
                severity_threshold=config.router.severity_threshold, escalation_route=escalation).deferred_share == 0
            for row, d in lookalikes)
        escalations = [d for t, d in pairs if t == escalation]
        return {
            "n": len(pairs),
            "accuracy": _mean([t == d.route for t, d in pairs]),
            "macro_f1": statistics.fmean(f1s) if f1s else 0.0,
            "escalate_recall": _mean([d.route == escalation for d in escalations]) if escalations else None,
            "hybrid_perfect_accuracy": 1.0 - deferral.confident_error_rate,
            "llm_calls_per_message": deferral.deferred_share,
            "escalations_kept_wrong": deferral.escalations_missed_confidently,
            "escalations": len(escalations),
            "false_escalations": deferral.false_escalations,
            "lookalikes": len(lookalikes),
            "lookalikes_escalated_local": sum(d.route == escalation for _, d in lookalikes),
            "lookalikes_escalated_hybrid": kept_lookalike_escalations,
            "per_tag_accuracy": {
                tag: round(_mean([row.route == d.route for row, d in self.decisions if tag in row.tags]), 3)
                for tag in sorted({t for row, _ in self.decisions for t in row.tags})
            },
        }


def _mean(values: Sequence[float | bool]) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0


def route_all(router: RulesThenLocal, rows: Sequence[Labelled], scored: Scored) -> None:
    async def run() -> None:
        for row in rows:
            scored.decisions.append((row, await router.route(row.text)))

    asyncio.run(run())


def held_out_set(candidate: str, config: Config, rows: Sequence[Labelled], extra: Examples = ()) -> Scored:
    """The router as shipped (plus `extra` training rows), on rows it never saw."""
    scored = Scored()
    route_all(build(candidate, config, training_examples(config) + list(extra)), rows, scored)
    return scored


def templated_set(candidate: str, config: Config, rows: Sequence[Labelled], folds: int) -> Scored:
    """Leave-fold-out: shipped rows whose text is in the fold under test are dropped before training."""
    scored = Scored()
    base = training_examples(config)
    for fold in stratified_folds(rows, folds):
        held_out = {normalized_key(rows[i].text) for i in fold}
        examples = [(e, w) for e, w in base if normalized_key(e.text) not in held_out]
        route_all(build(candidate, config, examples), [rows[i] for i in fold], scored)
    return scored


def stratified_folds(rows: Sequence[Labelled], folds: int) -> list[list[int]]:
    """Deterministic stratified folds: within each route, every `folds`-th message goes to the same fold."""
    by_route: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_route.setdefault(row.route, []).append(index)
    assignment = {index: position % folds for members in by_route.values()
                  for position, index in enumerate(members)}
    return [[i for i in range(len(rows)) if assignment[i] == fold] for fold in range(folds)]


def evaluate(config: Config, sets: Sequence[str], candidates: Sequence[str]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for name in sets:
        if name == "templated":
            path = templated_data()
            if path is None:
                continue
            rows = [r for r in read_jsonl(path) if r.route in config.routes]
            run: Callable[[str], Scored] = lambda c, rows=rows: templated_set(c, config, rows, TEMPLATED_FOLDS)  # noqa: E731
        else:
            path = SETS[name]
            if not path.exists():
                continue
            rows = [r for r in read_jsonl(path) if r.route in config.routes]
            run = lambda c, rows=rows: held_out_set(c, config, rows)  # noqa: E731
        results[name] = {"data": str(path), "n": len(rows)}
        for candidate in candidates:
            started = time.perf_counter()
            summary = run(candidate).summary(config)
            results[name][candidate] = summary | {"seconds": round(time.perf_counter() - started, 1)}
    return {"threshold": config.router.confidence_threshold,
            "severity_threshold": config.router.severity_threshold, "sets": results}


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    table = Table(title=f"Local tiers and hybrid with a perfect LLM (confidence threshold {report['threshold']:g}, "
                        f"severity threshold {report['severity_threshold']:g})")
    for column in ("set", "candidate", "accuracy", "macro-F1", "esc recall", "hybrid ✓", "calls/msg",
                   "esc kept wrong", "look-alikes esc (local / hybrid)", "false esc"):
        table.add_column(column, justify="left" if column in ("set", "candidate") else "right")
    for name, result in report["sets"].items():
        for candidate, m in result.items():
            if not isinstance(m, dict):
                continue
            table.add_row(f"{name} ({result['n']})", candidate, _fmt(m["accuracy"]), _fmt(m["macro_f1"]),
                          _fmt(m["escalate_recall"]), _fmt(m["hybrid_perfect_accuracy"]),
                          _fmt(m["llm_calls_per_message"]), f"{m['escalations_kept_wrong']}/{m['escalations']}",
                          f"{m['lookalikes_escalated_local']} / {m['lookalikes_escalated_hybrid']} "
                          f"of {m['lookalikes']}",
                          str(m["false_escalations"]))
    console.print(table)
    tags = Table(title="Local accuracy by tag (tfidf-lr)")
    tags.add_column("set")
    all_tags = sorted({t for r in report["sets"].values() if isinstance(r.get("tfidf-lr"), dict)
                       for t in r["tfidf-lr"]["per_tag_accuracy"]})
    for tag in all_tags:
        tags.add_column(tag, justify="right")
    for name, result in report["sets"].items():
        if isinstance(result.get("tfidf-lr"), dict):
            per_tag = result["tfidf-lr"]["per_tag_accuracy"]
            tags.add_row(name, *(_fmt(per_tag.get(tag)) for tag in all_tags))
    console.print(tags)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="supportbot TOML (default: built-in)")
    parser.add_argument("--sets", default="realistic,cicd,dev,templated", help="comma-separated evaluation sets")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated local tiers to compare")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    report = evaluate(config, args.sets.split(","), args.candidates.split(","))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
