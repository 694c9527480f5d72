"""Knowledge-base retrieval: quality of each ranking method side by side, latency, indexing speed.

On the development set (80 Git documentation pages, 70 questions; README beside it):
- indexing rate (pages/s) of `kb add` on the corpus, SQLite and PostgreSQL;
- for every method in bot.knowledge.search.METHODS: recall@1/@5 and MRR on the 60 answerable questions,
  abstain rate on the 10 unanswerable ones and answered rate on the answerable ones at the shipped
  `[knowledge] min_score`, plus the threshold chosen on one half of the questions and scored on the other;
- the kept method on PostgreSQL too (a throwaway schema);
- retrieval p50/p99 over 10,000 passages (the corpus indexed five times as five sources), both engines;
- the RSS the static embedding table adds to a process once the knowledge base is used.

    .venv/bin/python -m benchmarks.kb_retrieval                    # table
    .venv/bin/python -m benchmarks.kb_retrieval --json             # one JSON object
    .venv/bin/python -m benchmarks.kb_retrieval --data DIR --database-url postgresql://…   # other set / server

The data set is GPL-2 documentation kept outside the repository; without it the benchmark says so and
exits 0 with a `skipped` report.
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._serve import throwaway_schema  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.knowledge.evaluate import RANK_DEPTH, LabelledQuestion, Outcome, read_questions, run, summary  # noqa: E402
from bot.knowledge.search import KEPT, METHODS, Method  # noqa: E402
from bot.knowledge.service import KnowledgeBase  # noqa: E402
from storage.engine import open_database, upgrade  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "kb-dev"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
LATENCY_COPIES = 5
GOALS = {"recall_at_5": 0.90, "mrr": 0.75, "abstain_rate": 0.70, "answered_rate": 0.95, "p99_ms": 20.0,
         "pages_per_s": 20.0}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def best_threshold(outcomes: Sequence[Outcome], min_answered: float = GOALS["answered_rate"]) -> float:
    """The highest threshold that still answers `min_answered` of the answerable questions."""
    answerable = sorted(o.relevance for o in outcomes if o.question.kind == "answerable")
    if not answerable:
        return 0.0
    allowed = int(len(answerable) * (1.0 - min_answered))
    return answerable[allowed] - 1e-6


def _at_threshold(outcomes: Sequence[Outcome], threshold: float) -> dict[str, Any]:
    answerable = [o for o in outcomes if o.question.kind == "answerable"]
    unanswerable = [o for o in outcomes if o.question.kind == "unanswerable"]
    return {
        "threshold": round(threshold, 4),
        "abstain_rate": round(sum(o.relevance < threshold for o in unanswerable) / len(unanswerable), 4)
        if unanswerable else None,
        "answered_rate": round(sum(o.relevance >= threshold for o in answerable) / len(answerable), 4)
        if answerable else None,
    }


def cross_validated(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Threshold chosen on one half of the questions (alternate lines), scored on the other half."""
    halves = [list(outcomes[0::2]), list(outcomes[1::2])]
    return [{"tuned_on": f"half {1 + i}", **_at_threshold(halves[1 - i], best_threshold(halves[i]))}
            for i in range(2)]


async def _evaluate(kb: KnowledgeBase, questions: Sequence[LabelledQuestion], method: Method,
                    min_score: float | None) -> dict[str, Any]:
    retriever = kb.retriever.with_method(method)
    started = time.perf_counter()
    outcomes = await run(questions, lambda q: retriever.search(q, limit=RANK_DEPTH,
                                                               min_score=min_score))
    report = summary(outcomes, time.perf_counter() - started)
    report["method"] = method.name
    report["description"] = method.description
    report["cross_validated"] = cross_validated(outcomes)
    # The same scores on each half of the questions (alternate lines): a method is kept only if it wins on both.
    report["halves"] = [summary(half, 0.0) for half in (outcomes[0::2], outcomes[1::2])]
    report["at_95_answered"] = _at_threshold(outcomes, best_threshold(outcomes))
    report["misses"] = [o.question.q for o in outcomes
                        if o.question.kind == "answerable" and (o.rank is None or o.rank > 5)]
    return report


async def quality(database_url: str, corpus: Path, questions: Sequence[LabelledQuestion],
                  methods: Sequence[Method]) -> dict[str, Any]:
    config = load_config()
    await upgrade(database_url)
    db = open_database(database_url)
    try:
        kb = KnowledgeBase(db, config)
        kb.embedder  # noqa: B018  (loaded before the clock starts: indexing speed excludes the one-off load)
        started = time.perf_counter()
        report = await kb.add([str(corpus)], name="dev")
        seconds = time.perf_counter() - started
        pages = report.added + report.updated + report.unchanged
        configured = config.knowledge.min_score
        min_score = None if configured == "auto" else configured
        results = [await _evaluate(kb, questions, method, min_score) for method in methods]
        threshold = (await kb.retriever.search("calibration", limit=1, min_score=min_score)).threshold
        return {"pages": pages, "passages": report.passages, "index_seconds": round(seconds, 2),
                "pages_per_s": round(pages / seconds, 1), "errors": report.errors, "methods": results,
                "min_score": round(threshold, 4)}
    finally:
        await db.dispose()


