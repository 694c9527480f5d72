"""`supportbot logs` on a database filled through the real pipeline: every filter, every format, --follow."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from bot.cli import LOG_COLUMNS, app
from bot.clock import ManualClock
from bot.config import load_config
from bot.domain import FeedbackPress, InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from bot.web.server import build_web_app
from tests.web.conftest import CONVERSATIONS, fill, local_playground

CONTRACT_FIELDS = {"created_at", "channel", "thread_ts", "user", "text", "route", "confidence", "decided_by",
                   "escalated", "voted", "vote_agreement", "reply", "latency_ms", "feedback", "resolution"}


async def _fill_and_correct(url: str, conversations: list[tuple[str, str, str]]) -> None:
    """Messages through the pipeline; the technical one corrected to billing through the dashboard's API."""
    runtime = await build_runtime(Settings(database_url=url), load_config(), chat=LocalChat(), instance_id="fill")
    try:
        await fill(runtime, conversations)
        async with TestClient(TestServer(build_web_app(runtime, playground=local_playground(runtime)))) as client:
            decisions = (await (await client.get("/api/decisions?route=technical")).json())["decisions"]
            page = await (await client.get("/playground")).text()
            marker = '<meta name="csrf-token" content="'
            token = page[page.index(marker) + len(marker):].split('"', 1)[0]
            for row in decisions:
                response = await client.post(f"/api/decisions/{row['id']}/correction", json={"route": "billing"},
                                             headers={"X-CSRF-Token": token})
                assert response.status == 201
    finally:
        await runtime.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}"
    asyncio.run(_fill_and_correct(url, CONVERSATIONS))
    return {"DATABASE_URL": url}


def logs(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, ["logs", *args], env=env)
    return result


