"""Slack Web API lookups escalations need beyond the chat port: user group members, and a page lost in a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain import PostedMessage
from bot.errors import TransportError

# How far back in a page channel (newest first) a lost page is looked for.
HISTORY_LIMIT = 100


class SlackEscalationLookups:
    """Implements bot.escalation.UsergroupDirectory (scope usergroups:read) and PageFinder
    (scopes channels:history, groups:history, im:history) over one AsyncWebClient."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    @classmethod
    def for_transport(cls, chat: object) -> SlackEscalationLookups | None:
        client = getattr(chat, "client", None)
        return cls(client) if isinstance(client, AsyncWebClient) else None

    async def usergroup_members(self, usergroup: str) -> list[str]:
        response = await _call("usergroups.users.list", self._client.usergroups_users_list(usergroup=usergroup))
        users = response.get("users") or []
        return [str(user) for user in users if isinstance(user, str)]

    async def find_message_with_block(self, channel: str, block_id: str) -> PostedMessage | None:
        response = await _call("conversations.history",
                               self._client.conversations_history(channel=channel, limit=HISTORY_LIMIT))
        for message in response.get("messages") or []:
            if not isinstance(message, Mapping):
                continue
            for block in message.get("blocks") or []:
                if isinstance(block, Mapping) and block.get("block_id") == block_id:
                    return PostedMessage(channel, str(message["ts"]))
        return None


async def _call(method: str, pending: Any) -> Any:
    try:
        return await pending
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        raise TransportError(f"Slack {method} failed: {error or exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransportError(f"Slack {method} failed: {type(exc).__name__}") from exc
