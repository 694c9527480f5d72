"""The `supportbot` command line: serve, chat, logs, eval, triage, db, oncall, escalations, sla."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.config import Config, load_config
from bot.domain import duration_text
from bot.errors import ConfigError
from bot.kb_cli import kb_app
from bot.settings import Settings
from bot.when import RELATIVE, parse_when

T = TypeVar("T")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="supportbot: a Slack bot for support channels.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
app.add_typer(kb_app, name="kb")

# Piped output (less, files) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True)


class TableOrJson(StrEnum):
    table = "table"
    json = "json"


class LogFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_settings_and_config() -> tuple[Settings, Config]:
    """Validate the environment and the config before anything starts; a clear message, not a traceback."""
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]).upper() or "environment"
        raise _fail(f"bad environment ({where}): {str(first['msg']).removeprefix('Value error, ')}") from None
    try:
        config = load_config(settings.supportbot_config)
    except ConfigError as exc:
        raise _fail(f"config refused: {exc}") from None
    return settings, config


def _run(coro: Awaitable[T]) -> T:
    from bot.observability import configure_logging

    configure_logging("WARNING")
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- serve and chat ---------------------------------------------------------------------------


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port")] = 3000,
    host: Annotated[str, typer.Option(
        help="interface to bind; beyond loopback needs SUPPORTBOT_DASHBOARD_TOKEN")] = "127.0.0.1",
) -> None:
    """Run the bot: Slack HTTP or Socket Mode with credentials, else local mode with the web playground."""
    from bot.errors import SupportbotError
    from bot.observability import configure_logging
    from bot.web.security import dashboard_token
    from bot.web.server import serve as run_server

    settings, config = load_settings_and_config()
    try:
        token = dashboard_token(settings)
    except SupportbotError as exc:
        raise _fail(str(exc)) from None
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        raise _fail(f"binding to {host} exposes the dashboard: set SUPPORTBOT_DASHBOARD_TOKEN first")
    configure_logging(settings.supportbot_log_level, settings.supportbot_log_format)
    try:
        asyncio.run(run_server(settings, config, host=host, port=port))
    except SupportbotError as exc:  # e.g. Slack refused SLACK_BOT_TOKEN: a clear message, not a traceback
        raise _fail(str(exc)) from None


@app.command()
def chat(
    user: Annotated[str, typer.Option(help="user id to chat as")] = "UCLI",
    thread: Annotated[bool | None, typer.Option("--thread/--no-thread",
                                                help="keep one thread (default when interactive)")] = None,
) -> None:
    """Chat with the bot in the terminal through the same pipeline; pipe lines in for one message each."""
    settings, config = load_settings_and_config()
    interactive = sys.stdin.isatty()
    keep_thread = interactive if thread is None else thread
    _run(_chat(settings, config, user=user, keep_thread=keep_thread, interactive=interactive))


async def _chat(settings: Settings, config: Config, *, user: str, keep_thread: bool, interactive: bool) -> None:
    from bot.domain import InboundMessage
    from bot.local_chat import LocalChat
    from bot.runtime import open_runtime

    chat_port = LocalChat()
    async with open_runtime(settings, config, chat=chat_port) as runtime:
        mode = "offline provider" if runtime.llm.provider == "offline" else "Claude"
        if interactive:
            console.print(f"[bold]supportbot chat[/] — {mode}, router {config.router.mode}. "
                          "Type a message; /new starts a new thread, /quit leaves.")
        root: str | None = None
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            while True:
                if interactive:
                    line = await asyncio.to_thread(console.input, "[bold cyan]you>[/] ")
                else:
                    line = await asyncio.to_thread(sys.stdin.readline)
                    if line == "":
                        break
                text = line.strip()
                if not text:
                    continue
                if text in ("/quit", "/exit"):
                    break
                if text == "/new":
                    root = None
                    console.print("[dim]new thread[/]")
                    continue
                ts = chat_port.next_ts()
                msg = InboundMessage(source="cli", team="TCLI", channel="CCLI", user=user, text=text, ts=ts,
                                     event_id=f"cli-{ts}", thread_ts=root if keep_thread else None,
                                     channel_type="im")
                if keep_thread and root is None:
                    root = ts
                _print_result(await runtime.pipeline.handle(msg))


def _print_result(result: Any) -> None:
    if result.route is None:
        note = "; ".join(result.notes) or result.outcome
        console.print(f"[dim]({note})[/]", highlight=False)
        return
    voted = ""
    if result.vote is not None:
        voted = f", voted {result.vote.majority} {result.vote.agreement:.0%}"
    escalated = f", escalated #{result.escalation_id}" if result.escalation_id else ""
    console.print(f"[bold]route:[/] {result.route} ({result.confidence:.2f}, {result.decided_by}{voted}{escalated})",
                  highlight=False)
    console.print(Text.assemble(("bot> ", "bold green"), result.reply or ""), highlight=False)
    for citation in result.citations:
        console.print(Text.assemble(("source: ", "dim"), citation.title, " — ", citation.source), highlight=False)


# --- logs ------------------------------------------------------------------------------------


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """A --since/--until value (see bot.when), or a clear error."""
    if value is None:
        return None
    try:
        return parse_when(value, now)
    except ValueError as exc:
        raise _fail(str(exc)) from None


LOG_COLUMNS = ["created_at", "channel", "thread_ts", "user", "text", "route", "confidence", "decided_by",
               "escalated", "voted", "vote_agreement", "reply", "latency_ms", "feedback", "resolution"]


@app.command()
def logs(
    route: Annotated[str | None, typer.Option(help="only this route")] = None,
    decided_by: Annotated[str | None, typer.Option(help="rules|local|llm|hybrid|correction")] = None,
    escalated: Annotated[bool | None, typer.Option("--escalated/--not-escalated", help="only (not) escalated")] = None,
    voted: Annotated[bool | None, typer.Option("--voted/--not-voted", help="only (not) voted")] = None,
    confidence_below: Annotated[float | None, typer.Option(help="only decisions less sure than this")] = None,
    channel: Annotated[str | None, typer.Option(help="only this channel id")] = None,
    user: Annotated[str | None, typer.Option(help="only this user id")] = None,
    since: Annotated[str | None, typer.Option(help="e.g. 24h, 7d, or 2026-01-31")] = None,
    until: Annotated[str | None, typer.Option(help="e.g. 1h, or 2026-02-01")] = None,
    search: Annotated[str | None, typer.Option("--search", "--text", help="text in the message or reply")] = None,
    feedback: Annotated[str | None, typer.Option(help="the asker rated the answer: good or bad")] = None,
    resolution: Annotated[str | None, typer.Option(
        help="resolved_by_bot|escalated|resolved_by_human|abandoned|open")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    format: Annotated[LogFormat, typer.Option(
        "--format", help="table, json (one object a line) or csv")] = LogFormat.table,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new decisions")] = False,
) -> None:
    """Review routing decisions, newest first (oldest first with --follow)."""
    from bot.log_query import LogQuery

    settings, config = load_settings_and_config()
    query, errors = LogQuery.read(
        {"route": route, "decided_by": decided_by, "escalated": escalated, "voted": voted,
         "confidence_below": confidence_below, "channel": channel, "user": user, "since": since, "until": until,
         "search": search, "feedback": feedback, "resolution": resolution}, routes=config.route_names,
        now=datetime.now(UTC))
    if errors:
        raise _fail("; ".join(f"--{error.replace('_', '-', error.index(':'))}" for error in errors))
    _run(_logs(settings, query.filter(limit=limit), format, follow))


async def _logs(settings: Settings, filters: Any, fmt: LogFormat, follow: bool) -> None:
    from dataclasses import replace

    from storage import review
    from storage.engine import open_database, upgrade

    await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    try:
        async with db.sessions() as session:
            rows = await review.query_logs(session, filters)
        rows.reverse() if follow else None
        emit = _log_emitter(fmt)
        emit(rows, True)
        last = max((row.id for row in rows), default=0)
        while follow:
            await asyncio.sleep(1.0)
            async with db.sessions() as session:
                rows = await review.query_logs(session, replace(filters, after_id=last, limit=1000), oldest_first=True)
            if rows:
                emit(rows, False)
                last = rows[-1].id
    except KeyboardInterrupt:
        pass
    finally:
        await db.dispose()


def _log_emitter(fmt: LogFormat) -> Callable[[list[Any], bool], None]:
    if fmt is LogFormat.json:
        def emit_json(rows: list[Any], _first: bool) -> None:
            for row in rows:
                sys.stdout.write(json.dumps(row.as_json(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        return emit_json
    if fmt is LogFormat.csv:
        def emit_csv(rows: list[Any], first: bool) -> None:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            if first:
                writer.writeheader()
            for row in rows:
                writer.writerow(row.as_json())
            sys.stdout.write(buffer.getvalue())
            sys.stdout.flush()
        return emit_csv

    def emit_table(rows: list[Any], first: bool) -> None:
        if first and not rows:
            console.print("[dim]no routing decisions match[/]")
            return
        table = Table(show_header=first, box=None, pad_edge=False)
        for column in ("when", "channel", "user", "route", "conf", "by", "esc", "vote", "end"):
            table.add_column(column, no_wrap=True)
        table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("reply", overflow="ellipsis", no_wrap=True, ratio=1)
        for row in rows:
            table.add_row(
                row.created_at.strftime("%Y-%m-%d %H:%M:%S"), row.channel, row.user or "", row.route,
                f"{row.confidence:.2f}", row.decided_by, "yes" if row.escalated else "",
                f"{row.vote_agreement:.0%}" if row.vote_agreement is not None else "",
                _thread_end(row.feedback, row.resolution),
                _clip(row.text, 60), _clip(row.reply or "", 60),
            )
        console.print(table)
    return emit_table


def _thread_end(feedback: str | None, resolution: str | None) -> str:
    """The asker's rating and the thread's resolution in a few characters: "👍 bot", "👎", "human"."""
    thumb = {"good": "👍", "bad": "👎"}.get(feedback or "", "")
    short = {"resolved_by_bot": "bot", "resolved_by_human": "human", "escalated": "esc", "abandoned": "gone"}
    return " ".join(part for part in (thumb, short.get(resolution or "", "")) if part)


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- triage ------------------------------------------------------------------------------------


@app.command()
def triage(
    file: Annotated[Path, typer.Argument(help="JSONL ({\"text\": ...} a line), CSV with a text column, "
                                         "or a Slack export (folder, or JSON array of messages)")],
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="messages in flight at once")] = 8,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object)")] = TableOrJson.table,
    batch: Annotated[bool, typer.Option("--batch", help="use the Message Batches API: half price, "
                                        "results in minutes to hours; for large jobs that can wait")] = False,
    export_labels: Annotated[Path | None, typer.Option(
        "--export-labels", help="also write {text, route, confidence, review} JSONL for [router] training_files; "
        "review is true where Claude was unsure")] = None,
) -> None:
    """Sectioning: classify and summarise many messages concurrently, then print an aggregate report."""
    from bot.triage import TriageInputError, load_messages, render_table, run_triage
    from bot.triage import export_labels as write_labels

    settings, config = load_settings_and_config()
    try:
        loaded = load_messages(file)
    except TriageInputError as exc:
        raise _fail(str(exc)) from None
    report = _run(run_triage(settings, config, loaded, concurrency=concurrency, batch=batch, progress_console=errors))
    if export_labels is not None:
        try:
            written, flagged = write_labels(report, config, export_labels)
        except OSError as exc:
            raise _fail(f"cannot write {export_labels}: {exc.strerror or exc}", 1) from None
        errors.print(f"exported {written} label{'s' if written != 1 else ''} to {export_labels}; {flagged} flagged "
                     "for review (check the route, then set \"review\": false; flagged lines are not trained on)",
                     highlight=False)
    if format is TableOrJson.json:
        sys.stdout.write(json.dumps(report.as_json(), ensure_ascii=False) + "\n")
    else:
        render_table(report, console)
    if report.outcomes and not report.triaged:
        raise typer.Exit(1)


# --- eval --------------------------------------------------------------------------------------


class EvalRouter(StrEnum):
    rules = "rules"
    local = "local"
    llm = "llm"
    hybrid = "hybrid"


@app.command("eval")
def eval_command(
    file: Annotated[Path | None, typer.Argument(help='labelled JSONL: {"text": ..., "route": ...} a line')] = None,
    router: Annotated[EvalRouter | None, typer.Option(help="router to score (default: [router] mode)")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one line)")] = TableOrJson.table,
    export_corrections: Annotated[Path | None, typer.Option(
        "--export-corrections", help="write reviewers' route corrections as {text, route} JSONL to this file")] = None,
    sweep: Annotated[bool, typer.Option(
        "--sweep", help="show the deferral (what the local tiers keep and get wrong) at several thresholds")] = False,
) -> None:
    """Score a router on a labelled file: accuracy, macro-F1, per-route precision/recall/F1, confusion matrix."""
    from bot.evaluation import EvalInputError, evaluate, read_labelled, render_table
    from bot.evaluation import export_corrections as export

    settings, config = load_settings_and_config()
    if file is None and export_corrections is None:
        raise _fail("give a labelled FILE.jsonl to score, or --export-corrections OUT.jsonl (or both)")
    if export_corrections is not None:
        count = _run(export(settings, export_corrections))
        errors.print(f"exported {count} route correction{'s' if count != 1 else ''} to {export_corrections}",
                     highlight=False)
    if file is None:
        return
    try:
        rows = read_labelled(file, config.route_names)
    except EvalInputError as exc:
        raise _fail(str(exc)) from None
    report = _run(evaluate(settings, config, rows, (router.value if router else config.router.mode), sweep=sweep))
    if format is TableOrJson.json:
        sys.stdout.write(json.dumps(report.as_json(), ensure_ascii=False) + "\n")
    else:
        render_table(report, console, source=str(file))


# --- database ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply Alembic migrations to DATABASE_URL (serve also does this on start)."""
    from sqlalchemy.engine import make_url

    from storage.engine import normalize_url, upgrade_blocking

    settings, _ = load_settings_and_config()
    try:
        upgrade_blocking(settings.database_url, revision)
    except Exception as exc:
        raise _fail(f"migration failed: {type(exc).__name__}: {exc}", 1) from None
    safe = make_url(normalize_url(settings.database_url)).render_as_string(hide_password=True)
    console.print(f"database at {safe} is at revision {revision}", highlight=False)