def json_rows(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = logs(env, "--format", "json", "--limit", "1000", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_json_lines_carry_the_contract_fields(env: dict[str, str]) -> None:
    rows = json_rows(env)
    assert len(rows) == len(CONVERSATIONS)
    assert all(set(row) >= CONTRACT_FIELDS for row in rows)
    assert [row["text"] for row in rows] == [text for _, _, text in reversed(CONVERSATIONS)]  # newest first
    assert all(isinstance(row["escalated"], bool) and isinstance(row["voted"], bool) for row in rows)
    assert all(row["vote_agreement"] is None or 0 <= row["vote_agreement"] <= 1 for row in rows)
    corrected = [row for row in rows if row["decided_by"] == "correction"]
    assert corrected and all(r["route"] == "billing" and r["original_route"] == "technical" for r in corrected)


def test_every_filter_selects_what_it_says(env: dict[str, str]) -> None:
    everything = json_rows(env)
    cases: dict[tuple[str, ...], Any] = {
        ("--route", "escalate"): lambda r: r["route"] == "escalate",
        ("--route", "billing"): lambda r: r["route"] == "billing",
        ("--decided-by", "rules"): lambda r: r["decided_by"] == "rules",
        ("--decided-by", "correction"): lambda r: r["decided_by"] == "correction",
        ("--escalated",): lambda r: r["escalated"],
        ("--not-escalated",): lambda r: not r["escalated"],
        ("--voted",): lambda r: r["voted"],
        ("--not-voted",): lambda r: not r["voted"],
        ("--confidence-below", "0.99"): lambda r: r["confidence"] < 0.99 and r["decided_by"] != "correction",
        ("--channel", "CSALES"): lambda r: r["channel"] == "CSALES",
        ("--user", "UBOB"): lambda r: r["user"] == "UBOB",
        ("--since", "1h"): lambda r: True,
        ("--since", "2999-01-01"): lambda r: False,
        ("--until", "2000-01-01"): lambda r: False,
        ("--until", "2999-01-01T00:00:00+00:00"): lambda r: True,
        ("--search", "CRASHES"): lambda r: "crashes" in r["text"],
        ("--text", "<script>"): lambda r: "<script>" in r["text"],
        ("--search", "100%"): lambda r: False,  # % is literal, not a wildcard
        ("--channel", "CSUPPORT", "--user", "UALICE", "--escalated"): lambda r: r["channel"] == "CSUPPORT"
        and r["user"] == "UALICE" and r["escalated"],
    }
    for args, keep in cases.items():
        expected = [r["text"] for r in everything if keep(r)]
        assert [r["text"] for r in json_rows(env, *args)] == expected, args
    assert len(json_rows(env, "--escalated")) >= 1 and len(json_rows(env, "--voted")) >= 1


def test_limit_keeps_the_newest(env: dict[str, str]) -> None:
    result = logs(env, "--format", "json", "--limit", "2")
    texts = [json.loads(line)["text"] for line in result.stdout.splitlines()]
    assert texts == [CONVERSATIONS[-1][2], CONVERSATIONS[-2][2]]


def test_csv_has_the_contract_columns(env: dict[str, str]) -> None:
    result = logs(env, "--format", "csv", "--channel", "CSALES")
    assert result.exit_code == 0
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert reader.fieldnames == LOG_COLUMNS
    records = list(reader)
    assert {r["text"] for r in records} == {text for channel, _, text in CONVERSATIONS if channel == "CSALES"}
    assert all(r["escalated"] in ("True", "False") for r in records)


def test_table_is_readable_and_says_when_nothing_matches(env: dict[str, str]) -> None:
    table = logs(env, "--escalated")
    assert table.exit_code == 0
    assert "escalate" in table.stdout and "rules" in table.stdout and "speak to a human" in table.stdout
    assert "crashes" not in table.stdout
    assert "correction" in logs(env, "--decided-by", "correction").stdout
    empty = logs(env, "--user", "UNOBODY")
    assert empty.exit_code == 0 and "no routing decisions match" in empty.stdout


def test_bad_options_get_a_clear_error(env: dict[str, str]) -> None:
    since = logs(env, "--since", "last tuesday")
    assert since.exit_code == 2 and "cannot read 'last tuesday' as a time" in since.output
    by = logs(env, "--decided-by", "magic")
    assert by.exit_code == 2 and "--decided-by: use one of rules, local, llm, hybrid, correction" in by.output
    fmt = logs(env, "--format", "xml")
    assert fmt.exit_code == 2


def test_follow_prints_new_decisions_as_they_are_made(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "logs", "--follow", "--format", "json", "--channel", "CFOLLOW"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTBOT_", "DATABASE_URL"))}, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        asyncio.run(_fill_and_correct(env["DATABASE_URL"], [("CFOLLOW", "UZOE", "I was charged twice, again")]))
        first = json.loads(lines.get(timeout=60))
        assert first["text"] == "I was charged twice, again" and first["channel"] == "CFOLLOW"
        asyncio.run(_fill_and_correct(env["DATABASE_URL"], [("CFOLLOW", "UZOE", "and the app crashes too")]))
        second = json.loads(lines.get(timeout=60))
        assert second["text"] == "and the app crashes too"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr


async def _rated_threads(url: str) -> None:
    """Three questions: the first rated 👍 by its asker, the second 👎, the third left alone."""
    chat = LocalChat(ManualClock())
    runtime = await build_runtime(Settings(database_url=url), load_config(), chat=chat, instance_id="rate")
    try:
        for n, value in enumerate(("good", "bad", None)):
            msg = InboundMessage(source="local", team=chat.team, channel="CRATE", user="UASKER",
                                 text=f"the app crashes when I upload file number {n}", ts=chat.next_ts(),
                                 event_id=f"rate-{n}")
            assert (await runtime.pipeline.handle(msg)).outcome == "replied"
            [answer] = [post for post in chat.posts if post.reply_to == msg.dedupe_key]
            if value is not None:
                press = FeedbackPress(team=chat.team, channel="CRATE", thread_ts=msg.ts, answer_ts=answer.ts,
                                      user="UASKER", value="good" if value == "good" else "bad")
                assert await runtime.feedback.rate(press) == "recorded"
    finally:
        await runtime.close()


def test_logs_say_how_the_asker_rated_each_answer_and_what_became_of_the_thread(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'rated.db'}"}
    asyncio.run(_rated_threads(env["DATABASE_URL"]))
    rows = json_rows(env)
    assert [(row["feedback"], row["resolution"]) for row in reversed(rows)] == [
        ("good", "resolved_by_bot"), ("bad", None), (None, None)]
    assert [row["text"][-1] for row in json_rows(env, "--feedback", "bad")] == ["1"]
    assert [row["text"][-1] for row in json_rows(env, "--resolution", "open")] == ["2", "1"]
    assert [row["feedback"] for row in json_rows(env, "--resolution", "resolved_by_bot")] == ["good"]
    table = csv.DictReader(io.StringIO(logs(env, "--format", "csv").stdout))
    assert [(row["feedback"], row["resolution"]) for row in table][-1] == ("good", "resolved_by_bot")
    wrong = logs(env, "--feedback", "meh")
    assert wrong.exit_code != 0 and "good, bad" in wrong.output
