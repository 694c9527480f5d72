"""Triage (sectioning) of JSONL, CSV and Slack exports: bounded concurrency, failures reported, batch path, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import load_config
from bot.llm.anthropic import AnthropicLLM, BatchPolling
from bot.settings import Settings
from bot.triage import (
    TriageInputError,
    build_report,
    load_messages,
    triage_concurrently,
    triage_in_batch,
)
from storage.models import LLMCall
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply, error
from tests.llm.conftest import DUMMY_KEY, BuildRuntime

SUPPORTBOT = [sys.executable, "-m", "bot.cli"]
MESSAGES = [
    {"text": "I was charged twice this month", "user": "U1", "channel": "C1", "ts": "1.1"},
    {"text": "the API returns 401 even though my key is correct", "user": "U2"},
    {"text": "how much is the enterprise plan?"},
    {"text": "This is the third time I'm writing, I want a manager NOW"},
    {"text": "POISON: the model answers this one outside the schema"},
    {"text": "BROKEN: the API refuses this one"},
    {"text": "my invoice shows the wrong VAT number"},
    {"text": "where is my order?"},
]


def triage_answers(request: RecordedRequest) -> dict[str, Any] | Reply:
    """The fake's triage: by keyword, with two deliberately bad items."""
    text = request.last_user_text
    if "POISON" in text:
        return {"route": "refunds", "summary": "?", "themes": [], "urgency": "normal"}
    if "BROKEN" in text:
        return error(400, message="this message cannot be processed (fake)")
    for word, route, themes, urgency in [
        ("charged", "billing", ["Double charge"], "normal"), ("401", "technical", ["api 401"], "normal"),
        ("enterprise", "sales", ["pricing"], "low"), ("manager", "escalate", ["no answer"], "high"),
        ("invoice", "billing", ["invoice", "vat"], "low"), ("order", "general", ["delivery"], "low"),
    ]:
        if word in text:
            return {"route": route, "summary": f"summary of {word}", "themes": themes, "urgency": urgency}
    return {"route": "general", "summary": "other", "themes": [], "urgency": "low"}


