"""The command line through real subprocesses, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORTBOT = [sys.executable, "-m", "bot.cli"]


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPPORTBOT, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
    base["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    return base


def test_piped_chat_prints_route_and_reply_then_logs_show_the_exchange(env: dict[str, str]) -> None:
    chat = run(["chat"], env, stdin="I was charged twice this month\nI want to talk to a real person\n")
    assert chat.returncode == 0, chat.stderr
    assert "route: billing" in chat.stdout and "billing specialist" in chat.stdout
    assert "route: escalate" in chat.stdout and "paged a person" in chat.stdout

    logs = run(["logs", "--format", "json"], env)
    assert logs.returncode == 0, logs.stderr
    rows = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [row["route"] for row in rows] == ["escalate", "billing"]
    billing = rows[1]
    assert billing["text"] == "I was charged twice this month" and billing["voted"] is True
    # Routed by the local classifier with confidence (the shipped data has many double charges).
    assert billing["decided_by"] == "local" and billing["confidence"] >= 0.8
    assert rows[0]["escalated"] is True and rows[0]["decided_by"] == "rules"
    assert isinstance(billing["latency_ms"], float) and "offline mode" in billing["reply"]

    as_csv = run(["logs", "--format", "csv", "--route", "billing"], env)
    [record] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert record["route"] == "billing" and record["voted"] == "True"

    table = run(["logs", "--escalated"], env)
    assert "escalate" in table.stdout and "billing" not in table.stdout


def test_bad_config_is_refused_with_file_key_and_reason(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[router]\nmode = "psychic"\n')
    env["SUPPORTBOT_CONFIG"] = str(config)
    result = run(["chat"], env, stdin="hello\n")
    assert result.returncode == 2
    assert str(config) in result.stderr and "router.mode" in result.stderr
    assert "Traceback" not in result.stderr


def test_incomplete_slack_credentials_are_refused(env: dict[str, str]) -> None:
    env["SLACK_BOT_TOKEN"] = "xoxb-dummy"
    result = run(["logs"], env)
    assert result.returncode == 2 and "SLACK_SIGNING_SECRET" in result.stderr
    assert "xoxb-dummy" not in result.stderr


def test_db_upgrade_reports_the_revision(env: dict[str, str]) -> None:
    result = run(["db", "upgrade"], env)
    assert result.returncode == 0, result.stderr
    assert "head" in result.stdout


def test_serve_with_an_unreachable_database_fails_with_a_clear_message(env: dict[str, str]) -> None:
    env["DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"
    result = run(["serve", "--port", "0"], env)
    assert result.returncode == 2
    assert "database migration failed" in result.stderr
    assert "Traceback" not in result.stderr
