"""`supportbot escalations` and `supportbot oncall`, run as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.clock import ManualClock
from tests.escalation.conftest import (
    BASE_TOML,
    customer_message,
    escalation_config,
    local_runtime,
)
from tests.escalation.test_roster import ROTATION_TOML


def supportbot(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
    config = tmp_path / "supportbot.toml"
    rotation = ROTATION_TOML[ROTATION_TOML.index("[escalation.rotation]"):]
    config.write_text(f'{BASE_TOML}usergroup = "S0ONCALL"\n{rotation}', encoding="utf-8")
    base.update(DATABASE_URL=sqlite_url, SUPPORTBOT_CONFIG=str(config))
    return base


async def test_escalations_lists_age_state_level_repages_and_who_acted(env: dict[str, str], sqlite_url: str) -> None:
    clock = ManualClock()
    runtime = await local_runtime(escalation_config(), sqlite_url, clock)
    try:
        acked = (await runtime.pipeline.handle(customer_message())).escalation_id
        resolved = (await runtime.pipeline.handle(customer_message())).escalation_id
        waiting = (await runtime.pipeline.handle(customer_message())).escalation_id
        clock.advance(600)
        await runtime.escalations.sweep()
        assert await runtime.escalations.acknowledge(acked or 0, "U0ALICE") == "done"
        assert await runtime.escalations.resolve(resolved or 0, "U0STAFF") == "done"
    finally:
        await runtime.close()

    listed = await asyncio.to_thread(supportbot, ["escalations", "--format", "json"], env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert list(rows) == [waiting, resolved, acked]  # newest first
    assert (rows[acked]["state"], rows[acked]["acknowledged_by"], rows[acked]["repages"]) == ("acknowledged",
                                                                                              "U0ALICE", 1)
    assert (rows[resolved]["state"], rows[resolved]["resolved_by"]) == ("resolved", "U0STAFF")
    assert rows[waiting]["state"] == "paged" and rows[waiting]["level"] == 1 and rows[waiting]["paged"] is True
    assert rows[waiting]["pages"] == 2 and rows[waiting]["trigger"] == "rule" and rows[waiting]["age_s"] > 0

    open_only = await asyncio.to_thread(supportbot, ["escalations", "--open"], env)
    assert open_only.returncode == 0, open_only.stderr
    header, *lines = open_only.stdout.splitlines()
    assert header.split()[:6] == ["id", "age", "state", "level", "re-pages", "trigger"]
    assert [line.split()[0] for line in lines] == [str(waiting), str(acked)]
    assert "U0ALICE" in lines[1] and "U0STAFF" not in open_only.stdout


def test_oncall_shows_who_is_on_call_and_the_week(env: dict[str, str]) -> None:
    at_night = supportbot(["oncall", "--at", "2026-01-07T22:30", "--format", "json"], env)
    assert at_night.returncode == 0, at_night.stderr
    report = json.loads(at_night.stdout)
    assert (report["oncall"], report["source"], report["timezone"]) == (["U0NIGHT"], "shift", "Europe/Paris")
    assert report["week"][0]["start"] == "2026-01-05T00:00:00+01:00" and report["usergroup"] == "S0ONCALL"

    table = supportbot(["oncall", "--at", "2026-01-05T08:00"], env)
    assert table.returncode == 0, table.stderr
    assert "(rotation): U0BOB" in table.stdout and "Mon 05 Jan 22:00" in table.stdout
    assert "The week (Europe/Paris)" in table.stdout and "U0NIGHT" in table.stdout


def test_a_bad_moment_is_a_clear_error(env: dict[str, str]) -> None:
    result = supportbot(["oncall", "--at", "next tuesday"], env)
    assert result.returncode == 2 and "cannot read 'next tuesday' as a time" in result.stderr
