"""Block Kit for the bot's replies: the answer in mrkdwn sections, 👍/👎 feedback and a "Get a human" button."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, get_args

from bot.domain import Citation
from bot.escalation import REQUEST_ACTION, RequestTrigger
from bot.slack.mrkdwn import escape

# Slack refuses a section whose text is longer than this.
SECTION_LIMIT: Final = 3000
REPLY_EVENT_TYPE: Final = "supportbot_reply"
GET_A_HUMAN: Final = "Get a human"
SOURCES_BLOCK_ID: Final = "supportbot_sources"
# A context block holds at most 10 elements; an answer cites a handful of pages.
MAX_SOURCES: Final = 6
FEEDBACK_ACTION: Final = "reply_feedback"
FEEDBACK_BLOCK_ID: Final = "supportbot_feedback"
# Slack's own 👍/👎 (a `context_actions` block with `feedback_buttons`), or plain buttons where a workspace
# refuses that block.
FeedbackStyle = Literal["context_actions", "buttons"]


def thread_key(team: str, channel: str, thread_ts: str) -> str:
    """The button value that names a thread: `team:channel:thread_ts`."""
    return f"{team}:{channel}:{thread_ts}"


def parse_thread_key(value: str) -> tuple[str, str, str] | None:
    parts = value.split(":")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def request_value(team: str, channel: str, thread_ts: str, trigger: RequestTrigger = "user_request") -> str:
    """The "Get a human" button's value: the thread, and the trigger when it is not a plain request."""
    key = thread_key(team, channel, thread_ts)
    return key if trigger == "user_request" else f"{key}:{trigger}"


def parse_request_value(value: str) -> tuple[str, str, str, RequestTrigger] | None:
    key, _, trigger = value.rpartition(":") if value.count(":") == 3 else (value, "", "user_request")
    thread = parse_thread_key(key)
    if thread is None or trigger not in get_args(RequestTrigger):
        return None
    return (*thread, trigger)  # type: ignore[return-value]


def reply_metadata(dedupe_key: str) -> dict[str, Any]:
    """Message metadata that lets `find_reply` recognise this reply after a crash."""
    return {"event_type": REPLY_EVENT_TYPE, "event_payload": {"dedupe_key": dedupe_key}}


def reply_blocks(text: str | None, *, request_value: str | None, citations: Sequence[Citation] = (),
                 feedback: FeedbackStyle | None = None) -> list[dict[str, Any]]:
    """The answer as mrkdwn sections (none for a streamed answer, whose text the stream holds), the sources it
    was grounded in, with `feedback` 👍/👎 buttons, and with `request_value` a button to ask for a person."""
    blocks: list[dict[str, Any]] = [] if text is None else [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in split_sections(text)
    ]
    if citations:
        blocks.append(sources_block(citations))
    if feedback is not None:
        blocks.extend(feedback_blocks(feedback))
    if request_value is not None:
        blocks.append({
            "type": "actions", "block_id": "supportbot_reply",
            "elements": [{"type": "button", "action_id": REQUEST_ACTION, "value": request_value,
                          "text": {"type": "plain_text", "text": GET_A_HUMAN}}],
        })
    return blocks


def feedback_blocks(style: FeedbackStyle) -> list[dict[str, Any]]:
    """👍 (value "good") and 👎 ("bad") under an answer, action `reply_feedback`. As plain buttons each has its
    own block: Slack refuses two elements with one action_id in a block."""
    labels = {"good": ("👍", "This answer helped"), "bad": ("👎", "This answer did not help")}
    buttons = {value: {"text": {"type": "plain_text", "text": thumb, "emoji": True}, "value": value,
                       "accessibility_label": label} for value, (thumb, label) in labels.items()}
    if style == "context_actions":
        return [{"type": "context_actions", "block_id": FEEDBACK_BLOCK_ID, "elements": [{
            "type": "feedback_buttons", "action_id": FEEDBACK_ACTION,
            "positive_button": buttons["good"], "negative_button": buttons["bad"]}]}]
    return [{"type": "actions", "block_id": f"{FEEDBACK_BLOCK_ID}_{value}",
             "elements": [{"type": "button", "action_id": FEEDBACK_ACTION, **button}]}
            for value, button in buttons.items()]


def sources_block(citations: Sequence[Citation]) -> dict[str, Any]:
    """"Sources:" and each page: its title linking to its URL, or its title and file name; an answer the team gave
    before says so."""
    shown = [f"<{c.url}|{escape(c.label)}>" if c.url else f"{escape(c.label)} (`{escape(c.source)}`)"
             for c in citations[:MAX_SOURCES]]
    return {"type": "context", "block_id": SOURCES_BLOCK_ID,
            "elements": [{"type": "mrkdwn", "text": ("*Sources:* " + " · ".join(shown))[:SECTION_LIMIT]}]}


def split_sections(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Cut `text` into pieces a section accepts, preferring paragraph and line ends."""
    pieces: list[str] = []
    rest = text.strip() or " "
    while len(rest) > limit:
        cut = max(rest.rfind("\n\n", 0, limit), rest.rfind("\n", 0, limit))
        if cut < limit // 2:
            cut = rest.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    pieces.append(rest)
    return pieces
