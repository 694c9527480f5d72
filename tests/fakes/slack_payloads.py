"""Builders of realistic, signed Slack requests and payloads: events, interactions, commands."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from typing import Any, Literal
from urllib.parse import urlencode

TEAM_ID = "T0TEAM"
TEAM_DOMAIN = "fake"
APP_ID = "A0APP"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
BOT_NAME = "supportbot"
SIGNING_SECRET = "fake-signing-secret"
VERIFICATION_TOKEN = "fake-verification-token"
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

ChannelType = Literal["channel", "group", "im", "mpim", "app_home"]
FeedbackElement = Literal["feedback_buttons", "button"]
RetryReason = Literal["http_timeout", "http_error", "connection_failed", "too_many_connections"]

_event_ids = itertools.count(1)
_trigger_ids = itertools.count(1)
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")


# ---------------------------------------------------------------- signatures


def sign(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Return Slack's signature headers: timestamp and `v0=` + HMAC-SHA256 of `v0:{ts}:{body}`."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def sign_invalid(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Return well-formed signature headers that do not match `body` (one flipped hex digit)."""
    headers = sign(body, signing_secret, timestamp)
    signature = headers["X-Slack-Signature"]
    flipped = "0" if signature[-1] != "0" else "1"
    headers["X-Slack-Signature"] = signature[:-1] + flipped
    return headers


# ------------------------------------------------------------------- helpers


def now_ts() -> str:
    """Return a Slack message timestamp for the current time, e.g. "1700000000.000100"."""
    return f"{time.time():.6f}"


def new_event_id() -> str:
    """Return a fresh, unique Events API event id shaped like Slack's ("Ev0000000001")."""
    return f"Ev{next(_event_ids):010d}"


def new_trigger_id() -> str:
    """Return a fresh trigger id shaped like Slack's ("<digits>.<digits>.<hex>")."""
    return f"{next(_trigger_ids):011d}.{7000000000 + next(_trigger_ids)}.{uuid.uuid4().hex}"


