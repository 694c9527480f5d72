"""`supportbot kb`: add, sync, list, remove and search knowledge sources, score retrieval, and review the answers
people gave in resolved escalations (`kb proposals`, `kb approve`, `kb reject`)."""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.config import Config
from bot.settings import Settings

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge base: the team's docs the bot answers from.")

console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True)


class TableOrJson(StrEnum):
    table = "table"
    json = "json"


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _setup() -> tuple[Settings, Config]:
    from bot.cli import load_settings_and_config

    return load_settings_and_config()


@asynccontextmanager
async def _knowledge_base(settings: Settings, config: Config) -> AsyncIterator[Any]:
    from bot.knowledge.service import KnowledgeBase
    from storage.engine import open_database, upgrade

    await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    try:
        yield KnowledgeBase(db, config)
    finally:
        await db.dispose()


@asynccontextmanager
async def _proposal_review(settings: Settings, config: Config) -> AsyncIterator[Any]:
    from bot.knowledge.proposals import ProposalReview

    async with _knowledge_base(settings, config) as kb:
        yield ProposalReview(kb.db, kb, lambda: datetime.now(UTC))


def _run(work: Any) -> Any:
    from bot.cli import _run as run
    from bot.knowledge.errors import KnowledgeError

    try:
        return run(work)
    except KnowledgeError as exc:
        raise _fail(str(exc)) from None


def _print_reports(reports: list[Any], fmt: TableOrJson) -> None:
    if fmt is TableOrJson.json:
        for report in reports:
            sys.stdout.write(json.dumps(report.as_json(), ensure_ascii=False) + "\n")
        return
    for report in reports:
        console.print(f"[bold]{report.source}[/]: {report.added} added, {report.updated} updated, "
                      f"{report.unchanged} unchanged, {report.removed} removed; {report.passages} passages "
                      f"indexed in {report.seconds:.1f} s", highlight=False)
        for error in report.errors:
            errors.print(Text.assemble(("skipped ", "yellow"), f"{error['location']}: {error['error']}"),
                         highlight=False, soft_wrap=True)


@kb_app.command("add")
def add(
    locations: Annotated[list[str], typer.Argument(help="files, folders, web pages or sitemap.xml URLs")],
    name: Annotated[str | None, typer.Option(help="source name (default: from the first location)")] = None,
    route: Annotated[list[str] | None, typer.Option(
        "--route", help="only these routes may use the source (repeat; default: every route)")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one line)")] = TableOrJson.table,
) -> None:
    """Index documents into a source; adding the same documents again changes nothing."""
    settings, config = _setup()

    async def work() -> Any:
        async with _knowledge_base(settings, config) as kb:
            return await kb.add(locations, name=name, routes=route or [])

    _print_reports([_run(work())], format)


@kb_app.command("sync")
def sync(
    name: Annotated[str | None, typer.Argument(help="source to re-index (default: every source)")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one line a source)")] = (
        TableOrJson.table),
) -> None:
    """Re-index what changed (by content hash) and drop what disappeared."""
    settings, config = _setup()

    async def work() -> Any:
        async with _knowledge_base(settings, config) as kb:
            return await kb.sync(name)

    reports = _run(work())
    if not reports and format is TableOrJson.table:
        console.print("[dim]no sources to sync; add one with `supportbot kb add PATH|URL`[/]")
    _print_reports(reports, format)


@kb_app.command("list")
def list_sources(
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object a line)")] = (
        TableOrJson.table),
) -> None:
    """Sources with their documents, passages, last sync and errors."""
    settings, config = _setup()

    async def work() -> Any:
        async with _knowledge_base(settings, config) as kb:
            return await kb.sources()

    sources = _run(work())
    if format is TableOrJson.json:
        for source in sources:
            sys.stdout.write(json.dumps(source.as_json(), ensure_ascii=False) + "\n")
        return
    if not sources:
        console.print("[dim]no knowledge sources yet; add one with `supportbot kb add PATH|URL`[/]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "routes", "documents", "passages", "last sync", "errors", "locations"):
        table.add_column(column, no_wrap=column != "locations")
    for source in sources:
        table.add_row(source.name, source.kind, ", ".join(source.routes) or "all", str(source.documents),
                      str(source.passages),
                      source.last_sync_at.strftime("%Y-%m-%d %H:%M") if source.last_sync_at else "never",
                      str(len(source.errors)) if source.errors else "", ", ".join(source.locations))
    console.print(table)
    for source in sources:
        for error in source.errors:
            console.print(Text.assemble((f"{source.name}: ", "yellow"), f"{error['location']}: {error['error']}"),
                          highlight=False, soft_wrap=True)


@kb_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="source to delete with its documents")]) -> None:
    """Delete a source, its documents and passages."""
    settings, config = _setup()

    async def work() -> None:
        async with _knowledge_base(settings, config) as kb:
            await kb.remove(name)

    _run(work())
    console.print(f"removed source {name}", highlight=False)


