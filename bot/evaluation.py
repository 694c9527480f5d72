"""Scoring a router on a labelled JSONL file: accuracy, macro-F1, per-route precision/recall/F1, confusion matrix.

Whatever router is scored, the report also says what hybrid mode's local tiers (rules, then the topic and
severity models) would get wrong *and* keep, without asking the LLM: the `deferral` at the configured
threshold and, with `--sweep`, at others. Those confident errors are what no LLM behind them can fix.

Labels must be configured routes: a line whose route the config does not define is an error naming
its line, because a score against routes the router cannot answer would be meaningless. The router is
built from the config and the shipped training data only (no reviewer corrections from the database):
export corrections with `--export-corrections` and score them as a file to see what reviewers fixed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bot.config import Config
from bot.llm.base import LLM, LLMRequest, LLMResponse
from bot.router.base import RouteDecision
from bot.router.hybrid import deferral
from bot.settings import Settings

CONCURRENCY = 8
SWEEP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class EvalInputError(Exception):
    """A labelled file that cannot be scored; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Labelled:
    text: str
    route: str
    line: int


def read_labelled(path: Path, routes: Sequence[str]) -> list[Labelled]:
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalInputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalInputError(f"{path}: cannot read the file ({exc})") from None
    rows: list[Labelled] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise EvalInputError(f'{path}:{number}: expected an object like {{"text": "...", "route": "billing"}}')
        text, route = data.get("text"), data.get("route")
        if not isinstance(text, str) or not text.strip():
            raise EvalInputError(f'{path}:{number}: "text" must be a non-empty string')
        if not isinstance(route, str) or not route.strip():
            raise EvalInputError(f'{path}:{number}: "route" must be a non-empty string')
        rows.append(Labelled(text=text, route=route.strip(), line=number))
    if not rows:
        raise EvalInputError(f"{path}: no labelled messages (expected one JSON object a line)")
    unknown: dict[str, list[int]] = {}
    for row in rows:
        if row.route not in routes:
            unknown.setdefault(row.route, []).append(row.line)
    if unknown:
        listed = "; ".join(f"{route!r} on line{'s' if len(lines) > 1 else ''} {_lines(lines)}"
                           for route, lines in sorted(unknown.items()))
        raise EvalInputError(f"{path}: labels that are not configured routes: {listed}. "
                             f"Configured routes: {', '.join(routes)} (fix the labels or add the routes)")
    return rows


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    return shown + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")


@dataclass(frozen=True)
class RouteScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Outcome:
    truth: str
    predicted: str
    decided_by: str
    reached_llm: bool


@dataclass(frozen=True)
class Deferral:
    """What the rules and local models would decide alone at one threshold, and what they would get wrong."""

    threshold: float
    # Share of messages hybrid mode would send to the LLM (its LLM calls per message).
    deferred_share: float
    # Wrong and kept: no LLM behind the local tiers would see them.
    confident_errors: int
    # confident_errors over all messages: 1 - the accuracy of hybrid mode with an LLM that is always right.
    confident_error_rate: float
    # True escalations routed elsewhere without asking the LLM: the number to drive to zero.
    escalations_missed_confidently: int
    # Messages escalated (paging a person) without asking the LLM that should not have been.
    false_escalations: int

    def as_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "deferred_share": round(self.deferred_share, 4),
                "confident_errors": self.confident_errors,
                "confident_error_rate": round(self.confident_error_rate, 4),
                "escalations_missed_confidently": self.escalations_missed_confidently,
                "false_escalations": self.false_escalations}


def deferral_at(decisions: Sequence[tuple[str, RouteDecision]], threshold: float, *, severity_threshold: float,
                escalation_route: str | None) -> Deferral:
    """The `Deferral` of (true route, rules-or-local decision) pairs at `threshold`."""
    deferred = confident_errors = missed = false_escalations = 0
    for truth, decision in decisions:
        if deferral(decision, threshold=threshold, severity_threshold=severity_threshold,
                    escalation_route=escalation_route) is not None:
            deferred += 1
            continue
        if decision.route != truth:
            confident_errors += 1
            missed += truth == escalation_route
            false_escalations += decision.route == escalation_route
    n = len(decisions)
    return Deferral(threshold=threshold, deferred_share=deferred / n if n else 0.0,
                    confident_errors=confident_errors, confident_error_rate=confident_errors / n if n else 0.0,
                    escalations_missed_confidently=missed, false_escalations=false_escalations)


