"""Warnings before a target is missed and breaches after, driven by the SLA sweep on a ManualClock: through
the fake Slack Web API (the warning lands in the escalation channel once, even with two replicas sweeping),
and on the local chat for business hours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.sla.clocks import record_bot_resolution
from bot.slack.transport import open_slack_chat
from storage.models import SlaClock
from storage.repositories import find_conversation
from tests.conftest import slack_settings
from tests.escalation.conftest import BASE_TOML, PAGES, SUPPORT, customer_message, escalation_config, local_chat
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage

SLA_TOML = BASE_TOML + """
[sla]
first_response_s = 60
first_human_response_min = 30
resolution_h = 2
warn_at = 0.8
"""

Replicas = Callable[[Config, int], Awaitable[list[Runtime]]]


@pytest.fixture
async def slack_replicas(fake_slack: FakeSlackAPI, database_url: str, clock: ManualClock) -> AsyncIterator[Replicas]:
    """`count` bots on one database (SQLite, then PostgreSQL) and one Slack workspace, as replicas behind a
    load balancer."""
    built: list[Runtime] = []

    async def make(config: Config, count: int) -> list[Runtime]:
        settings = slack_settings(fake_slack, database_url)
        for number in range(count):
            chat = await open_slack_chat(settings, config)
            built.append(await build_runtime(settings, config, chat=chat, clock=clock,
                                             instance_id=f"replica-{number}", migrate=number == 0))
        return built

    try:
        yield make
    finally:
        for runtime in built:
            await runtime.close()


def sla_warnings(fake: FakeSlackAPI) -> list[SlackMessage]:
    return [m for m in fake.messages_in(PAGES) if m.bot_id == fake.bot_id and "SLA warning" in m.text]


async def clocks(runtime: Runtime) -> dict[str, SlaClock]:
    async with runtime.db.sessions() as session:
        return {clock.metric: clock for clock in (await session.execute(select(SlaClock))).scalars()}


def counted(runtime: Runtime, name: str, metric: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, {"metric": metric}) or 0.0


async def sweep_all(replicas: list[Runtime]) -> None:
    """Every replica sweeps at the same moment, twice."""
    for _ in range(2):
        await asyncio.gather(*(runtime.sla.sweep_clocks() for runtime in replicas))


async def test_one_warning_in_the_escalation_channel_then_a_breach_then_the_times_measured(
    fake_slack: FakeSlackAPI, slack_replicas: Replicas, clock: ManualClock,
) -> None:
    replicas = await slack_replicas(escalation_config(SLA_TOML), 2)
    first = replicas[0]
    msg = customer_message()
    fake_slack.seed_message(SUPPORT, msg.text, user="U0CUST", ts=msg.ts)
    escalation_id = (await first.pipeline.handle(msg)).escalation_id
    assert escalation_id is not None
    paged_at = clock.now()

    clock.advance(23 * 60)
    await sweep_all(replicas)
    assert sla_warnings(fake_slack) == []

    clock.advance(2 * 60)  # 25 min: past 80 % of the 30 min target
    await sweep_all(replicas)
    [warning] = sla_warnings(fake_slack)
    assert "first human response target (30 min) about to be missed" in warning.text
    assert f"<#{SUPPORT}>" in warning.text
    shown = str(warning.blocks)
    assert f"Escalation*\\n#{escalation_id}" in shown and "Open the thread" in shown
    assert sum(counted(r, "supportbot_sla_warnings_total", "first_human_response") for r in replicas) == 1

    clock.advance(6 * 60)  # 31 min: missed
    await sweep_all(replicas)
    assert len(sla_warnings(fake_slack)) == 1
    human = (await clocks(first))["first_human_response"]
    assert human.breached_at == paged_at + timedelta(minutes=30) and human.met_at is None
    assert sum(counted(r, "supportbot_sla_breaches_total", "first_human_response") for r in replicas) == 1

    clock.advance(9 * 60)  # 40 min: a staff member answers in the thread
    assert await first.pipeline.record_staff_message(team=msg.team, channel=msg.channel, thread_ts=msg.ts,
                                                     user="U0STAFF", text="On it, sorry for the wait", ts="1.5")
    clock.advance(10 * 60)  # 50 min: and resolves the escalation
    assert await first.escalations.resolve(escalation_id, "U0STAFF") == "done"
    await sweep_all(replicas)

    measured = await clocks(first)
    assert measured["first_response"].elapsed_s == 0 and measured["first_response"].breached_at is None
    assert measured["first_human_response"].elapsed_s == 40 * 60
    assert measured["resolution"].elapsed_s == 50 * 60 and measured["resolution"].breached_at is None
    assert measured["resolution"].warned_at is None
    assert sum(counted(r, "supportbot_sla_seconds_count", "resolution") for r in replicas) == 1
    assert sum(counted(r, "supportbot_sla_seconds_sum", "first_human_response") for r in replicas) == 2400
    # Nothing more is said once the clocks are met.
    clock.advance(3 * 3600)
    await sweep_all(replicas)
    assert len(sla_warnings(fake_slack)) == 1


async def test_a_warning_slack_refused_is_posted_by_the_next_pass(
    fake_slack: FakeSlackAPI, slack_replicas: Replicas, clock: ManualClock,
) -> None:
    [runtime] = await slack_replicas(escalation_config(SLA_TOML), 1)
    msg = customer_message()
    assert (await runtime.pipeline.handle(msg)).escalation_id is not None
    clock.advance(25 * 60)
    fake_slack.fail_next("chat.postMessage", error="internal_error", count=5)
    await runtime.sla.sweep_clocks()
    assert sla_warnings(fake_slack) == []
    fake_slack.clear_faults()
    await runtime.sla.sweep_clocks()
    assert len(sla_warnings(fake_slack)) == 1
    assert (await clocks(runtime))["first_human_response"].warned_at == clock.now()


async def test_a_resolved_escalation_stops_its_clocks_and_nothing_is_said(
    fake_slack: FakeSlackAPI, slack_replicas: Replicas, clock: ManualClock,
) -> None:
    [runtime] = await slack_replicas(escalation_config(SLA_TOML), 1)
    escalation_id = (await runtime.pipeline.handle(customer_message())).escalation_id
    assert escalation_id is not None
    clock.advance(10 * 60)
    assert await runtime.escalations.resolve(escalation_id, "U0ALICE") == "done"
    clock.advance(5 * 3600)
    await runtime.sla.sweep_clocks()
    assert sla_warnings(fake_slack) == []
    found = await clocks(runtime)
    assert found["first_human_response"].stopped_at is not None and found["first_human_response"].breached_at is None
    assert found["resolution"].elapsed_s == 10 * 60


async def test_human_clocks_wait_for_business_hours(sqlite_url: str) -> None:
    friday_evening = datetime(2026, 1, 9, 16, 50, tzinfo=UTC)
    clock = ManualClock(friday_evening)
    config = escalation_config(SLA_TOML + '[sla.business_hours]\nstart = "09:00"\nend = "17:00"\n')
    runtime = await build_runtime(Settings(database_url=sqlite_url), config, clock=clock, chat=LocalChat(clock),
                                  instance_id="bh")
    try:
        assert (await runtime.pipeline.handle(customer_message())).escalation_id is not None
        human = (await clocks(runtime))["first_human_response"]
        # 10 minutes on Friday, the other 20 on Monday morning.
        assert human.deadline == datetime(2026, 1, 12, 9, 20, tzinfo=UTC)
        assert human.warn_due_at == datetime(2026, 1, 12, 9, 14, tzinfo=UTC)
        clock.advance(2 * 86400)  # Sunday evening: the clock stands still over the weekend
        await runtime.sla.sweep_clocks()
        assert [p for p in local_chat(runtime).posts_in(PAGES) if p.sla_warning is not None] == []
        clock.advance((datetime(2026, 1, 12, 9, 15, tzinfo=UTC) - clock.now()).total_seconds())
        await runtime.sla.sweep_clocks()
        [post] = [p for p in local_chat(runtime).posts_in(PAGES) if p.sla_warning is not None]
        assert post.text.startswith("**SLA warning: first human response target (30 min) about to be missed**")
        assert "misses it at 2026-01-12 09:20 UTC" in post.text
    finally:
        await runtime.close()


async def test_a_thread_escalated_again_counts_its_resolution_from_the_new_message(sqlite_url: str) -> None:
    clock = ManualClock()
    runtime = await build_runtime(Settings(database_url=sqlite_url), escalation_config(SLA_TOML), clock=clock,
                                  chat=LocalChat(clock), instance_id="again")
    try:
        first = customer_message()
        first_id = (await runtime.pipeline.handle(first)).escalation_id
        clock.advance(20 * 60)
        assert await runtime.escalations.resolve(first_id or 0, "U0STAFF") == "done"
        clock.advance(2 * 3600)
        second_id = (await runtime.pipeline.handle(customer_message(thread_ts=first.ts))).escalation_id
        assert second_id not in (None, first_id)
        clock.advance(30 * 60)
        assert await runtime.escalations.resolve(second_id or 0, "U0STAFF") == "done"
        await runtime.sla.sweep_clocks()
        async with runtime.db.sessions() as session:
            resolutions = (await session.execute(select(SlaClock.escalation_id, SlaClock.elapsed_s).where(
                SlaClock.metric == "resolution").order_by(SlaClock.id))).all()
        assert [tuple(row) for row in resolutions] == [(first_id, 20 * 60), (second_id, 30 * 60)]
    finally:
        await runtime.close()


async def test_the_bot_resolution_hook_measures_a_thread_without_escalation(sqlite_url: str) -> None:
    clock = ManualClock()
    runtime = await build_runtime(Settings(database_url=sqlite_url), escalation_config(SLA_TOML), clock=clock,
                                  chat=LocalChat(clock), instance_id="bot-resolved")
    try:
        msg = customer_message("how do I change my email address")
        assert (await runtime.pipeline.handle(msg)).outcome == "replied"
        clock.advance(10 * 60)
        async with runtime.db.sessions.begin() as session:
            conversation = await find_conversation(session, team=msg.team, channel=msg.channel, thread_ts=msg.ts)
            assert conversation is not None
            await record_bot_resolution(session, runtime.sla.policy, conversation_id=conversation.id,
                                        route="general", channel=msg.channel, at=clock.now())
        await runtime.sla.sweep_clocks()
        resolution = (await clocks(runtime))["resolution"]
        assert (resolution.escalation_id, resolution.target_s, resolution.elapsed_s) == (None, 7200, 600)
    finally:
        await runtime.close()
