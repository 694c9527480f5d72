"""Start-up in Slack mode refuses a config that could page nobody: customers would be told a person is coming."""

from __future__ import annotations

import pytest

from bot.config import Config, load_config
from bot.errors import ConfigError
from bot.web.server import start_server
from tests.fakes.slack_api import FakeSlackAPI
from tests.slack.conftest import slack_settings


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
    await server.stop()
