"""Run every benchmark as a subprocess with bounded sizes and print one table of results against the goals.

    .venv/bin/python -m benchmarks                    # full sizes (about 2 minutes on 2 cores)
    .venv/bin/python -m benchmarks --quick            # smaller sizes (about 1 minute)
    .venv/bin/python -m benchmarks --markdown         # the table as Markdown, for the README
    .venv/bin/python -m benchmarks --json benchmarks/results/run.json     # also save every number
    .venv/bin/python -m benchmarks --from-json benchmarks/results/run.json --markdown   # render a saved run
    .venv/bin/python -m benchmarks --only throughput,memory_rss

Each benchmark runs alone (one after the other, so they do not compete for the CPU) with `--json`, in a
session of its own: on timeout or Ctrl-C its whole process group (servers and fakes included) is stopped.
The exit status is 1 when a benchmark could not run (an `error` row), 0 otherwise; a missed goal is a
`FAIL` row, not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KB_DEV_DATA = REPO.parent / "shared" / "data" / "kb-dev"
PG_HOST, PG_PORT = "127.0.0.1", 5432
DEFAULT_PG = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"

PASS, FAIL, INFO, ERROR, SKIPPED = "pass", "FAIL", "–", "error", "skipped"


@dataclass(frozen=True)
class Metric:
    """One row of the table: a number of one benchmark, its goal, and whether it was met."""

    benchmark: str
    metric: str
    value: str
    goal: str = "–"
    status: str = INFO


Summary = Callable[[Mapping[str, Any]], list[Metric]]


@dataclass(frozen=True)
class Benchmark:
    """A script under benchmarks/, the arguments of its full and quick runs, and how to read its JSON."""

    name: str
    title: str
    full: tuple[str, ...] | None
    quick: tuple[str, ...] | None
    timeout_s: float
    summarize: Summary
    needs: Path | None = None
    needs_postgres: bool = False
    module: str | None = None

    def command(self, quick: bool) -> list[str] | None:
        args = self.quick if quick else self.full
        if args is None:
            return None
        return [sys.executable, "-m", f"benchmarks.{self.module or self.name}", *args, "--json"]


@dataclass
class Run:
    """What one benchmark run produced: its JSON report, or why there is none."""

    name: str
    command: list[str]
    seconds: float
    report: dict[str, Any] | None = None
    error: str | None = None
    skipped: str | None = None
    metrics: list[Metric] = field(default_factory=list)


def _goal(met: bool) -> str:
    return PASS if met else FAIL


# --- reading each benchmark's JSON ---------------------------------------------------------------------------


def ack_latency(r: Mapping[str, Any], title: str = "ack latency") -> list[Metric]:
    db = "PostgreSQL" if str(r.get("database", "")).startswith("postgres") else "SQLite"
    where = f"{r['requests']} events, {r['concurrency']} senders, LLM {r['llm_seconds']:g} s, {db}"
    statuses = {str(k): int(v) for k, v in r["statuses"].items()}
    ok = statuses.get("200", 0)
    return [
        Metric(title, f"p50 ({where})", f"{r['p50_ms']:.1f} ms"),
        Metric(title, "p99", f"{r['p99_ms']:.1f} ms", "< 50 ms", _goal(r["p99_ms"] < 50)),
        Metric(title, "acked with 200", f"{ok}/{sum(statuses.values())}", "all", _goal(ok == sum(statuses.values()))),
    ]


def ack_latency_pg(r: Mapping[str, Any]) -> list[Metric]:
    return ack_latency(r, "ack latency (PostgreSQL)")


def ack_latency_cold(r: Mapping[str, Any]) -> list[Metric]:
    title = "ack latency (cold start)"
    return [*ack_latency(r, title),
            Metric(title, "p99 of the requests sent in the first second", f"{r['first_second_p99_ms']:.1f} ms",
                   "< 50 ms", _goal(r["first_second_p99_ms"] < 50))]


def throughput(r: Mapping[str, Any]) -> list[Metric]:
    where = (f"{r['n']} msgs, L {r['latency_ms'] / 1000:g} s, C {r['concurrency']}, "
             f"k {r['llm_calls_per_message']:g} LLM call/msg")
    if r.get("limited_by", "llm") == "llm":
        limit = "C/(k·L)"
    else:  # the Slack adapter's start pacing is lower than what the LLM allows
        limit = f"start pacing (C/(k·L) = {r['llm_limit_messages_per_s']:g})"
    value = f"{r['messages_per_s']:.1f} vs {r['limit_messages_per_s']:.1f} ({r['ratio']:.0%})"
    if not r["complete"]:
        value += f"; only {r['answered']}/{r['n']} answered"
    goal = float(r.get("goal_ratio", 0.9))
    rows = [Metric("end-to-end throughput", f"msg/s vs limit {limit} ({where})", value, f"≥ {goal:.0%} of limit",
                   _goal(bool(r["complete"]) and r["ratio"] >= goal))]
    if r.get("server_cpu_ms_per_message") is not None:
        rows.append(Metric("end-to-end throughput", "server CPU per message (Slack HTTP + pipeline)",
                           f"{r['server_cpu_ms_per_message']:.1f} ms"))
    return rows


def pipeline_cpu(r: Mapping[str, Any], name: str = "pipeline CPU", backend: str = "SQLite") -> list[Metric]:
    mean = float(r["cpu_ms_per_message_mean"])
    return [
        Metric(name, f"per message, LLM excluded (mean of {r['messages']}, {backend})", f"{mean:.1f} ms",
               "< 5 ms", _goal(mean < 5)),
        Metric(name, "per message p99", f"{r['cpu_ms_per_message_p99']:.1f} ms"),
    ]


def pipeline_cpu_pg(r: Mapping[str, Any]) -> list[Metric]:
    return pipeline_cpu(r, "pipeline CPU (PostgreSQL)", "PostgreSQL")


def router_latency(r: Mapping[str, Any]) -> list[Metric]:
    where = f"{r['routed']} routings"
    rows = [
        Metric("local router", f"rules + local models p50 ({where})", f"{r['p50_us']:.0f} µs"),
        Metric("local router", "rules + local models p99", f"{r['p99_us']:.0f} µs", "< 2 ms",
               _goal(r["p99_us"] < r.get("goal_p99_us", 2000))),
    ]
    if "cpu_p99_us" in r:
        rows.append(Metric("local router", "rules + local models CPU p99", f"{r['cpu_p99_us']:.0f} µs"))
    return rows


def voting_ratio(r: Mapping[str, Any]) -> list[Metric]:
    where = f"N = {r['samples']}, {r['latency_ms']:g} ms/call, {r['repeats']} repeats"
    return [Metric("voting", f"vote ÷ one call, median ({where})",
                   f"{r['ratio_median']:.2f} (max {r['ratio_max']:.2f}; {r['vote_ms']:.0f} vs {r['single_ms']:.0f} ms)",
                   f"≤ {r.get('goal', 1.15):g}", _goal(r["ratio_median"] <= r.get("goal", 1.15)))]


def triage_throughput(r: Mapping[str, Any]) -> list[Metric]:
    where = f"{r['n']} msgs, {r['latency_ms']:g} ms/call, concurrency {r['concurrency']}"
    value = f"{r['seconds']:.1f} s vs ideal {r['ideal_seconds']:.1f} s ({r['efficiency']:.0%})"
    if r["failed"]:
        value += f"; {r['failed']} failed"
    return [Metric("triage", f"wall time vs ideal ({where})", value, "≥ 90% of ideal",
                   _goal(r["efficiency"] >= 0.9 and not r["failed"]))]


def hybrid_llm_share(r: Mapping[str, Any]) -> list[Metric]:
    goals = {"realistic": (0.97, 0.35), "cicd": (0.97, 0.35), "templated": (0.985, 0.25)}
    rows = []
    for name, result in r["sets"].items():
        at = result["configured"]
        accuracy, calls = goals.get(name, (0.97, 0.35))
        value = (f"{at['accuracy']:.3f} at {at['llm_calls_per_message']:.2f} calls/msg; "
                 f"{at['escalations_kept_wrong']}/{at['escalations']} escalations kept wrong")
        rows.append(Metric("hybrid routing", f"{name} ({at['n']} msgs), perfect LLM, threshold "
                           f"{r['configured_threshold']:g}", value,
                           f"≥ {accuracy:g} at ≤ {calls:g}, none kept wrong", _goal(bool(result["meets_goals"]))))
    return rows


def router_learning_curve(r: Mapping[str, Any]) -> list[Metric]:
    curve = r["curve"]
    first, last = curve[0], curve[-1]
    reached = r["labelled_to_reach_goals"]
    return [
        Metric("new domain", f"local macro-F1 on {r['n']} held-out msgs, {first['labelled']} → {last['labelled']} "
               "labelled", f"{first['macro_f1']:.3f} → {last['macro_f1']:.3f}", "≥ 0.85",
               _goal(last["macro_f1"] >= 0.85)),
        Metric("new domain", "labelled messages until every goal is met",
               str(reached) if reached is not None else "not reached", "reached", _goal(reached is not None)),
    ]


def memory_rss(r: Mapping[str, Any]) -> list[Metric]:
    rows = [Metric("memory (serve, HTTP mode)", "idle RSS after start-up", f"{r['idle_rss_mb']:.0f} MB", "< 150 MB",
                   _goal(r["idle_rss_mb"] < r.get("goal_idle_mb", 150)))]
    value = f"{r['loaded_rss_mb']:.0f} MB (peak {r['loaded_hwm_mb']:.0f} MB)"
    if not r["complete"]:
        value += f"; only {r['answered']}/{r['n']} answered"
    rows.append(Metric("memory (serve, HTTP mode)", f"RSS after {r['n']} messages", value))
    return rows


def storage_write(r: Mapping[str, Any]) -> list[Metric]:
    where = f"{r.get('messages', '?')} messages, {r.get('writers', '?')} writers"
    rows = [Metric("log writes", f"SQLite ({where})", f"{r['sqlite_msgs_per_s']:.0f} msgs/s")]
    pg = r.get("postgres_msgs_per_s")
    rows.append(Metric("log writes", "PostgreSQL", f"{pg:.0f} msgs/s" if pg is not None else "n/a",
                       status=INFO if pg is not None else f"{SKIPPED}: PostgreSQL unavailable"))
    return rows


def kb_retrieval(r: Mapping[str, Any]) -> list[Metric]:
    title = "knowledge retrieval"
    sqlite = r["sqlite"]
    kept = next(m for m in sqlite["methods"] if m["method"] == r["kept"])
    where = f"{r['questions']} dev questions, SQLite"
    rows = [Metric(title, f"R@1 / R@5 / MRR, {m['method']}{' (kept)' if m is kept else ''} ({where})",
                   f"{m['recall_at_1']:.3f} / {m['recall_at_5']:.3f} / {m['mrr']:.3f}") for m in sqlite["methods"]]
    rows += [
        Metric(title, f"recall@5, kept method ({where})", f"{kept['recall_at_5']:.3f}", "≥ 0.90",
               _goal(kept["recall_at_5"] >= 0.90)),
        Metric(title, "MRR, kept method", f"{kept['mrr']:.3f}", "≥ 0.75", _goal(kept["mrr"] >= 0.75)),
        Metric(title, f"abstained on unanswerable at min_score {sqlite['min_score']:g}", f"{kept['abstain_rate']:.0%}",
               "≥ 70%", _goal(kept["abstain_rate"] >= 0.70)),
        Metric(title, "answered answerable at min_score", f"{kept['answered_rate']:.0%}", "≥ 95%",
               _goal(kept["answered_rate"] >= 0.95)),
        Metric(title, "threshold tuned on one half, scored on the other (abstained / answered)",
               " · ".join(f"{c['abstain_rate']:.0%} / {c['answered_rate']:.0%}" for c in kept["cross_validated"])),
    ]
    postgres = r.get("postgres")
    if postgres:
        [pg] = postgres["methods"]
        rows.append(Metric(title, "R@1 / R@5 / MRR / abstained / answered, kept method, PostgreSQL",
                           f"{pg['recall_at_1']:.3f} / {pg['recall_at_5']:.3f} / {pg['mrr']:.3f} / "
                           f"{pg['abstain_rate']:.0%} / {pg['answered_rate']:.0%}"))
    for engine, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        indexed = r.get(engine)
        if indexed:
            rows.append(Metric(title, f"indexing, {indexed['pages']} pages ({name})",
                               f"{indexed['pages_per_s']:.1f} pages/s", "≥ 20 pages/s",
                               _goal(indexed["pages_per_s"] >= 20)))
        latency = r.get(f"{engine}_latency")
        if latency:
            rows.append(Metric(title, f"search p50 / p99 over {latency['passages']} passages ({name})",
                               f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms", "p99 < 20 ms",
                               _goal(latency["p99_ms"] < 20)))
    rows.append(Metric(title, "RSS of the static embedding table, once loaded", f"{r['embedder_rss_mb']:.0f} MB"))
    return rows


def streaming(r: Mapping[str, Any]) -> list[Metric]:
    title = "streamed answers"
    streamed, plain = r["streamed"], r["unstreamed"]
    where = f"Claude's first token at {r['first_token_s']:g} s, then {r['tokens_per_s']:g} tokens/s"
    gap = streamed["min_gap_between_stream_calls_s"]
    return [
        Metric(title, f"first words p50, streamed ({where}; {r['questions']} questions)",
               f"{streamed['first_words_p50_s']:.2f} s (max {streamed['first_words_max_s']:.2f})",
               f"≤ {r['goal_first_words_s']:g} s", _goal(streamed["first_words_max_s"] <= r["goal_first_words_s"])),
        Metric(title, "first words p50, not streamed", f"{plain['first_words_p50_s']:.2f} s"),
        Metric(title, "complete answer p50, streamed vs not",
               f"{streamed['complete_p50_s']:.2f} vs {plain['complete_p50_s']:.2f} s"),
        Metric(title, "Slack calls per answer, streamed (start, appends, stop)",
               f"{streamed['slack_calls_per_answer']:.1f}"),
        Metric(title, "shortest gap between two calls of one stream", f"{gap:.2f} s" if gap is not None else "n/a",
               f"≥ {r['goal_min_gap_s']:g} s", _goal(gap is not None and gap >= r["goal_min_gap_s"] - 0.01)),
    ]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("ack_latency", "ack latency", ("--requests", "400", "--concurrency", "20", "--llm-seconds", "2"),
              ("--requests", "150", "--concurrency", "20", "--llm-seconds", "2"), 240, ack_latency),
    Benchmark("ack_latency_pg", "ack latency (PostgreSQL)",
              ("--requests", "400", "--concurrency", "20", "--llm-seconds", "2", "--database-url", DEFAULT_PG),
              None, 240, ack_latency_pg, needs_postgres=True, module="ack_latency"),
    Benchmark("ack_latency_cold", "ack latency (cold start)",
              ("--cold", "--requests", "2000", "--concurrency", "50", "--llm-seconds", "2"),
              ("--cold", "--requests", "600", "--concurrency", "50", "--llm-seconds", "2"), 300, ack_latency_cold,
              module="ack_latency"),
    Benchmark("throughput", "end-to-end throughput", ("--n", "300", "--latency-ms", "1000", "--concurrency", "16"),
              ("--quick",), 300, throughput),
    Benchmark("pipeline_cpu", "pipeline CPU", ("--messages", "300"), ("--messages", "100"), 180, pipeline_cpu),
    Benchmark("pipeline_cpu_pg", "pipeline CPU (PostgreSQL)", ("--messages", "300", "--database-url", DEFAULT_PG),
              None, 180, pipeline_cpu_pg, needs_postgres=True, module="pipeline_cpu"),
    Benchmark("router_latency", "local router", ("--repeats", "5"), ("--quick",), 120, router_latency),
    Benchmark("voting_ratio", "voting", ("--repeats", "10"), ("--repeats", "3"), 180, voting_ratio),
    Benchmark("triage_throughput", "triage", ("--n", "1000"), ("--n", "400"), 240, triage_throughput),
    Benchmark("hybrid_llm_share", "hybrid routing", (), ("--quick",), 420, hybrid_llm_share),
    Benchmark("router_learning_curve", "new domain", (), ("--sizes", "0,100"), 420, router_learning_curve),
    Benchmark("memory_rss", "memory (serve, HTTP mode)", (), ("--quick",), 240, memory_rss),
    Benchmark("storage_write", "log writes", ("--messages", "500"), ("--messages", "200"), 180, storage_write),
    Benchmark("streaming", "streamed answers", ("--questions", "5"), ("--questions", "2"), 300, streaming),
    Benchmark("kb_retrieval", "knowledge retrieval", ("--data", str(KB_DEV_DATA)),
              ("--data", str(KB_DEV_DATA), "--quick", "--methods", "bm25,+pages"), 600, kb_retrieval,
              needs=KB_DEV_DATA / "questions.jsonl"),
)


# --- running -------------------------------------------------------------------------------------------------


def parse_report(stdout: str) -> dict[str, Any]:
    """The JSON object a benchmark printed: its last stdout line that is one (anything before it is ignored)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object on stdout")


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the benchmark and everything it started (its own session).

    SIGINT first: Python raises KeyboardInterrupt, so the benchmark's `finally` blocks stop its server,
    drop its PostgreSQL schema and remove its temp files; then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def run_one(benchmark: Benchmark, quick: bool) -> Run:
    command = benchmark.command(quick)
    if command is None:
        return Run(benchmark.name, [], 0.0, skipped="full run only")
    if benchmark.needs is not None and not benchmark.needs.exists():
        return Run(benchmark.name, command, 0.0, skipped=f"{benchmark.needs} not found")
    if benchmark.needs_postgres and not _reachable(PG_HOST, PG_PORT):
        return Run(benchmark.name, command, 0.0, skipped=f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}")
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        stdout, stderr = process.communicate(timeout=benchmark.timeout_s)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        return Run(benchmark.name, command, time.monotonic() - started,
                   error=f"timed out after {benchmark.timeout_s:.0f} s")
    except BaseException:
        _stop_group(process)
        raise
    seconds = time.monotonic() - started
    if process.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or "no output"
        return Run(benchmark.name, command, seconds, error=f"exit {process.returncode}: {tail}")
    try:
        report = parse_report(stdout)
    except ValueError as exc:
        return Run(benchmark.name, command, seconds, error=str(exc))
    return Run(benchmark.name, command, seconds, report=report)