async def latency(database_url: str, corpus: Path, questions: Sequence[LabelledQuestion],
                  rounds: int) -> dict[str, Any]:
    config = load_config()
    await upgrade(database_url)
    db = open_database(database_url)
    try:
        kb = KnowledgeBase(db, config)
        for copy in range(LATENCY_COPIES):
            await kb.add([str(corpus)], name=f"copy{copy}")
        passages = sum(source.passages for source in await kb.sources())
        await kb.search("warm up the cache")
        timings: list[float] = []
        for _ in range(rounds):
            for question in questions:
                started = time.perf_counter()
                await kb.search(question.q, limit=config.knowledge.top_k)
                timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        return {"passages": passages, "queries": len(timings),
                "p50_ms": round(timings[len(timings) // 2], 2),
                "p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2)}
    finally:
        await db.dispose()


async def measure(data: Path, database_url: str | None, method_names: Sequence[str], rounds: int,
                  with_latency: bool = True) -> dict[str, Any]:
    corpus = data / "corpus"
    questions = read_questions(data / "questions.jsonl")
    methods = [METHODS[name] for name in method_names]
    before = _rss_kb()
    from bot.knowledge.embed import load_embedder

    load_embedder()
    report: dict[str, Any] = {"data": str(data), "questions": len(questions), "kept": KEPT.name,
                              "embedder_rss_mb": round((_rss_kb() - before) / 1024, 1)}
    with tempfile.TemporaryDirectory() as folder:
        report["sqlite"] = await quality(f"sqlite+aiosqlite:///{folder}/kb.db", corpus, questions, methods)
        if with_latency:
            report["sqlite_latency"] = await latency(f"sqlite+aiosqlite:///{folder}/lat.db", corpus, questions,
                                                     rounds)
    if database_url:
        try:
            async with throwaway_schema(database_url) as url:
                assert url is not None
                report["postgres"] = await quality(url, corpus, questions, [KEPT])
            if with_latency:
                async with throwaway_schema(database_url) as url:
                    assert url is not None
                    report["postgres_latency"] = await latency(url, corpus, questions, rounds)
        except OSError as exc:
            report["postgres_skipped"] = f"PostgreSQL unavailable: {exc}"
    return report


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 230)
    sqlite = report["sqlite"]
    table = Table(title=f"Retrieval on {report['data']} ({report['questions']} questions), SQLite, "
                        f"min_score {sqlite['min_score']}")
    for column in ("method", "R@1", "R@5", "MRR", "abstain", "answered", "halves R@1 · R@5 · MRR · abstain · answered",
                   "cross-validated abstain / answered", "p50 ms"):
        table.add_column(column, justify="left" if column == "method" else "right")
    rows = [("SQLite", m) for m in sqlite["methods"]]
    rows += [("PostgreSQL", m) for m in report.get("postgres", {}).get("methods", [])]
    for engine, m in rows:
        cv = " · ".join(f"{c['abstain_rate']:.0%} / {c['answered_rate']:.0%} @ {c['threshold']:.3f}"
                        for c in m["cross_validated"])
        name = m["method"] + (" (kept)" if m["method"] == report["kept"] else "")
        halves = " | ".join(f"{h['recall_at_1']:.2f} · {h['recall_at_5']:.2f} · {h['mrr']:.2f} · "
                            f"{h['abstain_rate']:.0%} · {h['answered_rate']:.0%}" for h in m["halves"])
        table.add_row(name if engine == "SQLite" else f"{name}, PostgreSQL", f"{m['recall_at_1']:.3f}",
                      f"{m['recall_at_5']:.3f}", f"{m['mrr']:.3f}", f"{m['abstain_rate']:.0%}",
                      f"{m['answered_rate']:.0%}", halves, cv, f"{m['p50_ms']:.1f}")
    console.print(table)
    for engine in ("sqlite", "postgres"):
        if engine in report:
            r = report[engine]
            console.print(f"indexing ({engine}): {r['pages']} pages, {r['passages']} passages in "
                          f"{r['index_seconds']} s = {r['pages_per_s']} pages/s", highlight=False)
        lat = report.get(f"{engine}_latency")
        if lat:
            console.print(f"latency ({engine}, {lat['passages']} passages, {lat['queries']} queries): "
                          f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms", highlight=False)
    console.print(f"static embedding table: +{report['embedder_rss_mb']} MB RSS once loaded", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with corpus/ and questions.jsonl")
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL server for the engine comparison "
                        "('' to skip)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to compare")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions for the latency run")
    parser.add_argument("--quick", action="store_true", help="one latency round")
    parser.add_argument("--no-latency", action="store_true", help="quality and indexing only")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if not (args.data / "questions.jsonl").exists() or not (args.data / "corpus").is_dir():
        message = f"{args.data} not found (needs corpus/ and questions.jsonl): nothing to measure"
        print(json.dumps({"skipped": message}) if args.json else message)
        return 0
    from bot.observability import configure_logging

    configure_logging("WARNING")
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    report = asyncio.run(measure(args.data, args.database_url or None, names, 1 if args.quick else args.rounds,
                                 not args.no_latency))
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
