"""The chat port: everything the pipeline and escalations need from Slack, or from a stand-in for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from bot.domain import InboundMessage, PostedMessage, Turn

ReplyKind = Literal["reply", "notice"]


class ChatTransport(Protocol):
    """Raises bot.errors.TransportError when a message could not be delivered."""

    name: str

    async def post_reply(self, msg: InboundMessage, text: str, *, kind: ReplyKind = "reply") -> PostedMessage:
        """Post in the message's thread; the adapter tags it with `msg.dedupe_key` for find_reply."""
        ...

    async def find_reply(self, msg: InboundMessage) -> PostedMessage | None:
        """A reply already posted for `msg` (after a crash between posting and recording it)."""
        ...

    async def post_message(
        self, channel: str, text: str, *, thread_ts: str | None = None,
        blocks: Sequence[Mapping[str, Any]] | None = None,
    ) -> PostedMessage: ...

    async def update_message(
        self, channel: str, ts: str, text: str, *, blocks: Sequence[Mapping[str, Any]] | None = None
    ) -> None: ...

    async def post_ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None: ...

    async def open_dm(self, user: str) -> str:
        """The DM channel id with `user`."""
        ...

    async def permalink(self, channel: str, ts: str) -> str | None: ...

    async def thread_history(self, channel: str, thread_ts: str) -> list[Turn]:
        """Messages already in a thread the bot joins late (e.g. mentioned mid-thread)."""
        ...

    async def set_working(self, msg: InboundMessage, working: bool) -> None:
        """Show (or clear) that the bot is working on `msg`; failures here are never fatal."""
        ...
