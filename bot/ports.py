"""The chat port: what the pipeline and escalations need from a chat (Slack, the playground, the terminal).

The core hands the port structured values — an `Answer`, a `Notice`, an escalation `Page` — and each
adapter renders them its own way (Slack: mrkdwn and Block Kit; the playground: its web page). What an
adapter can do beyond the basics it says in `capabilities`; failures are `TransportError`s with a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.domain import Answer, InboundMessage, Notice, PostedMessage, SlaWarning, Turn
from bot.vocabulary import Origin

if TYPE_CHECKING:
    from bot.escalation.page import Page


@dataclass(frozen=True)
class Capabilities:
    # Finds a reply or a page whose post outcome was lost (a crash, a timeout), so it is adopted, not re-posted.
    finds_lost_posts: bool = False
    # Looks up the members of a user group (who may press page buttons; whom to DM when only a group is set).
    usergroups: bool = False
    # Local mode: the channel pages go to when the config names none, with a stand-in on-call person.
    local_page_channel: str | None = None
    # Answers can appear while they are being written (start_stream, append_stream, finish_stream).
    streams: bool = False


class ChatPort(Protocol):
    """Raises bot.errors.TransportError when a message could not be delivered."""

    @property
    def name(self) -> Origin: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def post_answer(self, msg: InboundMessage, answer: Answer) -> PostedMessage:
        """Post in the message's thread, tagged with `msg.dedupe_key` so `find_answer` can recognise it."""
        ...

    async def find_answer(self, msg: InboundMessage) -> PostedMessage | None:
        """An answer already posted for `msg` (after a crash between posting and recording it)."""
        ...

    async def start_stream(self, msg: InboundMessage, markdown: str) -> PostedMessage:
        """Start an answer in the message's thread that shows `markdown` and grows as text is appended."""
        ...

    async def append_stream(self, stream: PostedMessage, markdown: str) -> None: ...

    async def finish_stream(self, msg: InboundMessage, stream: PostedMessage, answer: Answer, *,
                            shown: str | None) -> PostedMessage:
        """End a streamed answer so the thread holds exactly `answer`, complete. `shown` is the text the stream
        shows so far; when the answer does not continue it (a retried or failed attempt), or it is unknown
        (None: recovery after a crash), the message is replaced by the answer instead."""
        ...

    async def post_notice(self, channel: str, thread_ts: str, notice: Notice) -> PostedMessage: ...

    async def post_page(self, channel: str, page: Page) -> PostedMessage: ...

    async def update_page(self, posted: PostedMessage, page: Page) -> None: ...

    async def post_sla_warning(self, channel: str, warning: SlaWarning) -> PostedMessage:
        """Tell the team in `channel` (the escalation channel) that a thread is about to miss a target."""
        ...

    async def find_page(self, channel: str, page: Page) -> PostedMessage | None:
        """A post of this page (same escalation and round) already in `channel`; None when there is none or
        the adapter cannot look (`capabilities.finds_lost_posts`)."""
        ...

    async def usergroup_members(self, usergroup: str) -> list[str]:
        """Members of a user group; empty when the adapter cannot look them up (`capabilities.usergroups`)."""
        ...

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
