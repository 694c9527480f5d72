"""`supportbot kb eval`: retrieval scored on labelled questions (recall@1/@5, MRR, abstention, latency)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bot.knowledge.search import SearchResult

Kind = Literal["answerable", "unanswerable"]
# Pages looked at for recall@5 and MRR.
RANK_DEPTH = 10


class EvalInputError(ValueError):
    """A labelled file that cannot be read, naming the line at fault."""


@dataclass(frozen=True)
class LabelledQuestion:
    q: str
    gold: tuple[str, ...]
    kind: Kind


@dataclass(frozen=True)
class Outcome:
    question: LabelledQuestion
    # 1-based rank of the first page matching a gold entry (pages counted once), None if absent.
    rank: int | None
    abstained: bool
    relevance: float
    milliseconds: float
    sources: tuple[str, ...]


def read_questions(path: Path) -> list[LabelledQuestion]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    questions: list[LabelledQuestion] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise EvalInputError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("q"), str) or not row["q"].strip():
            raise EvalInputError(f'{path}:{number}: expected {{"q": "...", "gold": [...], "kind": ...}}')
        gold = row.get("gold", [])
        if not isinstance(gold, list) or not all(isinstance(g, str) and g for g in gold):
            raise EvalInputError(f"{path}:{number}: gold must be a list of file names or URL suffixes")
        kind = row.get("kind", "answerable" if gold else "unanswerable")
        if kind not in ("answerable", "unanswerable"):
            raise EvalInputError(f"{path}:{number}: kind must be answerable or unanswerable, not {kind!r}")
        if kind == "answerable" and not gold:
            raise EvalInputError(f"{path}:{number}: an answerable question needs at least one gold entry")
        questions.append(LabelledQuestion(q=row["q"], gold=tuple(gold), kind=kind))
    if not questions:
        raise EvalInputError(f"{path}: no questions in it")
    return questions


def first_hit_rank(sources: Sequence[str], gold: Sequence[str]) -> int | None:
    """Rank (1-based) of the first source ending with a gold entry; several passages of one page count once."""
    pages: list[str] = list(dict.fromkeys(sources))
    for rank, source in enumerate(pages, start=1):
        if any(source.endswith(entry) for entry in gold):
            return rank
    return None


Search = Callable[[str], Awaitable[SearchResult]]


async def run(questions: Sequence[LabelledQuestion], search: Search) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for question in questions:
        started = time.perf_counter()
        result = await search(question.q)
        elapsed = (time.perf_counter() - started) * 1000
        # Ranking quality is read before the threshold; whether an answer was given is read after it.
        sources = tuple(hit.source for hit in result.ranked)
        outcomes.append(Outcome(question, first_hit_rank(sources, question.gold), result.abstained,
                                result.relevance, elapsed, sources))
    return outcomes


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary(outcomes: Sequence[Outcome], seconds: float) -> dict[str, Any]:
    """The `kb eval --format json` line; recall and MRR are over answerable questions only."""
    answerable = [o for o in outcomes if o.question.kind == "answerable"]
    unanswerable = [o for o in outcomes if o.question.kind == "unanswerable"]
    n = len(answerable)

    def share(count: float, total: int) -> float | None:
        return round(count / total, 4) if total else None

    latencies = [o.milliseconds for o in outcomes]
    return {
        "n": len(outcomes),
        "answerable": n,
        "recall_at_1": share(sum(o.rank == 1 for o in answerable), n),
        "recall_at_5": share(sum(o.rank is not None and o.rank <= 5 for o in answerable), n),
        "mrr": share(sum(1.0 / o.rank for o in answerable if o.rank is not None), n),
        "unanswerable": len(unanswerable),
        "abstain_rate": share(sum(o.abstained for o in unanswerable), len(unanswerable)),
        "answered_rate": share(sum(not o.abstained for o in answerable), n),
        "p50_ms": round(_percentile(latencies, 0.5), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "seconds": round(seconds, 3),
    }