def summarize(benchmark: Benchmark, run: Run) -> list[Metric]:
    """The table rows of one run; a report the summary cannot read is an error row, not a crash."""
    if run.skipped is not None:
        return [Metric(benchmark.title, "–", "not run", status=f"{SKIPPED}: {run.skipped}")]
    if run.error is not None or run.report is None:
        return [Metric(benchmark.title, "–", "not run", status=f"{ERROR}: {run.error or 'no report'}")]
    try:
        return benchmark.summarize(run.report)
    except (KeyError, TypeError, ValueError) as exc:
        return [Metric(benchmark.title, "–", "unreadable report",
                       status=f"{ERROR}: {type(exc).__name__} {exc}")]


# --- the machine -------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _load() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(),
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "load_start": _load(), "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
    }


def machine_line(machine: Mapping[str, Any]) -> str:
    ram = f"{machine['ram_gib']:g} GiB RAM" if machine.get("ram_gib") is not None else "RAM unknown"
    return f"{machine['cpu']}, {machine['cores']} cores, {ram}, Python {machine['python']}, {machine['os']}"


def _fmt_load(load: Sequence[float] | None) -> str:
    return " / ".join(f"{value:.2f}" for value in load) if load else "unknown"


def run_line(machine: Mapping[str, Any]) -> str:
    parts = [f"{machine['started']}", f"{'quick' if machine.get('quick') else 'full'} run"]
    if machine.get("commit"):
        parts.append(f"commit {machine['commit']}")
    if machine.get("seconds") is not None:
        parts.append(f"{machine['seconds']:.0f} s")
    parts.append(f"load average (1/5/15 min) {_fmt_load(machine.get('load_start'))} at start, "
                 f"{_fmt_load(machine.get('load_end'))} at end")
    return "; ".join(parts)


