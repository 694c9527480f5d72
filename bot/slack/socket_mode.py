"""Socket Mode: Bolt's aiohttp handler with the ack timed and queued work started after it; loaded in that mode only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.slack.app import AFTER_ACK, start_all

if TYPE_CHECKING:
    from bot.slack.app import SlackBot


class SocketModeLink(AsyncSocketModeHandler):
    """Bolt's aiohttp Socket Mode handler, with the ack timed and queued work started after it."""

    def __init__(self, bot: SlackBot, app_token: str) -> None:
        super().__init__(bot.bolt, app_token, web_client=bot.chat.client)
        self._bot = bot

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        started = time.perf_counter()
        queued: list[Callable[[], None]] = []
        token = AFTER_ACK.set(queued)
        try:
            await super().handle(client, req)  # Bolt runs the listener, then the envelope is acknowledged
            self._bot.runtime.metrics.ack_latency.observe(time.perf_counter() - started)
        finally:
            AFTER_ACK.reset(token)
            start_all(queued)