def write_jsonl(path: Path, rows: list[dict[str, Any]], *, extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("\n".join([json.dumps(row) for row in rows] + list(extra_lines)) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ reading the input


def test_jsonl_keeps_fields_and_reports_unreadable_lines(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES[:2], extra_lines=("", "not json", '{"user": "U9"}'))
    loaded = load_messages(file)

    assert loaded.format == "jsonl" and [item.text for item in loaded.items] == [m["text"] for m in MESSAGES[:2]]
    first = loaded.items[0]
    assert (first.user, first.channel, first.ts, first.where) == ("U1", "C1", "1.1", "backlog.jsonl:1")
    assert [(r.item.where, r.error) for r in loaded.rejected] == [
        ("backlog.jsonl:4", "input: not valid JSON (Expecting value)"),
        ("backlog.jsonl:5", 'input: no "text" string'),
    ]


def test_csv_needs_a_text_column_and_skips_blank_rows(tmp_path: Path) -> None:
    good = tmp_path / "tickets.csv"
    good.write_text('id,Text,user\n1,"I was charged twice, again",U1\n2,,U2\n3,where is my order?,U3\n')
    loaded = load_messages(good)
    assert [item.text for item in loaded.items] == ["I was charged twice, again", "where is my order?"]
    assert loaded.skipped == 1 and loaded.items[1].where == "tickets.csv:4" and loaded.items[1].user == "U3"

    bad = tmp_path / "no-text.csv"
    bad.write_text("id,body\n1,hello\n")
    with pytest.raises(TriageInputError, match='needs a header row with a "text" column \\(found: id, body\\)'):
        load_messages(bad)


def test_a_slack_export_folder_yields_human_messages_only(tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / "support").mkdir(parents=True)
    (export / "channels.json").write_text(json.dumps([{"id": "C1", "name": "support", "created": 1}]))
    (export / "users.json").write_text(json.dumps([{"id": "U1", "name": "ann"}]))
    (export / "support" / "2024-05-01.json").write_text(json.dumps([
        {"type": "message", "user": "U1", "text": "I was charged twice", "ts": "1714550000.000100"},
        {"type": "message", "subtype": "channel_join", "user": "U2", "text": "<@U2> has joined", "ts": "1714550001.0"},
        {"type": "message", "subtype": "bot_message", "bot_id": "B1", "text": "Reminder!", "ts": "1714550002.0"},
        {"type": "message", "user": "U3", "bot_id": "B2", "text": "an app posting as a user", "ts": "1714550003.0"},
    ]))
    (export / "support" / "2024-05-02.json").write_text(json.dumps([
        {"type": "message", "user": "U4", "text": "where is my order?", "ts": "1714636400.0",
         "thread_ts": "1714636400.0"},
        {"type": "message", "subtype": "thread_broadcast", "user": "U4", "text": "also: the app crashes",
         "ts": "1714636500.0"},
        {"type": "message", "user": "U5", "text": "", "ts": "1714636600.0", "files": [{"id": "F1"}]},
    ]))
    loaded = load_messages(export)

    assert loaded.format == "slack" and loaded.skipped == 4
    assert [(i.text, i.channel, i.user) for i in loaded.items] == [
        ("I was charged twice", "support", "U1"), ("where is my order?", "support", "U4"),
        ("also: the app crashes", "support", "U4")]
    assert loaded.items[0].where == "support/2024-05-01.json#1"


def test_a_single_json_array_of_slack_messages(tmp_path: Path) -> None:
    file = tmp_path / "history.json"
    file.write_text(json.dumps({"ok": True, "messages": [
        {"type": "message", "user": "U1", "text": "hello, is anyone there?", "ts": "1.0"},
        {"type": "message", "subtype": "channel_join", "user": "U2", "text": "joined", "ts": "2.0"}]}))
    loaded = load_messages(file)
    assert [item.text for item in loaded.items] == ["hello, is anyone there?"] and loaded.skipped == 1
    with pytest.raises(TriageInputError, match="no such file"):
        load_messages(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------ triage through Claude (the fake)


async def test_triage_is_concurrent_within_its_bound_and_reports_failed_items(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime, tmp_path: Path
) -> None:
    runtime = await make_runtime()
    fake_anthropic.on_tool("triage_message", triage_answers)
    fake_anthropic.latency_s = 0.05
    loaded = load_messages(write_jsonl(tmp_path / "backlog.jsonl", MESSAGES, extra_lines=("{broken",)))
    seen: list[str] = []
    outcomes = await triage_concurrently(loaded.items, runtime.llm, runtime.config, concurrency=3,
                                         on_result=lambda outcome: seen.append(outcome.item.where))
    report = build_report(runtime.config, loaded, outcomes, mode="concurrent", provider="anthropic",
                          concurrency=3, llm_calls=len(fake_anthropic.requests), seconds=1.0)

    assert fake_anthropic.max_in_flight == 3 and len(seen) == len(MESSAGES)
    assert len(report.outcomes) == 9 and report.triaged == 6 and len(report.failures) == 3
    assert dict(report.per_route) == {"billing": 2, "technical": 1, "sales": 1, "escalate": 1, "general": 1}
    assert [o.item.text for o in report.escalation_candidates] == [MESSAGES[3]["text"]]
    assert report.top_themes == (("api 401", 1), ("delivery", 1), ("double charge", 1), ("invoice", 1),
                                 ("no answer", 1), ("pricing", 1), ("vat", 1))
    errors = {o.item.where: o.error or "" for o in report.failures}
    assert errors["backlog.jsonl:5"].startswith("bad_output: answer outside the schema (route: 'refunds'")
    assert errors["backlog.jsonl:6"].startswith("bad_request:") and "cannot be processed" in errors["backlog.jsonl:6"]
    assert errors["backlog.jsonl:9"].startswith("input: not valid JSON")
    sent = fake_anthropic.requests_for(tool="triage_message")
    assert len(sent) == len(MESSAGES) and {r.model for r in sent} == {runtime.config.router.model}
    schema = sent[0].schema_for("triage_message")
    assert schema is not None and schema["properties"]["route"]["enum"] == runtime.config.route_names
    async with runtime.db.sessions() as session:
        purposes = (await session.execute(select(LLMCall.purpose))).scalars().all()
    assert purposes == ["triage"] * len(MESSAGES)


async def test_the_batch_path_creates_polls_and_fetches_a_message_batch(
    fake_anthropic: FakeAnthropicAPI, make_runtime: BuildRuntime, online_settings: Settings, tmp_path: Path
) -> None:
    config = load_config()
    provider = AnthropicLLM(online_settings, config, batch_polling=BatchPolling(first_interval_s=0.01))
    runtime = await make_runtime(llm=provider)
    fake_anthropic.on_tool("triage_message", triage_answers)
    loaded = load_messages(write_jsonl(tmp_path / "backlog.jsonl", MESSAGES))
    progress: list[tuple[int, str]] = []
    outcomes = await triage_in_batch(loaded.items, runtime.llm, runtime.config,
                                     on_progress=lambda p: progress.append((p.done, p.status)))

    assert len(fake_anthropic.batch_items) == len(MESSAGES) and fake_anthropic.requests_for() == []
    assert progress[-1] == (len(MESSAGES), "ended") and len(progress) >= 2
    by_text = {o.item.text: o for o in outcomes}
    assert by_text[MESSAGES[0]["text"]].route == "billing" and by_text[MESSAGES[3]["text"]].urgency == "high"
    assert (by_text[MESSAGES[5]["text"]].error or "").startswith("bad_request:")
    assert (by_text[MESSAGES[4]["text"]].error or "").startswith("bad_output:")
    async with runtime.db.sessions() as session:
        rows = (await session.execute(select(LLMCall))).scalars().all()
    assert len(rows) == len(MESSAGES) and {r.purpose for r in rows} == {"triage"}
    assert {r.provider for r in rows} == {"anthropic-batch"}


# ------------------------------------------------------------------ the command


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    prefixes = ("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env.update(extra)
    return env


def test_the_command_works_offline_and_prints_a_table(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES[:4])
    done = subprocess.run([*SUPPORTBOT, "triage", str(file), "--concurrency", "2"], capture_output=True, text=True,
                          env=cli_env(tmp_path), timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert "Messages per route" in done.stdout and "Escalation candidates" in done.stdout
    assert "4 messages, 4 triaged, 0 failed" in done.stdout and "offline" in done.stdout
    assert "4/4" in done.stderr  # the progress bar, kept off stdout


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([*SUPPORTBOT, "triage", str(tmp_path / "nope.jsonl")], capture_output=True, text=True,
                          env=cli_env(tmp_path), timeout=120, check=False)
    assert done.returncode == 2 and "nope.jsonl: no such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


async def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI in a subprocess, awaited so the fake in this event loop keeps answering it."""
    process = await asyncio.create_subprocess_exec(*SUPPORTBOT, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_the_command_against_claude_prints_one_json_object(
    fake_anthropic: FakeAnthropicAPI, tmp_path: Path
) -> None:
    fake_anthropic.on_tool("triage_message", triage_answers)
    file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES)
    env = cli_env(tmp_path, ANTHROPIC_API_KEY=DUMMY_KEY, ANTHROPIC_BASE_URL=fake_anthropic.url)
    code, stdout, stderr = await run_cli(["triage", str(file), "--format", "json", "--concurrency", "4"], env)

    assert code == 0, stderr
    [line] = stdout.splitlines()
    report = json.loads(line)
    assert {"n", "triaged", "failed", "per_route", "escalation_candidates", "top_themes", "failures", "items",
            "llm_calls", "seconds", "mode"} <= set(report)
    assert (report["n"], report["triaged"], report["failed"], report["mode"]) == (8, 6, 2, "concurrent")
    assert report["provider"] == "anthropic" and report["llm_calls"] == 8
    assert report["per_route"]["billing"] == 2
    assert [c["text"] for c in report["escalation_candidates"]] == [MESSAGES[3]["text"]]
    assert {"theme": "double charge", "count": 1} in report["top_themes"]
    assert sorted(f["where"] for f in report["failures"]) == ["backlog.jsonl:5", "backlog.jsonl:6"]


async def test_the_command_with_batch_uses_the_message_batches_api(tmp_path: Path) -> None:
    async with FakeAnthropicAPI(api_key=DUMMY_KEY, batch_end_after_polls=0) as fake:
        fake.on_tool("triage_message", triage_answers)
        file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES)
        env = cli_env(tmp_path, ANTHROPIC_API_KEY=DUMMY_KEY, ANTHROPIC_BASE_URL=fake.url)
        code, stdout, stderr = await run_cli(["triage", str(file), "--batch", "--format", "json"], env)

    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["mode"] == "batch" and report["triaged"] == 6 and report["failed"] == 2
    assert len(fake.batch_items) == 8 and fake.requests_for() == []


# ------------------------------------------------------------------ labels for the local tiers


def confident_triage(request: RecordedRequest) -> dict[str, Any] | Reply:
    """`triage_answers` with Claude's confidence: unsure about the order, sure of the rest."""
    answer = triage_answers(request)
    if isinstance(answer, dict) and answer.get("route") != "refunds":
        answer = {**answer, "confidence": 0.55 if "order" in request.last_user_text else 0.93}
    return answer


async def test_export_labels_writes_training_rows_and_flags_the_unsure_ones_for_review(
    fake_anthropic: FakeAnthropicAPI, tmp_path: Path
) -> None:
    fake_anthropic.on_tool("triage_message", confident_triage)
    file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES)
    labels = tmp_path / "labels" / "team.jsonl"
    env = cli_env(tmp_path, ANTHROPIC_API_KEY=DUMMY_KEY, ANTHROPIC_BASE_URL=fake_anthropic.url)
    code, _, stderr = await run_cli(["triage", str(file), "--export-labels", str(labels)], env)

    assert code == 0, stderr
    assert "exported 6 labels" in stderr and "1 flagged for review" in stderr
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    # The two failed items have no label; every other message has one, in input order.
    assert [row["text"] for row in rows] == [m["text"] for i, m in enumerate(MESSAGES) if i not in (4, 5)]
    assert all(set(row) >= {"text", "route", "confidence", "review"} for row in rows)
    by_text = {row["text"]: row for row in rows}
    assert by_text["where is my order?"] == {**by_text["where is my order?"], "route": "general", "confidence": 0.55,
                                             "review": True}
    assert by_text["I was charged twice this month"]["review"] is False
    sent = fake_anthropic.requests_for(tool="triage_message")[0]
    assert "confidence" in (sent.schema_for("triage_message") or {})["required"]
    assert "Severity comes before topic" in sent.system_text

    # The export is a training file as it stands: flagged lines wait for review, the rest teach the router.
    config_file = tmp_path / "labels" / "supportbot.toml"
    config_file.write_text('[router]\ntraining_files = ["team.jsonl"]\n')
    code, stdout, stderr = await run_cli(["eval", str(labels), "--router", "local", "--format", "json"],
                                         env | {"SUPPORTBOT_CONFIG": str(config_file)})
    assert code == 0, stderr
    assert json.loads(stdout)["n"] == 6


def test_offline_labels_carry_no_claude_confidence_so_every_one_awaits_review(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "backlog.jsonl", MESSAGES[:3])
    labels = tmp_path / "labels.jsonl"
    done = subprocess.run([*SUPPORTBOT, "triage", str(file), "--export-labels", str(labels)], capture_output=True,
                          text=True, env=cli_env(tmp_path), timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert [row["text"] for row in rows] == [m["text"] for m in MESSAGES[:3]]
    assert all(row["review"] is True and row["confidence"] is None for row in rows)
