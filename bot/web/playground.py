"""The local playground: a web support channel on the real pipeline, with the on-call side next to it.

A message typed here goes the way a Slack event goes (inbox -> dispatcher -> pipeline); the page polls
one JSON endpoint that rebuilds the channel from the inbox, the conversation record and the local
transport's posts, so what it shows is what the bot really did.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from bot.domain import InboundMessage
from bot.local_chat import LocalChat, LocalPost
from bot.web.dashboard import Dashboard, json_object
from bot.web.review import decision_json, thread_view
from storage import repositories as repo
from storage.models import Escalation, InboundEvent, parse_row_id

log = structlog.get_logger(__name__)

PLAYGROUND_CHANNEL = "CPLAYGROUND"
CUSTOMER_USER = "UCUSTOMER"
# Only used if the escalation service names nobody at all (it has a local stand-in in local mode).
FALLBACK_ONCALL_USER = "UONCALL"
MAX_TEXT = 4000
ACTIONS = ("acknowledge", "resolve")
# A thread is named by its first message's ts, as LocalChat.next_ts makes them ("1700000000.000001").
THREAD_TS = re.compile(r"\d{1,12}\.\d{1,9}")


def add_playground_routes(app: web.Application, dashboard: Dashboard) -> None:
    guard = dashboard.guard
    app.router.add_get("/playground", guard(partial(_page, dashboard), page=True))
    app.router.add_get("/api/playground/state", guard(partial(_state, dashboard), page=False))
    app.router.add_post("/api/playground/messages", guard(partial(_send, dashboard), page=False))
    app.router.add_post("/api/playground/staff-replies", guard(partial(_staff_reply, dashboard), page=False))
    app.router.add_post("/api/playground/escalations/{id:\\d+}/{action}",
                        guard(partial(_escalation_action, dashboard), page=False))


def _chat(dashboard: Dashboard) -> LocalChat:
    chat = dashboard.runtime.chat
    if not isinstance(chat, LocalChat):
        raise web.HTTPNotFound(text="The playground runs in local mode only (no Slack credentials set).")
    return chat


def oncall_user(dashboard: Dashboard) -> str:
    """The person the playground answers pages as: the escalation service's local on-call, else staff."""
    runtime = dashboard.runtime
    return runtime.escalations.local_oncall_user or next(iter(runtime.config.bot.staff), FALLBACK_ONCALL_USER)