@dataclass(frozen=True)
class EvalReport:
    router: str
    n: int
    accuracy: float
    macro_f1: float
    per_route: dict[str, RouteScore]
    confusion: dict[str, dict[str, int]]
    llm_calls: int
    seconds: float
    llm_share: float
    llm_provider: str
    decided_by: dict[str, int] = field(default_factory=dict)
    note: str | None = None
    deferral: Deferral | None = None
    sweep: tuple[Deferral, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_route": {
                route: {"precision": round(s.precision, 4), "recall": round(s.recall, 4), "f1": round(s.f1, 4),
                        "support": s.support}
                for route, s in self.per_route.items()
            },
            "confusion": self.confusion,
            "llm_calls": self.llm_calls,
            "seconds": round(self.seconds, 3),
            "router": self.router,
            "llm_share": round(self.llm_share, 4),
            "llm_provider": self.llm_provider,
            "decided_by": self.decided_by,
            "note": self.note,
            "deferral": self.deferral.as_json() if self.deferral else None,
            **({"sweep": [row.as_json() for row in self.sweep]} if self.sweep else {}),
        }


def score(outcomes: Sequence[Outcome], routes: Sequence[str]) -> tuple[
    float, float, dict[str, RouteScore], dict[str, dict[str, int]]
]:
    """(accuracy, macro-F1, per-route scores, confusion) over the routes seen in labels or predictions.

    A route never predicted has precision 0, as one never labelled has recall 0 (scikit-learn's convention).
    """
    seen = {o.truth for o in outcomes} | {o.predicted for o in outcomes}
    labels = [route for route in routes if route in seen] + sorted(seen - set(routes))
    pairs = Counter((o.truth, o.predicted) for o in outcomes)
    per_route: dict[str, RouteScore] = {}
    for route in labels:
        true_positive = pairs[(route, route)]
        predicted = sum(count for (_, p), count in pairs.items() if p == route)
        support = sum(count for (t, _), count in pairs.items() if t == route)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_route[route] = RouteScore(precision, recall, f1, support)
    confusion = {
        truth: {predicted: pairs[(truth, predicted)] for predicted in labels}
        for truth in labels if per_route[truth].support
    }
    accuracy = sum(pairs[(r, r)] for r in labels) / len(outcomes) if outcomes else 0.0
    macro_f1 = sum(s.f1 for s in per_route.values()) / len(per_route) if per_route else 0.0
    return accuracy, macro_f1, per_route, confusion


