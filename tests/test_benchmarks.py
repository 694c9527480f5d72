"""The benchmark harness (`python -m benchmarks`): reading each script's JSON, the table, and one real quick run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run_all
from benchmarks.run_all import BENCHMARKS, ERROR, FAIL, PASS, Benchmark, Metric, Run

REPO = Path(__file__).resolve().parent.parent

# One report per benchmark, as each script prints it with --json (trimmed to the keys the harness reads).
CANNED: dict[str, dict[str, Any]] = {
    "ack_latency": {"requests": 400, "concurrency": 20, "llm_seconds": 2.0, "database": "sqlite+aiosqlite",
                    "p50_ms": 21.3, "p90_ms": 30.1, "p99_ms": 44.9, "statuses": {"200": 400}},
    "ack_latency_pg": {"requests": 400, "concurrency": 20, "llm_seconds": 2.0, "database": "postgresql+asyncpg",
                       "p50_ms": 19.0, "p99_ms": 61.0, "statuses": {"200": 399, "500": 1}},
    "ack_latency_cold": {"requests": 2000, "concurrency": 50, "llm_seconds": 2.0, "database": "sqlite+aiosqlite",
                         "p50_ms": 9.0, "p99_ms": 41.0, "first_second_p99_ms": 48.0, "statuses": {"200": 2000}},
    "throughput": {"n": 300, "answered": 300, "complete": True, "latency_ms": 1000.0, "concurrency": 16,
                   "messages_per_s": 15.2, "llm_limit_messages_per_s": 16.0, "start_pacing_messages_per_s": 20.0,
                   "limit_messages_per_s": 16.0, "limited_by": "llm", "ratio": 0.95, "goal_ratio": 0.9,
                   "llm_calls_per_message": 1.0, "meets_goal": True, "server_cpu_ms_per_message": 18.7},
    "pipeline_cpu": {"messages": 300, "cpu_ms_per_message_mean": 10.4, "cpu_ms_per_message_p50": 9.9,
                     "cpu_ms_per_message_p99": 19.9, "wall_ms_per_message": 18.0},
    "pipeline_cpu_pg": {"messages": 300, "cpu_ms_per_message_mean": 3.9, "cpu_ms_per_message_p50": 3.8,
                        "cpu_ms_per_message_p99": 4.2, "wall_ms_per_message": 6.0},
    "router_latency": {"texts": 450, "routed": 2250, "p50_us": 71.4, "p99_us": 154.6, "goal_p99_us": 2000.0},
    "voting_ratio": {"samples": 5, "latency_ms": 300.0, "repeats": 10, "single_ms": 307.0, "vote_ms": 318.0,
                     "ratio_median": 1.03, "ratio_max": 1.07, "goal": 1.15},
    "triage_throughput": {"n": 1000, "latency_ms": 200.0, "concurrency": 16, "seconds": 13.4,
                          "ideal_seconds": 12.5, "efficiency": 0.933, "failed": 0},
    "hybrid_llm_share": {"configured_threshold": 0.75, "sets": {
        "realistic": {"meets_goals": False, "configured": {
            "threshold": 0.75, "n": 250, "accuracy": 0.988, "llm_calls_per_message": 0.264,
            "escalations_kept_wrong": 1, "escalations": 50}},
        "cicd": {"meets_goals": True, "configured": {
            "threshold": 0.75, "n": 150, "accuracy": 0.9933, "llm_calls_per_message": 0.32,
            "escalations_kept_wrong": 0, "escalations": 30}}}},
    "router_learning_curve": {"n": 150, "labelled_to_reach_goals": 0, "curve": [
        {"labelled": 0, "macro_f1": 0.894}, {"labelled": 50, "macro_f1": 0.914}]},
    "memory_rss": {"n": 500, "answered": 500, "complete": True, "idle_rss_mb": 161.3, "idle_hwm_mb": 161.3,
                   "loaded_rss_mb": 170.2, "loaded_hwm_mb": 171.0, "goal_idle_mb": 150.0},
    "storage_write": {"sqlite_msgs_per_s": 173.2, "postgres_msgs_per_s": None, "messages": 500, "writers": 8},
    "streaming": {"questions": 5, "first_token_s": 0.8, "tokens_per_s": 50.0, "goal_first_words_s": 1.5,
                  "goal_min_gap_s": 1.0,
                  "streamed": {"first_words_p50_s": 0.85, "first_words_max_s": 0.9, "complete_p50_s": 3.95,
                               "slack_calls_per_answer": 4.0, "min_gap_between_stream_calls_s": 1.0},
                  "unstreamed": {"first_words_p50_s": 3.42, "first_words_max_s": 3.45, "complete_p50_s": 3.42,
                                 "slack_calls_per_answer": 1.0, "min_gap_between_stream_calls_s": None}},
    "kb_retrieval": {
        "questions": 70, "kept": "+pages", "embedder_rss_mb": 21.0,
        "sqlite": {"pages": 80, "passages": 2079, "pages_per_s": 24.0, "min_score": 0.745, "methods": [
            {"method": "bm25", "recall_at_1": 0.41, "recall_at_5": 0.77, "mrr": 0.55, "abstain_rate": 0.9,
             "answered_rate": 0.95, "cross_validated": []},
            {"method": "+pages", "recall_at_1": 0.5, "recall_at_5": 0.8, "mrr": 0.61, "abstain_rate": 0.9,
             "answered_rate": 0.95, "cross_validated": [{"abstain_rate": 0.43, "answered_rate": 1.0},
                                                        {"abstain_rate": 1.0, "answered_rate": 0.72}]}]},
        "sqlite_latency": {"passages": 10395, "queries": 210, "p50_ms": 9.0, "p99_ms": 25.0},
    },
}


def _run(name: str, report: dict[str, Any] | None = None, **kwargs: Any) -> Run:
    return Run(name, ["python", "-m", f"benchmarks.{name}"], 1.0, report=report, **kwargs)


def _benchmark(name: str) -> Benchmark:
    return next(b for b in BENCHMARKS if b.name == name)


def _statuses(name: str, report: dict[str, Any]) -> dict[str, str]:
    return {row.metric.split(" (")[0]: row.status for row in run_all.summarize(_benchmark(name), _run(name, report))}


def _results(runs: list[Run]) -> dict[str, Any]:
    for run in runs:
        run.metrics = run_all.summarize(_benchmark(run.name), run)
    machine = {"cpu": "AMD EPYC", "cores": 2, "ram_gib": 23.5, "python": "3.11.7", "os": "Linux 6.1",
               "load_start": [1.2, 1.0, 0.9], "load_end": [2.5, 1.4, 1.0], "started": "2026-01-05 10:00 UTC",
               "commit": "abc1234", "quick": True, "seconds": 95.0}
    from dataclasses import asdict

    return {"machine": machine, "runs": [asdict(run) for run in runs]}


def test_every_benchmark_has_a_canned_report_that_reads_into_rows_without_errors() -> None:
    assert {b.name for b in BENCHMARKS} == set(CANNED)
    for benchmark in BENCHMARKS:
        rows = run_all.summarize(benchmark, _run(benchmark.name, CANNED[benchmark.name]))
        assert rows, benchmark.name
        assert all(row.benchmark == benchmark.title for row in rows)
        assert not [row for row in rows if row.status.startswith(ERROR)], rows


def test_goals_are_judged_from_the_numbers() -> None:
    assert _statuses("ack_latency", CANNED["ack_latency"]) == {"p50": "–", "p99": PASS, "acked with 200": PASS}
    assert _statuses("ack_latency_pg", CANNED["ack_latency_pg"])["p99"] == FAIL
    assert _statuses("ack_latency_pg", CANNED["ack_latency_pg"])["acked with 200"] == FAIL
    assert _statuses("pipeline_cpu", CANNED["pipeline_cpu"])["per message, LLM excluded"] == FAIL
    fast = {**CANNED["pipeline_cpu"], "cpu_ms_per_message_mean": 4.2}
    assert _statuses("pipeline_cpu", fast)["per message, LLM excluded"] == PASS
    assert _statuses("pipeline_cpu_pg", CANNED["pipeline_cpu_pg"])["per message, LLM excluded"] == PASS
    assert _statuses("router_latency", CANNED["router_latency"])["rules + local models p99"] == PASS
    split_vote = {**CANNED["voting_ratio"], "ratio_median": 1.2}
    assert _statuses("voting_ratio", split_vote)["vote ÷ one call, median"] == FAIL
    assert _statuses("triage_throughput", CANNED["triage_throughput"])["wall time vs ideal"] == PASS
    failed = {**CANNED["triage_throughput"], "failed": 3}
    assert _statuses("triage_throughput", failed)["wall time vs ideal"] == FAIL
    assert _statuses("memory_rss", CANNED["memory_rss"])["idle RSS after start-up"] == FAIL
    knowledge = _statuses("kb_retrieval", CANNED["kb_retrieval"])
    assert (knowledge["recall@5, kept method"], knowledge["answered answerable at min_score"]) == (FAIL, PASS)
    assert (knowledge["search p50 / p99 over 10395 passages"], knowledge["indexing, 80 pages"]) == (FAIL, PASS)
    streams = _statuses("streaming", CANNED["streaming"])
    assert (streams["first words p50, streamed"], streams["shortest gap between two calls of one stream"]) == (
        PASS, PASS)
    late = {**CANNED["streaming"], "streamed": {**CANNED["streaming"]["streamed"], "first_words_max_s": 2.4,
                                                "min_gap_between_stream_calls_s": 0.4}}
    assert set(_statuses("streaming", late).values()) >= {FAIL}
    slow = {**CANNED["throughput"], "messages_per_s": 9.2, "ratio": 0.575}
    assert _statuses("throughput", slow)["msg/s vs limit C/(k·L)"] == FAIL
    incomplete = {**CANNED["throughput"], "answered": 290, "complete": False}
    assert _statuses("throughput", incomplete)["msg/s vs limit C/(k·L)"] == FAIL


def test_values_carry_units_and_what_was_measured() -> None:
    rows = run_all.summarize(_benchmark("throughput"), _run("throughput", CANNED["throughput"]))
    assert rows[0].value == "15.2 vs 16.0 (95%)"
    assert rows[0].metric == "msg/s vs limit C/(k·L) (300 msgs, L 1 s, C 16, k 1 LLM call/msg)"
    paced = {**CANNED["throughput"], "latency_ms": 500.0, "llm_limit_messages_per_s": 32.0,
             "limit_messages_per_s": 20.0, "limited_by": "start pacing", "messages_per_s": 19.8, "ratio": 0.99}
    rows = run_all.summarize(_benchmark("throughput"), _run("throughput", paced))
    assert rows[0].metric.startswith("msg/s vs limit start pacing (C/(k·L) = 32)")
    assert (rows[0].value, rows[0].status) == ("19.8 vs 20.0 (99%)", PASS)
    hybrid = run_all.summarize(_benchmark("hybrid_llm_share"), _run("hybrid_llm_share", CANNED["hybrid_llm_share"]))
    assert [row.value for row in hybrid] == ["0.988 at 0.26 calls/msg; 1/50 escalations kept wrong",
                                             "0.993 at 0.32 calls/msg; 0/30 escalations kept wrong"]
    assert [row.status for row in hybrid] == [FAIL, PASS]
    curve = run_all.summarize(_benchmark("router_learning_curve"),
                              _run("router_learning_curve", CANNED["router_learning_curve"]))
    assert [row.value for row in curve] == ["0.894 → 0.914", "0"]
    storage = run_all.summarize(_benchmark("storage_write"), _run("storage_write", CANNED["storage_write"]))
    assert [row.value for row in storage] == ["173 msgs/s", "n/a"]
    assert storage[1].status.startswith("skipped")


def test_a_report_the_harness_cannot_read_becomes_an_error_row_not_a_crash() -> None:
    rows = run_all.summarize(_benchmark("memory_rss"), _run("memory_rss", {"unexpected": 1}))
    assert [row.status.split(":")[0] for row in rows] == [ERROR]
    assert "KeyError" in rows[0].status


def test_failed_and_skipped_runs_are_rows_too() -> None:
    failed = run_all.summarize(_benchmark("throughput"), _run("throughput", error="timed out after 300 s"))
    assert failed == [Metric("end-to-end throughput", "–", "not run", status="error: timed out after 300 s")]
    skipped = run_all.summarize(_benchmark("ack_latency_pg"), _run("ack_latency_pg", skipped="full run only"))
    assert skipped[0].status == "skipped: full run only"


def test_the_report_is_the_last_json_line_of_stdout() -> None:
    stdout = 'PostgreSQL unavailable; skipped\n{"a": 1}\nnot json {\n{"b": 2}\n\n'
    assert run_all.parse_report(stdout) == {"b": 2}
    with pytest.raises(ValueError, match="no JSON object"):
        run_all.parse_report("Traceback (most recent call last):\n  ...\n")


def test_markdown_has_the_machine_the_load_and_one_row_per_metric() -> None:
    runs = [_run(name, CANNED[name]) for name in ("ack_latency", "memory_rss")]
    runs.append(_run("throughput", error="exit 1: boom | with a pipe"))
    text = run_all.markdown(_results(runs))
    lines = text.splitlines()
    assert lines[0].startswith("Machine: AMD EPYC, 2 cores, 23.5 GiB RAM, Python 3.11.7")
    assert "2026-01-05 10:00 UTC" in lines[1] and "quick run" in lines[1]
    assert "1.20 / 1.00 / 0.90 at start, 2.50 / 1.40 / 1.00 at end" in lines[1]
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| benchmark | metric | value | goal | result |"
    assert len(table) == 2 + 3 + 2 + 1
    assert "| ack latency | p50 (400 events, 20 senders, LLM 2 s, SQLite) | 21.3 ms | – | – |" in table
    assert "|  | p99 | 44.9 ms | < 50 ms | pass |" in table  # the benchmark's name is not repeated
    assert any("| 161 MB | < 150 MB | FAIL |" in line for line in table)
    assert table[-1].endswith("| error: exit 1: boom \\| with a pipe |")  # a pipe cannot break the table


def test_a_saved_run_renders_again_and_an_error_sets_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "run.json"
    results = _results([_run("router_latency", CANNED["router_latency"])])
    results["runs"][0]["metrics"] = []  # rows are read again from the saved report
    saved.write_text(json.dumps(results))
    assert run_all.main(["--from-json", str(saved), "--markdown"]) == 0
    assert "| local router | rules + local models p50 (2250 routings) | 71 µs |" in capsys.readouterr().out
    saved.write_text(json.dumps(_results([_run("router_latency", error="exit 1: boom")])))
    assert run_all.main(["--from-json", str(saved)]) == 1
    assert "error: exit 1: boom" in capsys.readouterr().out


def test_unknown_benchmark_names_are_refused() -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run_all.select("throughput,nope")
    assert [b.name for b in run_all.select("memory_rss, throughput")] == ["memory_rss", "throughput"]


def test_every_benchmark_script_is_in_the_harness() -> None:
    scripts = {path.stem for path in (REPO / "benchmarks").glob("*.py") if not path.stem.startswith("_")}
    listed = {b.module or b.name for b in BENCHMARKS}
    # router_quality scores the router (accuracy, calibration); its latency is router_latency's row.
    assert scripts - {"run_all", "router_quality"} == listed


@pytest.mark.slow
def test_the_cheapest_benchmark_runs_through_the_harness_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "results" / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "router_latency", "--json", str(out), "--markdown"],
        cwd=REPO, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "| local router | rules + local models p50" in done.stdout
    saved = json.loads(out.read_text())
    [run] = saved["runs"]
    assert run["error"] is None and run["report"]["routed"] > 0
    # The p99 row is judged from its own number against the 2 ms goal.
    p99 = run["metrics"][1]
    assert p99["status"] == (PASS if run["report"]["p99_us"] < 2000 else FAIL)
    assert saved["machine"]["cores"] and saved["machine"]["load_end"] is not None
