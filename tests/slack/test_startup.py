"""Start-up in Slack mode: a config that could page nobody is refused, and the first burst of events is ready for."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot.clock import ManualClock
from bot.config import Config, load_config
from bot.errors import ConfigError
from bot.web.server import DRAINING_KEY, start_server
from tests.conftest import slack_settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import CUSTOMER, SUPPORT, running_bot


async def test_slack_mode_without_anyone_to_page_is_refused(fake_slack: FakeSlackAPI, sqlite_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        await start_server(slack_settings(fake_slack, sqlite_url), load_config(), host="127.0.0.1", port=0)
    assert refused.value.key == "escalation"
    assert "nobody can be paged" in refused.value.reason
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_an_escalation_channel_is_enough(fake_slack: FakeSlackAPI, sqlite_url: str) -> None:
    base = load_config()
    config: Config = base.model_copy(update={"escalation": base.escalation.model_copy(update={"channel": "C0PAGES"})})
    server = await start_server(slack_settings(fake_slack, sqlite_url), config, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as health:
            assert health.status == 200 and (await health.json())["mode"] == "http"
    finally:
        await server.stop()
    assert server.app[DRAINING_KEY].is_set()  # stopped the way SIGTERM stops it


async def test_a_first_burst_does_not_wait_for_slack_to_authorize_each_event(
    fake_slack: FakeSlackAPI, sqlite_url: str, slack_config: Config, clock: ManualClock
) -> None:
    """Bolt asks auth.test on the first request it sees; before start-up did that once, every event of a first
    burst asked again while the first answer was on its way, and each ack waited for Slack."""
    async with running_bot(fake_slack, sqlite_url, slack_config, clock=clock) as bot:
        asked_at_start = len(fake_slack.calls_to("auth.test"))
        fake_slack.delay("auth.test", 0.5)  # a slow Slack: every request of the burst overlaps the first ask
        posts = [fake_slack.seed_message(SUPPORT, f"my export fails ({n})", user=CUSTOMER) for n in range(10)]
        statuses = await asyncio.gather(*(
            bot.send_event(sp.message_event(SUPPORT, CUSTOMER, post.text, post.ts)) for post in posts))
        assert [status for status, _ in statuses] == [200] * 10
        assert len(fake_slack.calls_to("auth.test")) == asked_at_start
        await bot.settle()
        assert len(await bot.inbox()) == 10
