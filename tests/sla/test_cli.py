"""`supportbot sla`, run as a user runs it (a subprocess), on a database the bot filled through its pipeline:
the counts, percentiles, targets, shares met and breaches per route and overall, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.runtime import Runtime
from tests.escalation.conftest import BASE_TOML, customer_message, escalation_config, local_runtime

CONFIG = BASE_TOML + """
[sla]
first_response_s = 60
first_human_response_min = 30
resolution_h = 2
[sla.routes.escalate]
first_human_response_min = 15
"""


def supportbot(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


async def customer_thread(runtime: Runtime, clock: ManualClock, *, text: str, bot_takes_s: float) -> str:
    """A customer writes; the bot answers `bot_takes_s` after receiving it. Returns the thread's ts."""
    msg = customer_message(text)
    inbox_id = await runtime.pipeline.accept(msg)
    assert inbox_id is not None
    clock.advance(bot_takes_s)
    await runtime.pipeline.process(inbox_id)
    return msg.ts


async def seed(database_url: str) -> None:
    """Three escalated threads (one answered and resolved in time, one late on both, one still waiting) and
    one the bot answered by itself."""
    clock = ManualClock()
    runtime = await local_runtime(escalation_config(CONFIG), database_url, clock)
    staff = {"team": customer_message().team, "channel": "C0SUPPORT", "user": "U0STAFF", "text": "Here to help"}
    try:
        in_time = await customer_thread(runtime, clock, text="I will sue you", bot_takes_s=30)
        clock.advance(600)
        await runtime.pipeline.record_staff_message(thread_ts=in_time, ts=f"{in_time}1", **staff)
        clock.advance(2400 - 630)
        assert await runtime.escalations.resolve(1, "U0STAFF") == "done"  # 40 min after the first message

        clock.advance(3600 - 2400)
        late = await customer_thread(runtime, clock, text="my lawyer will call", bot_takes_s=90)
        clock.advance(1200)
        await runtime.pipeline.record_staff_message(thread_ts=late, ts=f"{late}1", **staff)
        clock.advance(10800 - 1290)
        assert await runtime.escalations.resolve(2, "U0STAFF") == "done"  # 3 h after the first message

        await customer_thread(runtime, clock, text="how do I change my email address", bot_takes_s=5)
        await customer_thread(runtime, clock, text="I want to sue you now", bot_takes_s=10)
        await runtime.sla.sweep_clocks()
    finally:
        await runtime.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "ANTHROPIC_", "SUPPORTBOT_", "DATABASE_URL"))}
    config = tmp_path / "supportbot.toml"
    config.write_text(CONFIG, encoding="utf-8")
    base["SUPPORTBOT_CONFIG"] = str(config)
    return base


def lines(result: subprocess.CompletedProcess[str]) -> dict[str | None, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[-1]["scope"] == "overall" and all(row["scope"] == "route" for row in rows[:-1])
    return {row["route"] if row["scope"] == "route" else "*": row for row in rows}


async def test_sla_json_gives_the_numbers_per_route_and_overall(database_url: str, env: dict[str, str]) -> None:
    await seed(database_url)
    env["DATABASE_URL"] = database_url
    result = await asyncio.to_thread(supportbot, ["sla", "--since", "2026-01-01", "--format", "json"], env)
    rows = lines(result)
    assert list(rows) == ["escalate", "general", "*"]
    escalate, general, overall = rows["escalate"], rows["general"], rows["*"]
    assert escalate["since"] == "2026-01-01T00:00:00+00:00"

    # First responses 30 s, 90 s (late) and 10 s on the escalate route; 5 s on general.
    assert escalate["first_response"] == {"count": 3, "p50_s": 30.0, "p90_s": 78.0, "target_s": 60.0,
                                          "share_met": 0.667, "breaches": 1, "open": 0}
    assert general["first_response"] == {"count": 1, "p50_s": 5.0, "p90_s": 5.0, "target_s": 60.0,
                                         "share_met": 1.0, "breaches": 0, "open": 0}
    assert overall["first_response"] == {"count": 4, "p50_s": 20.0, "p90_s": 72.0, "target_s": 60.0,
                                         "share_met": 0.75, "breaches": 1, "open": 0}
    # A person answered after 10 min and 20 min against the route's 15 min; the third page is still waiting
    # (its deadline long gone by now).
    assert escalate["first_human_response"] == {"count": 2, "p50_s": 900.0, "p90_s": 1140.0, "target_s": 900.0,
                                                "share_met": 0.333, "breaches": 2, "open": 1}
    # Resolved 40 min and 3 h after the first message, against 2 h.
    assert escalate["resolution"] == {"count": 2, "p50_s": 6600.0, "p90_s": 9960.0, "target_s": 7200.0,
                                      "share_met": 0.333, "breaches": 2, "open": 1}
    assert general["first_human_response"] == {"count": 0, "p50_s": None, "p90_s": None, "target_s": 1800.0,
                                               "share_met": None, "breaches": 0, "open": 0}
    assert overall["first_human_response"]["target_s"] == 1800.0  # the default; routes may set their own
    assert overall["resolution"]["count"] == 2 and overall["resolution"]["breaches"] == 2

    table = await asyncio.to_thread(supportbot, ["sla", "--since", "2026-01-01"], env)
    assert table.returncode == 0, table.stderr
    assert "all routes" in table.stdout and "first human response" in table.stdout

    recent = await asyncio.to_thread(supportbot, ["sla", "--format", "json"], env)  # the last 7 days: nothing
    assert lines(recent)["*"]["first_response"]["count"] == 0


def test_a_bad_since_is_a_clear_error(env: dict[str, str], sqlite_url: str) -> None:
    env["DATABASE_URL"] = sqlite_url
    result = supportbot(["sla", "--since", "last tuesday"], env)
    assert result.returncode == 2
    assert "cannot read 'last tuesday' as a time" in result.stderr and "Traceback" not in result.stderr