def rich_text_blocks(text: str) -> list[dict[str, Any]]:
    """Return the rich_text block Slack's clients attach to a typed message, mentions included."""
    elements: list[dict[str, Any]] = []
    position = 0
    for match in _MENTION.finditer(text):
        if match.start() > position:
            elements.append({"type": "text", "text": text[position : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        position = match.end()
    if position < len(text):
        elements.append({"type": "text", "text": text[position:]})
    block_id = uuid.uuid5(uuid.NAMESPACE_OID, text).hex[:5]
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def bot_profile(bot_id: str = BOT_ID) -> dict[str, Any]:
    """Return the `bot_profile` object Slack attaches to messages an app posted."""
    ours = bot_id == BOT_ID
    return {
        "id": bot_id,
        "deleted": False,
        "name": BOT_NAME if ours else "other-bot",
        "updated": 1700000000,
        "app_id": APP_ID if ours else f"A{bot_id[1:]}",
        "icons": {"image_48": "https://fake.slack.com/bot_48.png"},
        "team_id": TEAM_ID,
    }


def _channel_type_for(channel: str) -> ChannelType:
    if channel.startswith("D"):
        return "im"
    if channel.startswith("G"):
        return "group"
    return "channel"


# -------------------------------------------------------------- Events API


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    event_time: int | None = None,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    bot_user_id: str = BOT_USER_ID,
    enterprise_id: str | None = None,
    is_ext_shared_channel: bool = False,
) -> dict[str, Any]:
    """Wrap `event` in the `event_callback` envelope Slack posts to the Request URL."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": enterprise_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": enterprise_id,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": is_ext_shared_channel,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def url_verification(challenge: str, *, token: str = VERIFICATION_TOKEN) -> dict[str, Any]:
    """Return the handshake Slack sends when a Request URL is saved."""
    return {"token": token, "challenge": challenge, "type": "url_verification"}


def message_event(
    channel: str,
    user: str,
    text: str,
    ts: str | None = None,
    *,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    channel_type: ChannelType | None = None,
    subtype: str | None = None,
    bot_id: str | None = None,
    team: str = TEAM_ID,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return a `message` event as a human (or, with `bot_id`, an app) typed it."""
    message_ts = ts or now_ts()
    event: dict[str, Any] = {"type": "message"}
    if subtype is not None:
        event["subtype"] = subtype
    event.update({"text": text, "user": user, "ts": message_ts, "team": team})
    if bot_id is None:
        event["client_msg_id"] = str(uuid.uuid4())
        event["blocks"] = rich_text_blocks(text)
    else:
        event["bot_id"] = bot_id
        event["app_id"] = APP_ID if bot_id == BOT_ID else f"A{bot_id[1:]}"
        event["bot_profile"] = bot_profile(bot_id)
    if files is not None:
        event["files"] = files
        event["upload"] = False
        event["display_as_bot"] = False
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        if thread_ts != message_ts:
            event["parent_user_id"] = parent_user_id or user
    event.update(
        {
            "channel": channel,
            "event_ts": message_ts,
            "channel_type": channel_type or _channel_type_for(channel),
        }
    )
    return event


def app_mention_event(
    channel: str,
    user: str,
    text: str,
    ts: str | None = None,
    *,
    thread_ts: str | None = None,
    team: str = TEAM_ID,
) -> dict[str, Any]:
    """Return an `app_mention` event; `text` should contain `<@U0BOT>` as Slack's does."""
    message_ts = ts or now_ts()
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": message_ts,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": rich_text_blocks(text),
        "channel": channel,
        "event_ts": message_ts,
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_changed_event(
    channel: str,
    ts: str,
    text: str,
    *,
    user: str,
    previous_text: str,
    edited_ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: ChannelType | None = None,
    team: str = TEAM_ID,
) -> dict[str, Any]:
    """Return the hidden `message_changed` event sent when `user` edits message `ts`."""
    event_ts = edited_ts or now_ts()
    original: dict[str, Any] = {
        "type": "message",
        "text": previous_text,
        "user": user,
        "ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "team": team,
        "blocks": rich_text_blocks(previous_text),
    }
    if thread_ts is not None:
        original["thread_ts"] = thread_ts
    changed = dict(original)
    changed.update(
        {
            "text": text,
            "blocks": rich_text_blocks(text),
            "edited": {"user": user, "ts": event_ts},
            "source_team": team,
            "user_team": team,
        }
    )
    return {
        "type": "message",
        "subtype": "message_changed",
        "message": changed,
        "previous_message": original,
        "channel": channel,
        "hidden": True,
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel_type or _channel_type_for(channel),
    }


def message_deleted_event(
    channel: str,
    deleted_ts: str,
    *,
    user: str,
    previous_text: str,
    thread_ts: str | None = None,
    channel_type: ChannelType | None = None,
    team: str = TEAM_ID,
) -> dict[str, Any]:
    """Return the hidden `message_deleted` event sent when message `deleted_ts` is deleted."""
    event_ts = now_ts()
    previous: dict[str, Any] = {
        "type": "message",
        "text": previous_text,
        "user": user,
        "ts": deleted_ts,
        "team": team,
    }
    if thread_ts is not None:
        previous["thread_ts"] = thread_ts
    return {
        "type": "message",
        "subtype": "message_deleted",
        "previous_message": previous,
        "channel": channel,
        "hidden": True,
        "deleted_ts": deleted_ts,
        "event_ts": event_ts,
        "ts": event_ts,
        "channel_type": channel_type or _channel_type_for(channel),
    }


def channel_join_event(
    channel: str,
    user: str,
    ts: str | None = None,
    *,
    inviter: str | None = None,
    channel_type: ChannelType | None = None,
) -> dict[str, Any]:
    """Return the `channel_join` message event posted when `user` joins `channel`."""
    message_ts = ts or now_ts()
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "channel_join",
        "ts": message_ts,
        "user": user,
        "text": f"<@{user}> has joined the channel",
    }
    if inviter is not None:
        event["inviter"] = inviter
    event.update(
        {
            "channel": channel,
            "event_ts": message_ts,
            "channel_type": channel_type or _channel_type_for(channel),
        }
    )
    return event


def bot_message_event(
    channel: str,
    text: str,
    ts: str | None = None,
    *,
    bot_id: str = "B0OTHER",
    username: str = "other-bot",
    thread_ts: str | None = None,
    channel_type: ChannelType | None = None,
) -> dict[str, Any]:
    """Return a legacy `bot_message` event (webhooks, integrations: no `user` field)."""
    message_ts = ts or now_ts()
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": text,
        "ts": message_ts,
        "username": username,
        "bot_id": bot_id,
        "app_id": f"A{bot_id[1:]}",
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event.update(
        {
            "channel": channel,
            "event_ts": message_ts,
            "channel_type": channel_type or _channel_type_for(channel),
        }
    )
    return event


def assistant_thread_started_event(
    user: str,
    channel: str,
    thread_ts: str,
    *,
    context_channel_id: str | None = None,
    team_id: str = TEAM_ID,
    enterprise_id: str | None = None,
) -> dict[str, Any]:
    """Return `assistant_thread_started`, sent when a user opens the app's assistant pane."""
    context: dict[str, Any] = {}
    if context_channel_id is not None:
        context = {
            "channel_id": context_channel_id,
            "team_id": team_id,
            "enterprise_id": enterprise_id,
        }
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": now_ts(),
    }


