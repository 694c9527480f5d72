"""An in-process chat for local mode, the terminal chat and tests: it keeps what was posted, as posted values."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final, Literal

from bot.clock import Clock, SystemClock
from bot.domain import Answer, InboundMessage, Notice, PostedMessage, SlaWarning, Turn
from bot.errors import TransportError
from bot.escalation.page import Page
from bot.ports import Capabilities

# Where pages go in local mode when the config names no escalation channel.
LOCAL_PAGE_CHANNEL: Final = "CESCALATIONS"

PostKind = Literal["answer", "notice", "page", "sla_warning"]


@dataclass
class LocalPost:
    """One message in the local chat: an answer to a message, a notice in a thread, or a page."""

    channel: str
    ts: str
    kind: PostKind
    thread_ts: str | None = None
    answer: Answer | None = None
    notice: Notice | None = None
    page: Page | None = None
    sla_warning: SlaWarning | None = None
    # The dedupe key of the message an answer replies to.
    reply_to: str | None = None
    # How often a page was updated in place.
    updated: int = 0
    # A streamed answer: what it shows so far, and whether it is still being written.
    streamed: str = ""
    streaming: bool = False

    @property
    def text(self) -> str:
        """The post as Markdown; a notice's `{user}` written as @user."""
        if self.answer is not None:
            return self.answer.text
        if self.kind == "answer":
            return self.streamed
        if self.notice is not None:
            return self.notice.template.replace("{user}", f"@{self.notice.user}")
        if self.sla_warning is not None:
            return sla_warning_markdown(self.sla_warning)
        assert self.page is not None
        return self.page.title


def sla_warning_markdown(warning: SlaWarning) -> str:
    """The warning as the playground and the terminal show it."""
    where = (f"[the thread]({warning.permalink})" if warning.permalink
             else f"thread {warning.thread_ts} in #{warning.channel}")
    escalation = f", escalation #{warning.escalation_id}" if warning.escalation_id is not None else ""
    return (f"**{warning.title}**\n{where} (route {warning.route or 'n/a'}{escalation}) misses it at "
            f"{warning.deadline.strftime('%Y-%m-%d %H:%M UTC')} unless someone answers first.")


# The newest ts any LocalChat in this process handed out, in microseconds.
_last_ts_us = 0


class LocalChat:
    """Implements bot.ports.ChatPort in memory; pages go to LOCAL_PAGE_CHANNEL unless the config names one."""

    name: Final = "local"
    capabilities: Final = Capabilities(local_page_channel=LOCAL_PAGE_CHANNEL, streams=True)

    def __init__(self, clock: Clock | None = None, *, team: str = "TLOCAL") -> None:
        self.team = team
        self.posts: list[LocalPost] = []
        self.working: set[str] = set()
        self._clock = clock or SystemClock()
        # Bumped on every change, so a watcher (the playground's event stream) knows when to look again.
        self.version = 0
        self._changed = asyncio.Condition()

    async def changed_since(self, version: int, timeout_s: float) -> int:
        """Wait up to `timeout_s` for a change after `version`; returns the current version."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version != version), timeout_s)
        return self.version

    async def _touch(self) -> None:
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    def next_ts(self) -> str:
        """A Slack-style ts ("seconds.micros"): the clock's microsecond, bumped past every ts this process
        has issued, so two chats in one process never share one; another process would need the same µs."""
        global _last_ts_us
        _last_ts_us = max(int(self._clock.now().timestamp() * 1_000_000), _last_ts_us + 1)
        return f"{_last_ts_us // 1_000_000}.{_last_ts_us % 1_000_000:06d}"

    async def _add(self, post: LocalPost) -> PostedMessage:
        self.posts.append(post)
        await self._touch()
        return PostedMessage(post.channel, post.ts)

    def _post(self, posted: PostedMessage) -> LocalPost:
        found = next((p for p in self.posts if p.channel == posted.channel and p.ts == posted.ts), None)
        if found is None:
            raise TransportError(f"no message {posted.ts} in {posted.channel}", code="message_not_found")
        return found

    async def post_answer(self, msg: InboundMessage, answer: Answer) -> PostedMessage:
        return await self._add(LocalPost(channel=msg.channel, ts=self.next_ts(), kind="answer",
                                         thread_ts=msg.root_ts, answer=answer, reply_to=msg.dedupe_key))

    async def start_stream(self, msg: InboundMessage, markdown: str) -> PostedMessage:
        return await self._add(LocalPost(channel=msg.channel, ts=self.next_ts(), kind="answer",
                                         thread_ts=msg.root_ts, streamed=markdown, streaming=True))

    async def append_stream(self, stream: PostedMessage, markdown: str) -> None:
        post = self._post(stream)
        if not post.streaming:
            raise TransportError("the answer is not streaming any more", code="message_not_in_streaming_state")
        post.streamed += markdown
        await self._touch()

    async def finish_stream(self, msg: InboundMessage, stream: PostedMessage, answer: Answer, *,
                            shown: str | None) -> PostedMessage:
        post = self._post(stream)
        post.streaming = False
        post.answer = answer
        post.reply_to = msg.dedupe_key
        await self._touch()
        return stream

    async def find_answer(self, msg: InboundMessage) -> PostedMessage | None:
        return next((PostedMessage(p.channel, p.ts) for p in self.posts if p.reply_to == msg.dedupe_key), None)

    async def post_notice(self, channel: str, thread_ts: str, notice: Notice) -> PostedMessage:
        return await self._add(LocalPost(channel=channel, ts=self.next_ts(), kind="notice", thread_ts=thread_ts,
                                         notice=notice))

    async def post_page(self, channel: str, page: Page) -> PostedMessage:
        return await self._add(LocalPost(channel=channel, ts=self.next_ts(), kind="page", page=page))

    async def post_sla_warning(self, channel: str, warning: SlaWarning) -> PostedMessage:
        return await self._add(LocalPost(channel=channel, ts=self.next_ts(), kind="sla_warning",
                                         sla_warning=warning))

    async def update_page(self, posted: PostedMessage, page: Page) -> None:
        post = self._post(posted)
        post.page = page
        post.updated += 1
        await self._touch()

    async def find_page(self, channel: str, page: Page) -> PostedMessage | None:
        return None

    async def usergroup_members(self, usergroup: str) -> list[str]:
        return []

    async def open_dm(self, user: str) -> str:
        return f"D{user}"

    async def permalink(self, channel: str, ts: str) -> str | None:
        return None

    async def thread_history(self, channel: str, thread_ts: str) -> list[Turn]:
        return []

    async def set_working(self, msg: InboundMessage, working: bool) -> None:
        (self.working.add if working else self.working.discard)(msg.dedupe_key)
        await self._touch()

    def posts_in(self, channel: str, thread_ts: str | None = None) -> list[LocalPost]:
        return [p for p in self.posts if p.channel == channel and (thread_ts is None or p.thread_ts == thread_ts)]

    def pages_in(self, channel: str) -> list[Page]:
        """The pages posted in `channel`, oldest first, as they stand now."""
        return [p.page for p in self.posts_in(channel) if p.page is not None]
