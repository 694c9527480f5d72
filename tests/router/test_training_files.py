"""`[router] training_files`: a team's own labelled messages teach the local tiers; a bad file is refused at start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.router.local import LocalRouter

# A made-up product word the shipped data has never seen, and what this team means by it.
TEAM_ROWS = [
    {"text": "the quuxbuild runner is stuck on step 3", "route": "technical"},
    {"text": "quuxbuild cache restore fails every time", "route": "technical"},
    {"text": "our quuxbuild pipeline hangs after checkout", "route": "technical"},
    {"text": "quuxbuild agent keeps disconnecting", "route": "technical"},
    {"text": "quuxbuild artifacts upload times out", "route": "technical"},
    {"text": "quuxbuild jobs queue forever on the arm pool", "route": "technical"},
]


def write(path: Path, rows: list[dict[str, Any]] | list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def team_config(folder: Path, files: str = '["labels/team.jsonl"]') -> Path:
    return write(folder / "supportbot.toml", [f"[router]\ntraining_files = {files}"])


def test_a_teams_labelled_file_teaches_the_local_tiers_its_own_words(tmp_path: Path) -> None:
    write(tmp_path / "labels" / "team.jsonl", TEAM_ROWS)
    config = load_config(team_config(tmp_path))  # the path is relative to the config file's folder
    message = "quuxbuild is stuck again"

    before = asyncio.run(LocalRouter.from_config(load_config()).route(message))
    after = asyncio.run(LocalRouter.from_config(config).route(message))

    assert config.training_paths == [tmp_path / "labels" / "team.jsonl"]
    assert after.route == "technical" and after.confidence > before.scores["technical"]


def test_rows_awaiting_review_are_not_trained_on(tmp_path: Path) -> None:
    write(tmp_path / "labels" / "team.jsonl", [{**row, "review": True, "confidence": 0.4} for row in TEAM_ROWS])
    config = load_config(team_config(tmp_path))

    unreviewed = asyncio.run(LocalRouter.from_config(config).route("quuxbuild is stuck again"))
    shipped = asyncio.run(LocalRouter.from_config(load_config()).route("quuxbuild is stuck again"))

    assert unreviewed.scores == pytest.approx(shipped.scores)


@pytest.mark.parametrize(
    ("lines", "where", "reason"),
    [
        ([json.dumps(TEAM_ROWS[0]), '{"text": "oops", "route": '], ":2:", "not valid JSON"),
        ([json.dumps({"text": "hi", "route": "refunds"})], ":1:", "'refunds' is not a configured route"),
        ([json.dumps({"text": "  ", "route": "billing"})], ":1:", '"text" must be a non-empty string'),
        ([json.dumps({**TEAM_ROWS[0], "review": "yes"})], ":1:", '"review" must be true or false'),
        (["[1, 2]"], ":1:", "expected an object"),
    ],
    ids=["bad-json", "unknown-route", "empty-text", "bad-review", "not-an-object"],
)
def test_a_bad_training_file_is_refused_with_its_file_line_and_reason(
    tmp_path: Path, lines: list[str], where: str, reason: str
) -> None:
    labels = write(tmp_path / "labels" / "team.jsonl", lines)
    config = team_config(tmp_path)

    with pytest.raises(ConfigError) as refused:
        load_config(config)

    assert refused.value.key == "router.training_files.0"
    assert f"{labels}{where}" in str(refused.value) and reason in str(refused.value)


def test_the_cli_refuses_to_start_on_a_missing_training_file(tmp_path: Path) -> None:
    config = team_config(tmp_path, '["labels/nowhere.jsonl"]')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_"))}
    env |= {"SUPPORTBOT_CONFIG": str(config), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}

    done = subprocess.run([sys.executable, "-m", "bot.cli", "eval", "--export-corrections", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "config refused" in done.stderr and "router.training_files.0" in done.stderr
    assert "nowhere.jsonl: file not found" in done.stderr


def test_a_trained_router_is_kept_on_disk_and_a_damaged_file_is_trained_over(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_"))}
    env |= {"HOME": str(tmp_path), "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    labelled = write(tmp_path / "labelled.jsonl", [{"text": "I was charged twice this month", "route": "billing"}])
    command = [sys.executable, "-m", "bot.cli", "eval", str(labelled), "--router", "local", "--format", "json"]

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    [saved] = (tmp_path / ".cache" / "supportbot" / "router").glob("*.npz")
    saved.write_bytes(b"not a model")
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout)["accuracy"] == json.loads(second.stdout)["accuracy"] == 1.0
    assert "router_store_unreadable" in second.stderr
    assert saved.stat().st_size > 100_000  # trained again and saved whole