@kb_app.command("search")
def search(
    question: Annotated[str, typer.Argument(help="the question, as a user would ask it")],
    route: Annotated[str | None, typer.Option(help="search what this route may use")] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=50, help="passages (default: [knowledge] top_k)")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object)")] = TableOrJson.table,
) -> None:
    """Ranked passages for a question, with scores; says so when the docs do not cover it."""
    settings, config = _setup()
    if route is not None and route not in config.routes:
        raise _fail(f"unknown route {route!r} (defined: {', '.join(config.routes)})")

    async def work() -> Any:
        async with _knowledge_base(settings, config) as kb:
            return await kb.search(question, route=route, limit=limit)

    result = _run(work())
    if format is TableOrJson.json:
        sys.stdout.write(json.dumps({
            "question": question, "abstained": result.abstained, "relevance": round(result.relevance, 4),
            "min_score": round(result.threshold, 4), "passages": [hit.as_json() for hit in result.hits],
        }, ensure_ascii=False) + "\n")
        return
    if result.abstained:
        console.print(f"[yellow]The docs do not cover this[/] (relevance {result.relevance:.2f} < min_score "
                      f"{result.threshold:.2f}).", highlight=False)
        if result.ranked:
            console.print("[dim]Closest passages, not used:[/]")
        _hits_table(result.ranked, dim=True)
        return
    console.print(f"relevance {result.relevance:.2f} (min_score {result.threshold:.2f})", highlight=False)
    _hits_table(result.hits, dim=False)


def _hits_table(hits: Any, *, dim: bool) -> None:
    """Each passage as a few lines: rank, score, title › heading, where it comes from, its opening words."""
    style = "dim" if dim else ""
    for rank, hit in enumerate(hits, start=1):
        where = f"{hit.title} › {hit.heading}" if hit.heading else hit.title
        console.print(Text.assemble((f"{rank:>2}. {hit.score:.3f}  ", style), (where, f"bold {style}".strip())),
                      highlight=False)
        console.print(Text(f"    {hit.source}", style="cyan" if not dim else "dim"), highlight=False)
        console.print(Text("    " + _clip(" ".join(hit.text.split()), 200), style=style), highlight=False)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@kb_app.command("eval")
