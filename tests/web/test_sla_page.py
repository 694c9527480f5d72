"""The dashboard's SLA page and JSON: the same numbers as `supportbot sla`, and the threads close to a breach."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot.clock import ManualClock
from bot.runtime import Runtime
from tests.escalation.conftest import customer_message, escalation_config, local_runtime
from tests.sla.test_cli import CONFIG, customer_thread
from tests.web.conftest import ClientFactory


@pytest.fixture
async def paged(tmp_path: Path) -> AsyncIterator[tuple[Runtime, ManualClock]]:
    clock = ManualClock()
    runtime = await local_runtime(escalation_config(CONFIG), f"sqlite+aiosqlite:///{tmp_path / 'sla.db'}", clock)
    try:
        yield runtime, clock
    finally:
        await runtime.close()


async def test_the_sla_page_shows_the_numbers_and_the_thread_about_to_breach(
    paged: tuple[Runtime, ManualClock], make_client: ClientFactory,
) -> None:
    runtime, clock = paged
    await customer_thread(runtime, clock, text="how do I change my email address", bot_takes_s=5)
    waiting = customer_message("I will sue you")
    escalation_id = (await runtime.pipeline.handle(waiting)).escalation_id
    client: TestClient = await make_client(runtime)

    html = await (await client.get("/sla")).text()
    assert "No open thread has reached its warning time." in html
    assert '<tr data-route="general" data-metric="first_response">' in html

    clock.advance(13 * 60)  # past 80 % of the escalate route's 15 min
    data = await (await client.get("/api/sla?since=all")).json()
    [near] = data["near_breach"]
    assert (near["metric"], near["escalation_id"], near["left_s"]) == ("first_human_response", escalation_id, 120)
    overall = data["scopes"][-1]
    assert overall["scope"] == "overall"
    assert overall["first_response"]["count"] == 2 and overall["first_response"]["p50_s"] == 2.5
    assert overall["first_human_response"]["open"] == 1

    html = await (await client.get("/sla?since=all")).text()
    assert f'<a href="/conversations/{near["conversation_id"]}">C0SUPPORT · {waiting.ts}</a>' in html
    assert "2 min left" in html and 'href="/sla"' in html

    await runtime.sla.sweep_clocks()  # measures the two first responses and warns
    state = await (await client.get("/api/playground/state")).json()
    [warning] = state["sla_warnings"]
    assert warning["thread_ts"] == waiting.ts
    assert warning["text"].startswith("SLA warning: first human response target (15 min) about to be missed")

    clock.advance(5 * 60)
    html = await (await client.get("/sla?since=all")).text()
    assert "late by 3 min" in html

    await runtime.sla.sweep_clocks()  # records the miss
    metrics = await (await client.get("/metrics")).text()
    assert 'supportbot_sla_warnings_total{metric="first_human_response"} 1.0' in metrics
    assert 'supportbot_sla_breaches_total{metric="first_human_response"} 1.0' in metrics
    assert 'supportbot_sla_seconds_count{metric="first_response"} 2.0' in metrics
    assert 'supportbot_sla_seconds_bucket{le="5.0",metric="first_response"} 2.0' in metrics


async def test_a_bad_window_is_a_400_that_says_why(paged: tuple[Runtime, ManualClock],
                                                   make_client: ClientFactory) -> None:
    client = await make_client(paged[0])
    response = await client.get("/api/sla?since=yesterday-ish")
    assert response.status == 400
    assert "since" in str(await response.json())
    assert (await client.get("/sla?since=yesterday-ish")).status == 400