# --- escalations and on-call --------------------------------------------------------------------


@app.command()
def escalations(
    open_only: Annotated[bool, typer.Option("--open", help="only paged or acknowledged ones")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object a line)")] = (
        TableOrJson.table),
) -> None:
    """List escalations, newest first: age, state, level, re-pages, who acknowledged and resolved."""
    settings, _ = load_settings_and_config()
    rows = _run(_escalations(settings, open_only=open_only, limit=limit))
    now = datetime.now(UTC)
    if format is TableOrJson.json:
        for row in rows:
            sys.stdout.write(json.dumps(row.as_json(now), ensure_ascii=False) + "\n")
        return
    if not rows:
        console.print("[dim]no open escalations[/]" if open_only else "[dim]no escalations yet[/]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "age", "state", "level", "re-pages", "trigger", "route", "from", "channel",
                   "acknowledged", "resolved"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        state = row.state if row.paged or row.state != "paged" else "paged (unpaged: retrying)"
        table.add_row(str(row.id), _age(row.age_s(now)), state, str(row.level), str(row.repages), row.trigger,
                      row.route or "", row.requester, row.channel, row.acknowledged_by or "", row.resolved_by or "")
    console.print(table)


async def _escalations(settings: Settings, *, open_only: bool, limit: int) -> list[Any]:
    from bot.escalation import list_escalations
    from storage.engine import open_database, upgrade

    await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    try:
        async with db.sessions() as session:
            return await list_escalations(session, open_only=open_only, limit=limit)
    finally:
        await db.dispose()


def _moment(value: str, now: datetime) -> datetime:
    """'7d' from now, or an ISO date/time (UTC when no zone is given)."""
    ago = parse_since(value, now)
    assert ago is not None
    return now + (now - ago) if RELATIVE.fullmatch(value) else ago


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def oncall(
    at: Annotated[str | None, typer.Option(help="another moment, e.g. 2026-01-10T12:00 (UTC unless a zone "
                                                "is given) or 7d for a week from now")] = None,
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object)")] = TableOrJson.table,
) -> None:
    """Who is on call now (or --at a moment), and the rotation through that week."""
    from bot.escalation import oncall_report

    _, config = load_settings_and_config()
    now = datetime.now(UTC)
    report = oncall_report(config, now if at is None else _moment(at, now))
    if format is TableOrJson.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
        return
    who = ", ".join(report["oncall"]) or (f"user group {report['usergroup']}" if report["usergroup"] else "nobody")
    console.print(f"[bold]On call at {report['now']}[/] ({report['source']}): {who}", highlight=False)
    if report["usergroup"]:
        console.print(f"user group: {report['usergroup']} (mentioned on pages; members may press the buttons)",
                      highlight=False)
    if report["staff"]:
        console.print(f"staff (may press the buttons too): {', '.join(report['staff'])}", highlight=False)
    where = report["channel"] or "DM to each on-call person"
    console.print(f"pages go to {where}; re-paged every {report['ack_timeout_s']}s up to {report['repage_max']} "
                  f"times, then level 2 ({report['fallback_channel'] or 'the whole group'})", highlight=False)
    table = Table(title=f"The week ({report['timezone']})", box=None, pad_edge=False)
    for column in ("from", "to", "on call", "by"):
        table.add_column(column, no_wrap=True)
    for slot in report["week"]:
        start, end = datetime.fromisoformat(slot["start"]), datetime.fromisoformat(slot["end"])
        table.add_row(start.strftime("%a %d %b %H:%M"), end.strftime("%a %d %b %H:%M"),
                      ", ".join(slot["users"]) or (report["usergroup"] or "nobody"), slot["source"])
    console.print(table)


