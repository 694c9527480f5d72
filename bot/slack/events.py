"""Raw Slack payloads to typed values at the edge: a person's message, a button press, an assistant thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain import InboundMessage
from bot.slack.text import to_plain_text

# Message subtypes that are still a person writing; everything else (edits, deletes, joins, bots...) is not.
HUMAN_SUBTYPES = frozenset({"file_share", "thread_broadcast"})
# Slack cuts message text at 40,000 characters; anything longer did not come from a person typing, and is
# cut the same way rather than stored, classified and sent to the model whole.
MAX_TEXT_CHARS = 40_000
# Slack's ids ("T0123ABCD", "C0123ABCD", "Ev0123ABCD") and timestamps ("1700000000.000100") are short; the
# limits leave room to spare and keep every key within its column.
MAX_ID_CHARS, MAX_TS_CHARS, MAX_EVENT_ID_CHARS = 32, 32, 64


@dataclass(frozen=True)
class SlackPost:
    """A person's message, read from a `message` or an `app_mention` event (both yield the same post)."""

    team: str
    channel: str
    channel_type: str
    user: str
    text: str  # plain text, the bot's own mention removed
    ts: str
    thread_ts: str | None  # None for a top-level message
    parent_user: str | None  # who started the thread, for replies
    event_id: str
    mentions_bot: bool

    @property
    def in_dm(self) -> bool:
        return self.channel_type == "im"

    @property
    def in_assistant_thread(self) -> bool:
        # Slack's AI app pane is a threaded DM; Bolt's own Assistant middleware uses the same test.
        return self.in_dm and self.thread_ts is not None

    def inbound(self) -> InboundMessage:
        return InboundMessage(
            source="slack", team=self.team, channel=self.channel, user=self.user, text=self.text, ts=self.ts,
            event_id=self.event_id, thread_ts=self.thread_ts, channel_type=self.channel_type,
            is_mention=self.mentions_bot, assistant_thread=self.in_assistant_thread,
        )


@dataclass(frozen=True)
class Skip:
    """An event the bot does not answer, and why (for debug logs)."""

    reason: str


def read_post(body: Mapping[str, Any], *, bot_user_id: str | None, bot_id: str | None) -> SlackPost | Skip:
    event = body.get("event")
    if not isinstance(event, Mapping):
        return Skip("no event")
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return Skip(f"event type {kind}")
    subtype = event.get("subtype")
    if subtype is not None and subtype not in HUMAN_SUBTYPES:
        return Skip(f"subtype {subtype}")
    if event.get("bot_id") or event.get("bot_profile"):
        return Skip("bot message" if event.get("bot_id") != bot_id else "own message")
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ts, str):
        return Skip("no user, channel or ts")
    if bot_user_id is not None and user == bot_user_id:
        return Skip("own message")
    # The same message arrives as `message` and `app_mention` with different event ids: the team comes
    # from the envelope (not the author's team, which differs in shared channels) so both give one key.
    team = body.get("team_id") or event.get("team") or ""
    event_id = body.get("event_id") or f"{kind}:{channel}:{ts}"
    thread_ts = event.get("thread_ts")
    if (max(len(str(team)), len(channel), len(user)) > MAX_ID_CHARS or len(ts) > MAX_TS_CHARS
            or len(str(event_id)) > MAX_EVENT_ID_CHARS
            or (isinstance(thread_ts, str) and len(thread_ts) > MAX_TS_CHARS)):
        # Not from Slack, whatever the signature says; stored, it would fail its whole ack batch.
        return Skip("ids longer than Slack's")
    raw_text = event.get("text")
    raw_text = raw_text[:MAX_TEXT_CHARS] if isinstance(raw_text, str) else ""
    text = to_plain_text(raw_text, bot_user_id=bot_user_id)
    if not text:
        return Skip("no text")
    return SlackPost(
        team=str(team), channel=channel, channel_type=str(event.get("channel_type") or _channel_type(channel)),
        user=user, text=text, ts=ts,
        thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts != ts else None,
        parent_user=event.get("parent_user_id") if isinstance(event.get("parent_user_id"), str) else None,
        event_id=str(event_id),
        mentions_bot=kind == "app_mention" or (bot_user_id is not None and f"<@{bot_user_id}" in raw_text),
    )


def _channel_type(channel: str) -> str:
    # `app_mention` events carry no channel_type.
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


@dataclass(frozen=True)
class ButtonPress:
    action_id: str
    value: str
    user: str
    team: str
    channel: str
    message_ts: str | None
    thread_ts: str | None


def read_button(body: Mapping[str, Any]) -> ButtonPress | None:
    actions = body.get("actions")
    user = body.get("user")
    channel = body.get("channel") or {}
    container = body.get("container") or {}
    if not isinstance(actions, list) or not actions or not isinstance(user, Mapping):
        return None
    action = actions[0]
    channel_id = channel.get("id") if isinstance(channel, Mapping) else None
    channel_id = channel_id or (container.get("channel_id") if isinstance(container, Mapping) else None)
    if not isinstance(action, Mapping) or not isinstance(channel_id, str):
        return None
    team = body.get("team") or {}
    return ButtonPress(
        action_id=str(action.get("action_id", "")), value=str(action.get("value", "")), user=str(user.get("id", "")),
        team=str(team.get("id", "") if isinstance(team, Mapping) else user.get("team_id", "")),
        channel=channel_id,
        message_ts=container.get("message_ts") if isinstance(container, Mapping) else None,
        thread_ts=container.get("thread_ts") if isinstance(container, Mapping) else None,
    )


@dataclass(frozen=True)
class AssistantThread:
    user: str
    channel: str
    thread_ts: str


def read_assistant_thread(body: Mapping[str, Any]) -> AssistantThread | None:
    event = body.get("event")
    thread = event.get("assistant_thread") if isinstance(event, Mapping) else None
    if not isinstance(thread, Mapping):
        return None
    user, channel, thread_ts = thread.get("user_id"), thread.get("channel_id"), thread.get("thread_ts")
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(thread_ts, str)):
        return None
    return AssistantThread(user=user, channel=channel, thread_ts=thread_ts)