def assistant_thread_context_changed_event(
    user: str,
    channel: str,
    thread_ts: str,
    *,
    context_channel_id: str,
    team_id: str = TEAM_ID,
) -> dict[str, Any]:
    """Return `assistant_thread_context_changed`, sent when the user switches channel."""
    event = assistant_thread_started_event(
        user, channel, thread_ts, context_channel_id=context_channel_id, team_id=team_id
    )
    event["type"] = "assistant_thread_context_changed"
    return event


# ------------------------------------------------------------ interactivity


def block_actions(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel: str,
    message_ts: str,
    block_id: str = "actions",
    action_type: str = "button",
    button_text: str = "Button",
    thread_ts: str | None = None,
    message: dict[str, Any] | None = None,
    is_ephemeral: bool = False,
    response_url: str | None = None,
    trigger_id: str | None = None,
    user_name: str | None = None,
    channel_name: str = "support",
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
) -> dict[str, Any]:
    """Return the `block_actions` payload a click on a message button produces."""
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel,
        "is_ephemeral": is_ephemeral,
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
    name = user_name or user_id.lower()
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text, "emoji": True},
        "value": value,
        "type": action_type,
        "action_ts": now_ts(),
    }
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": name, "name": name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel_name},
        "state": {"values": {}},
        "response_url": response_url
        or f"https://hooks.slack.com/actions/{team_id}/{message_ts.replace('.', '')}/fake",
        "actions": [action],
    }
    if not is_ephemeral:
        payload["message"] = message or {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": api_app_id,
            "text": "",
            "ts": message_ts,
            "team": team_id,
            **({"thread_ts": thread_ts} if thread_ts is not None else {}),
        }
    return payload


def feedback_block_actions(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel: str,
    message_ts: str,
    thread_ts: str | None = None,
    positive: bool = True,
    element: FeedbackElement = "feedback_buttons",
    block_id: str = "feedback",
    message: dict[str, Any] | None = None,
    response_url: str | None = None,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
) -> dict[str, Any]:
    """Return the `block_actions` payload of a 👍 (`positive`) or 👎 press on a message's
    feedback: the `feedback_buttons` element of a `context_actions` block, or, with
    `element="button"`, a plain button standing in for it on workspaces without that block."""
    if element == "feedback_buttons":
        label = "👍" if positive else "👎"
    else:
        label = ":thumbsup:" if positive else ":thumbsdown:"
    return block_actions(
        action_id,
        value,
        user_id=user_id,
        channel=channel,
        message_ts=message_ts,
        block_id=block_id,
        action_type=element,
        button_text=label,
        thread_ts=thread_ts,
        message=message,
        response_url=response_url,
        team_id=team_id,
        api_app_id=api_app_id,
    )


def slash_command(
    command: str,
    text: str,
    *,
    user_id: str,
    channel_id: str,
    channel_name: str = "support",
    user_name: str | None = None,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    response_url: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, str]:
    """Return the form fields Slack posts for a slash command (all values are strings)."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url or f"https://hooks.slack.com/commands/{team_id}/1/fake",
        "trigger_id": trigger_id or new_trigger_id(),
    }


# ---------------------------------------------------------------- encoders


def _headers(
    body: bytes,
    content_type: str,
    signing_secret: str,
    timestamp: int | None,
    retry_num: int | None,
    retry_reason: str | None,
    valid_signature: bool,
) -> dict[str, str]:
    signer = sign if valid_signature else sign_invalid
    headers = {"Content-Type": content_type, "User-Agent": SLACK_USER_AGENT}
    headers.update(signer(body, signing_secret, timestamp))
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
    return headers


def encode_event_request(
    payload: dict[str, Any],
    *,
    signing_secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: RetryReason | None = None,
    valid_signature: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Encode an Events API payload as Slack posts it: JSON body plus signed headers."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = _headers(
        body,
        "application/json",
        signing_secret,
        timestamp,
        retry_num,
        retry_reason,
        valid_signature,
    )
    return body, headers


def encode_interaction_request(
    payload: dict[str, Any],
    *,
    signing_secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    valid_signature: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Encode an interactivity payload as Slack posts it: form body `payload=<json>`, signed."""
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    headers = _headers(
        body,
        "application/x-www-form-urlencoded",
        signing_secret,
        timestamp,
        None,
        None,
        valid_signature,
    )
    return body, headers


def encode_command_request(
    fields: dict[str, str],
    *,
    signing_secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    valid_signature: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Encode slash-command fields as Slack posts them: a plain signed form body."""
    body = urlencode(fields).encode()
    headers = _headers(
        body,
        "application/x-www-form-urlencoded",
        signing_secret,
        timestamp,
        None,
        None,
        valid_signature,
    )
    return body, headers