def eval_command(
    file: Annotated[Path, typer.Argument(help='JSONL: {"q": ..., "gold": [file name or URL suffix, ...], '
                                         '"kind": "answerable"|"unanswerable"} a line')],
    route: Annotated[str | None, typer.Option(help="search what this route may use")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one line)")] = TableOrJson.table,
) -> None:
    """Score retrieval: recall@1/@5 and MRR on answerable questions, abstention on unanswerable ones."""
    from bot.knowledge.evaluate import RANK_DEPTH, EvalInputError, read_questions, run, summary

    settings, config = _setup()
    try:
        questions = read_questions(file)
    except EvalInputError as exc:
        raise _fail(str(exc)) from None

    async def work() -> Any:
        async with _knowledge_base(settings, config) as kb:
            if not await kb.has_sources(route):
                raise _fail("the knowledge base is empty: add documents with `supportbot kb add` first")
            started = time.perf_counter()
            outcomes = await run(questions, lambda q: kb.search(q, route=route, limit=RANK_DEPTH))
            return outcomes, time.perf_counter() - started

    outcomes, seconds = _run(work())
    report = summary(outcomes, seconds)
    if format is TableOrJson.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    min_score = config.knowledge.min_score
    shown = "calibrated on the docs" if min_score == "auto" else f"{min_score:.2f}"
    table = Table(title=f"Retrieval on {file} (min_score {shown})", box=None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.items():
        table.add_row(key, "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value)))
    console.print(table)
    misses = [o for o in outcomes if o.question.kind == "answerable" and (o.rank is None or o.rank > 5)]
    if misses:
        console.print(f"[bold]answerable questions without a gold page in the top 5[/] ({len(misses)}):")
        for outcome in misses:
            console.print(f"  {outcome.question.q}  [dim](gold {', '.join(outcome.question.gold)}; got "
                          f"{', '.join(Path(s).name or s for s in outcome.sources[:3])})[/]", highlight=False)


# --- answers people gave, proposed as knowledge ----------------------------------------------------------------


class ProposalStatusFilter(StrEnum):
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"


def _reviewer() -> str:
    try:
        return getpass.getuser()[:64] or "cli"
    except Exception:  # no user name in this environment (a container with a bare uid)
        return "cli"


def _proposal_id(raw: str) -> int:
    from storage.models import parse_row_id

    found = parse_row_id(raw.strip())
    if found is None:
        raise _fail(f"{raw[:20]!r} is not a proposal id (see `supportbot kb proposals`)")
    return found


@kb_app.command("proposals")
def proposals(
    status: Annotated[ProposalStatusFilter | None, typer.Option(help="only proposed, approved or rejected ones")] = (
        None),
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object a line)")] = (
        TableOrJson.table),
) -> None:
    """Answers people gave in resolved escalations, newest first; nothing is indexed before `kb approve`."""
    from bot.knowledge.proposals import proposal_json

    settings, config = _setup()

    async def work() -> Any:
        async with _proposal_review(settings, config) as review:
            return await review.proposals(status.value if status else None, limit=limit)

    found = _run(work())
    if format is TableOrJson.json:
        for proposal in found:
            sys.stdout.write(json.dumps(proposal_json(proposal), ensure_ascii=False) + "\n")
        return
    if not found:
        console.print("[dim]no proposed answers yet: they come from escalations resolved after a person answered "
                      "in the thread[/]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "status", "route", "question", "answer", "by", "reviewer", "link"):
        table.add_column(column, no_wrap=column in ("id", "status", "route", "by"), overflow="fold")
    for proposal in found:
        edited = " [dim](edited)[/]" if proposal.edited_answer is not None else ""
        table.add_row(str(proposal.id), proposal.status, proposal.route or "", _clip(proposal.question, 80),
                      Text(_clip(proposal.indexed_answer, 120)) + Text.from_markup(edited),
                      proposal.answered_by or "", proposal.reviewer or "", proposal.permalink or "")
    console.print(table)


@kb_app.command("approve")
def approve(
    proposal_id: Annotated[str, typer.Argument(metavar="ID", help="the proposal (see `kb proposals`)")],
    text: Annotated[str | None, typer.Option(help="the answer to index instead of the person's words "
                                                  "(e.g. with personal data taken out)")] = None,
    reviewer: Annotated[str | None, typer.Option(help="who approves (default: your user name)")] = None,
) -> None:
    """Index the answer in the source `answers`, so the bot answers the same question from it next time."""
    settings, config = _setup()
    chosen = _proposal_id(proposal_id)

    async def work() -> Any:
        async with _proposal_review(settings, config) as review:
            return await review.approve(chosen, reviewer=(reviewer or _reviewer())[:64], text=text)

    approved = _run(work())
    edited = " (edited)" if approved.edited_answer is not None else ""
    console.print(f"approved proposal {approved.id}{edited}: indexed in the source `answers`", highlight=False)


@kb_app.command("reject")
def reject(
    proposal_id: Annotated[str, typer.Argument(metavar="ID", help="the proposal (see `kb proposals`)")],
    reviewer: Annotated[str | None, typer.Option(help="who rejects (default: your user name)")] = None,
) -> None:
    """Keep the answer out of the knowledge base (removing it from the index when it was approved)."""
    settings, config = _setup()
    chosen = _proposal_id(proposal_id)

    async def work() -> Any:
        async with _proposal_review(settings, config) as review:
            return await review.reject(chosen, reviewer=(reviewer or _reviewer())[:64])

    rejected = _run(work())
    console.print(f"rejected proposal {rejected.id}: not in the knowledge base", highlight=False)