class CountingLLM:
    """Counts the calls that reach the LLM provider, answered or not."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        return await self.inner.complete(request)


async def evaluate(settings: Settings, config: Config, rows: Sequence[Labelled], mode: str,
                   *, concurrency: int = CONCURRENCY, sweep: bool = False) -> EvalReport:
    from bot.router.hybrid import RulesThenLocal
    from bot.router.local import LocalRouter
    from bot.router.rules import RulesRouter
    from bot.runtime import build_router, make_llm

    local = await asyncio.to_thread(LocalRouter.from_config, config)
    first_tiers = RulesThenLocal(RulesRouter(config), local)
    kept = [(row.route, await first_tiers.route(row.text)) for row in rows]

    def at(threshold: float) -> Deferral:
        return deferral_at(kept, threshold, severity_threshold=config.router.severity_threshold,
                           escalation_route=config.escalation_route)

    llm = CountingLLM(make_llm(settings, config, local))
    router = build_router(config, llm, local, mode)
    limit = asyncio.Semaphore(concurrency)

    async def route_one(row: Labelled) -> Outcome:
        async with limit:
            decision = await router.route(row.text)
        return Outcome(row.route, decision.route, decision.decided_by, decision.llm_calls > 0)

    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(route_one(row) for row in rows))
    finally:
        close = getattr(llm.inner, "close", None)
        if close is not None:
            await close()
    seconds = time.perf_counter() - started
    accuracy, macro_f1, per_route, confusion = score(outcomes, config.route_names)
    reached = sum(o.reached_llm for o in outcomes)
    note = None
    if llm.provider == "offline" and reached:
        note = ("offline provider (no ANTHROPIC_API_KEY): the local classifier stood in for Claude on the "
                f"{reached} message{'s' if reached != 1 else ''} that reached the LLM")
    return EvalReport(
        router=mode, n=len(outcomes), accuracy=accuracy, macro_f1=macro_f1, per_route=per_route,
        confusion=confusion, llm_calls=llm.calls, seconds=seconds,
        llm_share=reached / len(outcomes) if outcomes else 0.0, llm_provider=llm.provider,
        decided_by=dict(Counter(o.decided_by for o in outcomes)), note=note,
        deferral=at(config.router.confidence_threshold),
        sweep=tuple(at(t) for t in sorted({*SWEEP_THRESHOLDS, config.router.confidence_threshold})) if sweep else (),
    )


def render_table(report: EvalReport, console: Console, *, source: str) -> None:
    console.print(f"[bold]router {report.router}[/] on {source}: {report.n} labelled messages", highlight=False)
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="dim")
    summary.add_column()
    summary.add_row("accuracy", f"{report.accuracy:.1%}")
    summary.add_row("macro-F1", f"{report.macro_f1:.3f}")
    if report.router in ("llm", "hybrid"):
        provider = report.llm_provider
        if provider == "offline":
            provider += " (no ANTHROPIC_API_KEY: the local classifier stands in for Claude)"
        summary.add_row("LLM provider", provider)
    summary.add_row("LLM calls", str(report.llm_calls))
    summary.add_row("reached the LLM", f"{report.llm_share:.1%} of messages")
    summary.add_row("decided by", ", ".join(f"{by} {count}" for by, count in sorted(report.decided_by.items())))
    summary.add_row("seconds", f"{report.seconds:.2f}")
    console.print(summary)
    if report.note:
        console.print(f"[yellow]note:[/] {report.note}", highlight=False)

    routes = Table(title="per route", title_justify="left")
    routes.add_column("route")
    for column in ("precision", "recall", "F1", "support"):
        routes.add_column(column, justify="right")
    for route, s in report.per_route.items():
        routes.add_row(route, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))
    console.print(routes)

    labels = list(report.per_route)
    matrix = Table(title="confusion (rows: label, columns: predicted)", title_justify="left")
    matrix.add_column("label \\ predicted")
    for label in labels:
        matrix.add_column(label, justify="right")
    for truth, row in report.confusion.items():
        matrix.add_row(truth, *(f"[bold]{row[p]}[/]" if p == truth else (str(row[p]) if row[p] else "[dim]·[/]")
                                for p in labels))
    console.print(matrix)
    if report.deferral is not None:
        render_deferral(report, console)


def render_deferral(report: EvalReport, console: Console) -> None:
    """What the rules and local models would get wrong and keep, at the threshold and (with --sweep) others."""
    console.print("[bold]deferral[/] (rules and local models alone, no LLM: what hybrid mode would send to the "
                  "LLM, and the errors it would keep)", highlight=False)
    table = Table()
    for column in ("threshold", "sent to the LLM", "confidently wrong", "of all messages", "escalations missed",
                   "false escalations", "accuracy if the LLM is always right"):
        table.add_column(column, justify="right")
    assert report.deferral is not None
    for row in report.sweep or (report.deferral,):
        mark = " *" if row.threshold == report.deferral.threshold else ""
        table.add_row(f"{row.threshold:.2f}{mark}", f"{row.deferred_share:.1%}", str(row.confident_errors),
                      f"{row.confident_error_rate:.1%}", str(row.escalations_missed_confidently),
                      str(row.false_escalations), f"{1 - row.confident_error_rate:.1%}")
    console.print(table)
    if report.sweep:
        console.print("* the configured [router] confidence_threshold", highlight=False, markup=False)


async def export_corrections(settings: Settings, out: Path) -> int:
    """Write every corrected message as a {"text", "route"} line (newest correction wins); returns how many."""
    from storage import repositories as repo
    from storage.engine import open_database, upgrade

    await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    try:
        async with db.sessions() as session:
            corrections = await repo.corrections_for_training(session)
    finally:
        await db.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for text, route in corrections:
            handle.write(json.dumps({"text": text, "route": route}, ensure_ascii=False) + "\n")
    return len(corrections)