# --- response times ---------------------------------------------------------------------------------------

SLA_METRIC_COLUMNS = (("first_response", "first response"), ("first_human_response", "first human response"),
                      ("resolution", "resolution"))


@app.command()
def sla(
    since: Annotated[str, typer.Option(help="e.g. 24h, 7d, or 2026-01-31 (clocks started since then)")] = "7d",
    format: Annotated[TableOrJson, typer.Option("--format", help="table, or json (one object a line: each "
                                                                 "route, then the overall one)")] = TableOrJson.table,
) -> None:
    """First response, first human response after a page and time to resolution, per route and overall:
    count, p50/p90, the target, the share met in time, breaches, still running."""
    settings, config = load_settings_and_config()
    now = datetime.now(UTC)
    start = parse_since(since, now)
    scopes = _run(_sla(settings, config, start, now))
    if format is TableOrJson.json:
        for scope in scopes:
            sys.stdout.write(json.dumps(scope.as_json(start), ensure_ascii=False) + "\n")
        return
    table = Table(title=f"Response times since {since}", box=None, pad_edge=False)
    for column in ("route", "metric", "count", "p50", "p90", "target", "met", "breaches", "open"):
        table.add_column(column, no_wrap=True)
    for scope in scopes:
        name = "all routes" if scope.overall else (scope.route or "(not routed)")
        for metric, label in SLA_METRIC_COLUMNS:
            stats = scope.metrics[metric]
            table.add_row(name, label, str(stats.count), _span(stats.p50_s), _span(stats.p90_s), _span(stats.target_s),
                          "" if stats.share_met is None else f"{stats.share_met:.0%}", str(stats.breaches),
                          str(stats.open), style="bold" if scope.overall else None)
    console.print(table)


async def _sla(settings: Settings, config: Config, since: datetime | None, now: datetime) -> list[Any]:
    from bot.sla.policy import SlaPolicy
    from bot.sla.report import sla_report
    from storage.engine import open_database, upgrade
    from storage.sla import clocks_since

    await upgrade(settings.database_url)
    db = open_database(settings.database_url)
    try:
        async with db.sessions() as session:
            clocks = await clocks_since(session, since)
    finally:
        await db.dispose()
    return sla_report(clocks, SlaPolicy(config.sla), now)


def _span(seconds: float | None) -> str:
    return "" if seconds is None else duration_text(seconds)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