async def _page(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    if not dashboard.playground_enabled:
        return dashboard.error(request, 404, "The playground runs in local mode only: this server is connected to "
                                             "Slack, so talk to the bot there.", page=True)
    return dashboard.render(request, "playground.html", channel=PLAYGROUND_CHANNEL, customer=CUSTOMER_USER,
                            oncall=oncall_user(dashboard))


# --- reading the channel -----------------------------------------------------------------------------

_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")
_GROUP = re.compile(r"<!subteam\^([A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)>")
_FALLBACK = re.compile(r"<![^|>]*\|([^>]*)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])")
_QUOTE = re.compile(r"^>\s?", re.MULTILINE)


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn as readable plain text (the page inserts it with textContent, never as HTML)."""
    text = _MENTION.sub(r"@\1", mrkdwn)
    text = _CHANNEL.sub(lambda m: "#" + (m[2] or m[1]), text)
    text = _GROUP.sub(r"@\1", text)
    text = _SPECIAL.sub(r"@\1", text)
    text = _FALLBACK.sub(r"\1", text)
    text = _LINK.sub(r"\2 (\1)", text)
    text = _QUOTE.sub("", _ITALIC.sub(r"\1", _BOLD.sub(r"\1", text)))
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def page_lines(post: LocalPost | None, fallback: str) -> list[dict[str, str]]:
    """What the on-call person sees in the page: its Block Kit blocks as styled lines."""
    if post is None or not post.blocks:
        return [{"style": "text", "text": plain(post.text if post else fallback)}]
    lines = []
    for block in post.blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append({"style": "header", "text": str(block.get("text", {}).get("text", ""))})
        elif kind == "section":
            if "text" in block:
                lines.append({"style": "text", "text": plain(str(block["text"].get("text", "")))})
            for item in block.get("fields", []):
                lines.append({"style": "field", "text": plain(str(item.get("text", "")))})
        elif kind == "context":
            for element in block.get("elements", []):
                lines.append({"style": "context", "text": plain(str(element.get("text", "")))})
    return lines


def _ts_key(ts: str | None) -> tuple[int, int]:
    whole, _, part = (ts or "0.0").partition(".")
    return (int(whole) if whole.isdigit() else 0, int(part) if part.isdigit() else 0)


def _root(event: InboundEvent) -> str:
    return str(event.payload.get("thread_ts") or event.payload.get("ts"))


async def _state(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    chat = _chat(dashboard)
    runtime = dashboard.runtime
    selected = request.query.get("thread") or None
    async with runtime.db.sessions() as session:
        events = await repo.inbound_for_channel(session, team=chat.team, channel=PLAYGROUND_CHANNEL)
        conversations = {c.thread_ts: c for c, _ in await repo.recent_conversations(
            session, team=chat.team, channel=PLAYGROUND_CHANNEL, limit=200)}
        escalations = await repo.recent_escalations(session, limit=30)
        conversation = conversations.get(selected) if selected else None
        review = await repo.conversation_review(session, conversation.id) if conversation else None
    by_conversation = {e.conversation_id: e for e in sorted(escalations, key=lambda e: e.id)}
    threads = []
    for event in reversed(events):
        if event.payload.get("thread_ts"):
            continue
        found = conversations.get(event.payload["ts"])
        escalation = by_conversation.get(found.id) if found else None
        threads.append({
            "thread_ts": event.payload["ts"], "text": plain(str(event.payload.get("text", "")))[:140],
            "state": found.state if found else "new", "conversation_id": found.id if found else None,
            "escalation": escalation.state if escalation else None,
        })
    thread = None
    if selected:
        thread = _thread(dashboard, chat, selected, [e for e in events if _root(e) == selected], review)
    thread_of = {c.id: ts for ts, c in conversations.items()}
    return web.json_response({
        "channel": PLAYGROUND_CHANNEL, "customer": CUSTOMER_USER, "oncall": oncall_user(dashboard),
        "route_classes": {route: "c" + color.lstrip("#") for route, color in dashboard.colors().items()},
        "threads": threads[:50], "thread": thread,
        "escalations": [_escalation(chat, e, thread_of.get(e.conversation_id)) for e in escalations],
    })


def _thread(dashboard: Dashboard, chat: LocalChat, thread_ts: str, events: list[InboundEvent],
            review: repo.ConversationReview | None) -> dict[str, Any]:
    items: dict[str, dict[str, Any]] = {}
    decisions: dict[str, dict[str, Any]] = {}
    if review is not None:
        for view in thread_view(review):
            message = view.message
            if view.decision is not None and message.ts:
                decisions[message.ts] = decision_json(view.decision)
            if message.role in ("assistant", "staff") and message.ts:
                items[message.ts] = {"ts": message.ts, "kind": "bot" if message.role == "assistant" else "staff",
                                     "user": message.user, "text": plain(message.text)}
    for event in events:
        ts = str(event.payload["ts"])
        items[ts] = {"ts": ts, "kind": "customer", "user": event.payload.get("user"),
                     "text": str(event.payload.get("text", "")), "status": event.status, "outcome": event.outcome,
                     "decision": decisions.get(ts)}
    for post in chat.posts_in(PLAYGROUND_CHANNEL, thread_ts):
        if post.ts not in items:
            kind = "bot" if post.reply_to else ("ephemeral" if post.kind == "ephemeral" else "notice")
            items[post.ts] = {"ts": post.ts, "kind": kind, "user": post.user, "text": plain(post.text)}
    working = any(item.get("status") in ("pending", "processing") for item in items.values())
    conversation = review.conversation if review else None
    return {
        "thread_ts": thread_ts, "state": conversation.state if conversation else "new",
        "conversation_id": conversation.id if conversation else None,
        "inspect_url": f"/conversations/{conversation.id}" if conversation else None,
        "taken_over_by": conversation.taken_over_by if conversation else None,
        "working": working, "items": sorted(items.values(), key=lambda item: _ts_key(item["ts"])),
    }


def _escalation(chat: LocalChat, escalation: Escalation, thread_ts: str | None) -> dict[str, Any]:
    post = next((p for p in chat.posts if p.channel == escalation.page_channel and p.ts == escalation.page_ts), None)
    return {
        "id": escalation.id, "state": escalation.state, "trigger": escalation.trigger, "route": escalation.route,
        "reason": escalation.reason, "summary": escalation.summary, "requester": escalation.requester,
        "conversation_id": escalation.conversation_id, "page_channel": escalation.page_channel,
        "created_at": escalation.created_at.isoformat(), "repage_count": escalation.repage_count,
        "acknowledged_by": escalation.acknowledged_by, "resolved_by": escalation.resolved_by,
        "page": page_lines(post, f"escalation #{escalation.id} ({escalation.state})"),
        "can_acknowledge": escalation.state == "paged",
        "can_resolve": escalation.state in ("paged", "acknowledged"),
        "inspect_url": f"/conversations/{escalation.conversation_id}",
        # Set when the escalated thread is a playground thread, so the page can open it.
        "thread_ts": thread_ts,
    }


# --- acting in the channel -------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await json_object(request)
    if body is None:
        raise web.HTTPBadRequest(text='{"error": "send a JSON object"}', content_type="application/json")
    return body


def _thread_ts(body: dict[str, Any]) -> str | None:
    """The thread named in the body, None for a new one; a value no thread could have is a 400."""
    value = body.get("thread_ts")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not THREAD_TS.fullmatch(value):
        raise web.HTTPBadRequest(text='{"error": "thread_ts is not the ts of a thread"}',
                                 content_type="application/json")
    return value


def _text(body: dict[str, Any]) -> str | web.Response:
    text = str(body.get("text") or "").strip()
    if not text:
        return web.json_response({"error": "type a message first"}, status=400)
    if len(text) > MAX_TEXT:
        return web.json_response({"error": f"messages are limited to {MAX_TEXT} characters here"}, status=400)
    return text


async def _send(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    """A customer message: accepted into the inbox like a Slack event, then processed after the 'ack'."""
    chat = _chat(dashboard)
    body = await _json_body(request)
    text = _text(body)
    if isinstance(text, web.Response):
        return text
    thread_ts = _thread_ts(body)
    ts = chat.next_ts()
    msg = InboundMessage(source="local", team=chat.team, channel=PLAYGROUND_CHANNEL, user=CUSTOMER_USER, text=text,
                         ts=ts, event_id=f"local-{ts}", thread_ts=thread_ts)
    runtime = dashboard.runtime
    inbox_id = await runtime.pipeline.accept(msg)
    if inbox_id is not None:
        runtime.dispatcher.submit(inbox_id)
    return web.json_response({"ts": ts, "thread_ts": msg.root_ts, "accepted": inbox_id is not None}, status=202)


async def _staff_reply(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    """On-call answers in the thread: the conversation is taken over and the bot stays quiet there."""
    chat = _chat(dashboard)
    body = await _json_body(request)
    text = _text(body)
    if isinstance(text, web.Response):
        return text
    thread_ts = _thread_ts(body)
    if thread_ts is None:
        return web.json_response({"error": "say which thread to reply in (thread_ts)"}, status=400)
    user = oncall_user(dashboard)
    recorded = await dashboard.runtime.pipeline.record_staff_message(
        team=chat.team, channel=PLAYGROUND_CHANNEL, thread_ts=thread_ts, user=user, text=text, ts=chat.next_ts())
    if not recorded:
        return web.json_response({"error": "the bot has no conversation in that thread yet"}, status=404)
    return web.json_response({"user": user, "taken_over": True}, status=201)


async def _escalation_action(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    _chat(dashboard)
    action = request.match_info["action"]
    if action not in ACTIONS:
        return web.json_response({"error": f"unknown action {action!r} (use acknowledge or resolve)"}, status=404)
    escalation_id = parse_row_id(request.match_info["id"])
    if escalation_id is None:
        return web.json_response({"error": "there is no such escalation"}, status=404)
    user = oncall_user(dashboard)
    service = dashboard.runtime.escalations
    result = await (service.acknowledge if action == "acknowledge" else service.resolve)(escalation_id, user)
    status = {"done": 200, "already": 409, "refused": 403, "not_found": 404}.get(result, 400)
    messages = {
        "done": f"{action}d by {user}",
        "already": f"escalation #{escalation_id} cannot be {action}d in its current state",
        "refused": f"{user} may not act on pages: add them to [escalation] oncall or [bot] staff",
        "not_found": f"there is no escalation #{escalation_id}",
    }
    body = {"result": result, "user": user, "message": messages.get(result, result)}
    if status >= 400:
        body["error"] = body["message"]
    return web.json_response(body, status=status)