# --- printing ----------------------------------------------------------------------------------------------


def rows_of(results: Mapping[str, Any]) -> list[Metric]:
    return [Metric(**row) for run in results["runs"] for row in run["metrics"]]


def markdown(results: Mapping[str, Any]) -> str:
    machine = results["machine"]
    lines = [f"Machine: {machine_line(machine)}.  ", f"Run: {run_line(machine)}.", "",
             "| benchmark | metric | value | goal | result |", "|---|---|---|---|---|"]
    previous = None
    for row in rows_of(results):
        name = row.benchmark if row.benchmark != previous else ""
        previous = row.benchmark
        cells = (name, row.metric, row.value, row.goal, row.status)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def print_table(results: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    machine = results["machine"]
    console.print(f"Machine: {machine_line(machine)}", highlight=False)
    console.print(f"Run: {run_line(machine)}", highlight=False)
    table = Table(show_lines=False)
    for column in ("benchmark", "metric", "value", "goal", "result"):
        table.add_column(column, justify="right" if column == "value" else "left", overflow="fold")
    previous = None
    for row in rows_of(results):
        style = {PASS: "green", FAIL: "bold red"}.get(row.status, "yellow" if row.status.startswith(ERROR) else None)
        status = escape(row.status)
        table.add_row(escape(row.benchmark) if row.benchmark != previous else "", escape(row.metric),
                      escape(row.value), escape(row.goal), f"[{style}]{status}[/{style}]" if style else status)
        previous = row.benchmark
    console.print(table)


def run_all(benchmarks: Sequence[Benchmark], quick: bool) -> dict[str, Any]:
    machine = {**machine_info(), "quick": quick}
    started = time.monotonic()
    runs = []
    for index, benchmark in enumerate(benchmarks, start=1):
        print(f"[{index}/{len(benchmarks)}] {benchmark.name} …", end=" ", file=sys.stderr, flush=True)
        run = run_one(benchmark, quick)
        run.metrics = summarize(benchmark, run)
        note = run.skipped and f"skipped ({run.skipped})" or run.error and f"error ({run.error})" or "done"
        print(f"{note}, {run.seconds:.1f} s", file=sys.stderr, flush=True)
        runs.append(run)
    machine["load_end"] = _load()
    machine["seconds"] = round(time.monotonic() - started, 1)
    return {"machine": machine, "runs": [asdict(run) for run in runs]}


def resummarize(results: dict[str, Any]) -> dict[str, Any]:
    """A saved run's rows read again from its reports, so it renders as this version of the harness reads it."""
    known = {benchmark.name: benchmark for benchmark in BENCHMARKS}
    for saved in results["runs"]:
        benchmark = known.get(saved["name"])
        if benchmark is not None:
            run = Run(saved["name"], saved.get("command", []), saved.get("seconds", 0.0), report=saved.get("report"),
                      error=saved.get("error"), skipped=saved.get("skipped"))
            saved["metrics"] = [asdict(metric) for metric in summarize(benchmark, run)]
    return results


def select(names: str | None) -> list[Benchmark]:
    if not names:
        return list(BENCHMARKS)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {benchmark.name: benchmark for benchmark in BENCHMARKS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[name] for name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a fast pass")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also save machine, reports and rows as JSON")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated benchmark names "
                        f"({', '.join(b.name for b in BENCHMARKS)})")
    parser.add_argument("--from-json", metavar="FILE", type=Path, help="render a saved run instead of running")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        results = resummarize(json.loads(args.from_json.read_text(encoding="utf-8")))
    else:
        results = run_all(select(args.only), args.quick)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.markdown:
        print(markdown(results))
    else:
        print_table(results)
    failed = any(run.get("error") for run in results["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
