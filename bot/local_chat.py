"""An in-process chat transport for local mode, the terminal chat and tests: it keeps what was posted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock, SystemClock
from bot.domain import InboundMessage, PostedMessage, Turn
from bot.ports import ReplyKind


@dataclass
class LocalPost:
    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    blocks: list[Mapping[str, Any]] = field(default_factory=list)
    kind: str = "message"
    reply_to: str | None = None
    user: str | None = None
    updated: int = 0


# The newest ts any LocalChat in this process handed out, in microseconds.
_last_ts_us = 0


class LocalChat:
    name = "local"

    def __init__(self, clock: Clock | None = None, *, team: str = "TLOCAL") -> None:
        self.team = team
        self.posts: list[LocalPost] = []
        self.working: set[str] = set()
        self._clock = clock or SystemClock()

    def next_ts(self) -> str:
        """A Slack-style ts ("seconds.micros"): the clock's microsecond, bumped past every ts this process
        has issued, so two chats in one process never share one; another process would need the same µs."""
        global _last_ts_us
        _last_ts_us = max(int(self._clock.now().timestamp() * 1_000_000), _last_ts_us + 1)
        return f"{_last_ts_us // 1_000_000}.{_last_ts_us % 1_000_000:06d}"

    async def post_reply(self, msg: InboundMessage, text: str, *, kind: ReplyKind = "reply") -> PostedMessage:
        post = LocalPost(channel=msg.channel, ts=self.next_ts(), text=text, thread_ts=msg.root_ts,
                         kind=kind, reply_to=msg.dedupe_key)
        self.posts.append(post)
        return PostedMessage(post.channel, post.ts)

    async def find_reply(self, msg: InboundMessage) -> PostedMessage | None:
        for post in self.posts:
            if post.reply_to == msg.dedupe_key:
                return PostedMessage(post.channel, post.ts)
        return None

    async def post_message(
        self, channel: str, text: str, *, thread_ts: str | None = None,
        blocks: Sequence[Mapping[str, Any]] | None = None,
    ) -> PostedMessage:
        post = LocalPost(channel=channel, ts=self.next_ts(), text=text, thread_ts=thread_ts,
                         blocks=list(blocks or []))
        self.posts.append(post)
        return PostedMessage(channel, post.ts)

    async def update_message(
        self, channel: str, ts: str, text: str, *, blocks: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        for post in self.posts:
            if post.channel == channel and post.ts == ts:
                post.text = text
                post.blocks = list(blocks or [])
                post.updated += 1

    async def post_ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        self.posts.append(LocalPost(channel=channel, ts=self.next_ts(), text=text, thread_ts=thread_ts,
                                    kind="ephemeral", user=user))

    async def open_dm(self, user: str) -> str:
        return f"D{user}"

    async def permalink(self, channel: str, ts: str) -> str | None:
        return None

    async def thread_history(self, channel: str, thread_ts: str) -> list[Turn]:
        return []

    async def set_working(self, msg: InboundMessage, working: bool) -> None:
        (self.working.add if working else self.working.discard)(msg.dedupe_key)

    def posts_in(self, channel: str, thread_ts: str | None = None) -> list[LocalPost]:
        return [p for p in self.posts if p.channel == channel and (thread_ts is None or p.thread_ts == thread_ts)]
