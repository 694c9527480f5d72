"""Socket Mode: envelopes over the fake's WebSocket are acknowledged, then answered once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import Config
from bot.web.server import RunningServer, start_server
from storage.models import InboundEvent
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import CUSTOMER, OTHER, SUPPORT

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def socket_server(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config
) -> AsyncIterator[RunningServer]:
    settings = slack_settings(fake_slack, sqlite_url, socket_mode=True)
    assert settings.run_mode == "socket"
    server = await start_server(settings, slack_config, host="127.0.0.1", port=0, clock=ManualClock(),
                                instance_id="socket-1")
    try:
        yield server
    finally:
        await server.stop()


async def test_an_envelope_is_acked_then_answered_in_its_thread(
    fake_slack: FakeSlackAPI, socket_server: RunningServer,
) -> None:
    await fake_slack.wait_for_socket_client()
    [opened] = fake_slack.successful_calls_to("apps.connections.open")
    assert opened.token == "xapp-test"

    delivery = await fake_slack.user_posts(SUPPORT, CUSTOMER, "the app crashes every time I upload a file")
    [envelope_id] = delivery.envelope_ids
    ack = await fake_slack.wait_for_ack(envelope_id)
    assert ack.payload is None  # a plain ack, no response payload
    async with socket_server.runtime.db.sessions() as session:
        [row] = (await session.execute(select(InboundEvent))).scalars().all()
    assert row.dedupe_key == f"T0TEAM:{SUPPORT}:{delivery.message.ts}"
    await fake_slack.wait_for("chat.postMessage", successful=True)
    await socket_server.runtime.dispatcher.wait_idle()
    # The work (👀, the reply) started only once the envelope was acknowledged.
    work = fake_slack.calls_to("reactions.add") + fake_slack.calls_to("chat.postMessage")
    assert work and all(call.at > ack.at for call in work)
    replies = [m for m in fake_slack.messages_in(SUPPORT, delivery.message.ts) if m.ts != delivery.message.ts]
    assert len(replies) == 1 and replies[0].thread_ts == delivery.message.ts
    assert "supportbot_ack_latency_seconds_count 1.0" in socket_server.runtime.metrics.render().decode()


async def test_a_mention_and_a_redelivered_envelope_get_one_reply(
    fake_slack: FakeSlackAPI, socket_server: RunningServer,
) -> None:
    message = fake_slack.seed_message(OTHER, "<@U0BOT> our CSV export fails", user=CUSTOMER)
    as_message = sp.event_callback(sp.message_event(OTHER, CUSTOMER, message.text, message.ts), event_id="Ev0SM1")
    as_mention = sp.event_callback(sp.app_mention_event(OTHER, CUSTOMER, message.text, message.ts),
                                   event_id="Ev0SM2")
    envelopes = [
        await fake_slack.send_envelope("events_api", as_message),
        await fake_slack.send_envelope("events_api", as_mention),
        # Slack resends an envelope whose ack it did not see, with the same event id.
        await fake_slack.send_envelope("events_api", as_message, retry_attempt=1, retry_reason="timeout"),
    ]
    for envelope_id in envelopes:
        await fake_slack.wait_for_ack(envelope_id)
    await fake_slack.wait_for("chat.postMessage", successful=True)
    await socket_server.runtime.dispatcher.wait_idle()
    assert len(fake_slack.calls_to("chat.postMessage")) == 1

    # The web server still serves health and metrics in Socket Mode, and no events endpoint.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{socket_server.url}/healthz") as health:
            assert health.status == 200 and (await health.json())["mode"] == "socket"
        async with http.post(f"{socket_server.url}/slack/events", data=b"{}") as events:
            assert events.status in (404, 405)


async def test_after_slack_asks_for_a_reconnect_messages_still_get_answered(
    fake_slack: FakeSlackAPI, socket_server: RunningServer,
) -> None:
    await fake_slack.wait_for_socket_client()
    await fake_slack.send_disconnect("refresh_requested")
    await fake_slack.wait_for_socket_client(timeout=10, connections=2)
    delivery = await fake_slack.user_posts(SUPPORT, CUSTOMER, "how do I reset my password?")
    await fake_slack.wait_for_ack(delivery.envelope_ids[0])
    await fake_slack.wait_for("chat.postMessage", successful=True)
    assert len(fake_slack.successful_calls_to("apps.connections.open")) == 2
