"""The local playground: a web support channel on the real pipeline, with the on-call side next to it.

A message typed here goes the way a Slack event goes (inbox -> dispatcher -> pipeline); the page polls
one JSON endpoint that rebuilds the channel from the inbox, the conversation record and the local
transport's posts, so what it shows is what the bot really did.
"""

from __future__ import annotations

import asyncio
import json
import re
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from bot.domain import FeedbackPress, InboundMessage
from bot.escalation.page import EXPIRED_STATUS, NOBODY_ON_CALL, Page
from bot.escalation.service import HUMAN_ALREADY, HUMAN_NOT_FOUND
from bot.feedback import ANSWER_NOT_FOUND, NOT_THE_ASKER
from bot.local_chat import LocalChat
from bot.web.dashboard import Dashboard, json_object
from bot.web.review import decision_json, thread_view
from bot.web.security import add_security_headers
from storage import review as reviewing
from storage.models import Escalation, InboundEvent, parse_row_id

log = structlog.get_logger(__name__)

PLAYGROUND_CHANNEL = "CPLAYGROUND"
CUSTOMER_USER = "UCUSTOMER"
# Only used if the escalation service names nobody at all (it has a local stand-in in local mode).
FALLBACK_ONCALL_USER = "UONCALL"
MAX_TEXT = 4000
# An event stream looks again this often for changes the chat does not announce (the database's), and ends
# after EVENTS_MAX_S or when the server shuts down (the browser reconnects), so no request lives for ever.
EVENTS_RECHECK_S = 2.0
EVENTS_MAX_S = 300.0
# Set when the server shuts down, so open event streams end instead of holding the shutdown back.
STREAMS_END = web.AppKey("playground_streams_end", asyncio.Event)
ACTIONS = ("acknowledge", "resolve")
SLA_WARNINGS_SHOWN = 20
# A thread is named by its first message's ts, as LocalChat.next_ts makes them ("1700000000.000001").
THREAD_TS = re.compile(r"\d{1,12}\.\d{1,9}")


def add_playground_routes(app: web.Application, dashboard: Dashboard, chat: LocalChat | None) -> None:
    """Mount the playground on the local chat that local mode's runtime posts to; with no local chat (Slack
    mode), /playground says where to talk to the bot instead."""
    guard = dashboard.guard
    if chat is None:
        app.router.add_get("/playground", guard(partial(_not_here, dashboard), page=True))
        return
    dashboard.playground_enabled = True
    app[STREAMS_END] = asyncio.Event()
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/playground", guard(partial(_page, dashboard), page=True))
    app.router.add_get("/api/playground/state", guard(partial(_state, dashboard, chat), page=False))
    app.router.add_get("/api/playground/events", guard(partial(_events, dashboard, chat), page=False))
    app.router.add_post("/api/playground/messages", guard(partial(_send, dashboard, chat), page=False))
    app.router.add_post("/api/playground/staff-replies", guard(partial(_staff_reply, dashboard, chat), page=False))
    app.router.add_post("/api/playground/feedback", guard(partial(_feedback, dashboard, chat), page=False))
    app.router.add_post("/api/playground/human-requests", guard(partial(_human_request, dashboard, chat), page=False))
    app.router.add_post("/api/playground/escalations/{id:\\d+}/{action}",
                        guard(partial(_escalation_action, dashboard), page=False))


def oncall_user(dashboard: Dashboard) -> str:
    """The person the playground answers pages as: the escalation service's local on-call, else staff."""
    runtime = dashboard.runtime
    return runtime.escalations.local_oncall_user or next(iter(runtime.config.bot.staff), FALLBACK_ONCALL_USER)


async def _end_streams(app: web.Application) -> None:
    app[STREAMS_END].set()


async def _not_here(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    return dashboard.error(request, 404, "The playground runs in local mode only: this server is connected to "
                                         "Slack, so talk to the bot there.", page=True)


async def _page(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
    return dashboard.render(request, "playground.html", channel=PLAYGROUND_CHANNEL, customer=CUSTOMER_USER,
                            oncall=oncall_user(dashboard))


# --- reading the channel -----------------------------------------------------------------------------

_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
# _italic_ or *italic*, but not the underscores inside ANTHROPIC_API_KEY or snake_case.
_ITALIC = re.compile(r"(?<![\w*_])([*_])(?![\s*_])(.+?)(?<![\s*_])\1(?![\w*_])")
_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_QUOTE = re.compile(r"^>\s?", re.MULTILINE)


def plain(markdown: str) -> str:
    """The bot's Markdown as readable plain text (the page inserts it with textContent, never as HTML)."""
    text = _ITALIC.sub(r"\2", _EMPHASIS.sub(r"\2", _LINK.sub(r"\1 (\2)", markdown)))
    return _QUOTE.sub("", _HEADING.sub("", text))


def page_lines(page: Page | None, fallback: str) -> list[dict[str, str]]:
    """What the on-call person sees in the page, as styled lines."""
    if page is None:
        return [{"style": "text", "text": fallback}]
    confidence = "n/a" if page.confidence is None else f"{page.confidence:.2f}"
    mention = " ".join([f"@{page.audience.usergroup}"] * bool(page.audience.usergroup)
                       + [f"@{user}" for user in page.audience.users]) or NOBODY_ON_CALL
    lines = [
        {"style": "header", "text": page.title},
        {"style": "text", "text": f"{mention} a customer needs a person from the team."},
        {"style": "field", "text": f"From\n@{page.requester} in #{page.channel}"},
        {"style": "field", "text": f"Route\n{page.route or 'n/a'} (confidence {confidence})"},
        {"style": "field", "text": f"Why\n{page.why}"},
        {"style": "field", "text": f"State\n{page.state}" + (" · level 2 (whole group)" if page.level > 1 else "")},
        {"style": "text", "text": f"Message\n{page.message}"},
        {"style": "text", "text": f"Reason\n{page.reason}"},
    ]
    lines += [{"style": "text", "text": f"Draft {i + 1} (from voting)\n{draft}"} for i, draft in enumerate(page.drafts)]
    lines.append({"style": "text", "text": f"Thread {page.thread_ts} in #{page.channel}"})
    status = [page.note] if page.note else []
    if page.acknowledged_by:
        status.append(f"Acknowledged by @{page.acknowledged_by}")
    if page.resolved_by:
        status.append(f"Resolved by @{page.resolved_by}")
    if page.state == "expired":
        status.append(EXPIRED_STATUS)
    lines += [{"style": "context", "text": line} for line in status]
    return lines


def _ts_key(ts: str | None) -> tuple[int, int]:
    whole, _, part = (ts or "0.0").partition(".")
    return (int(whole) if whole.isdigit() else 0, int(part) if part.isdigit() else 0)


def _root(event: InboundEvent) -> str:
    return str(event.payload.get("thread_ts") or event.payload.get("ts"))


async def _state(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    return web.json_response(await _snapshot(dashboard, chat, request.query.get("thread") or None))


async def _events(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    """The channel as server-sent events: a `state` event whenever it changes, so answers appear as they are
    written. The browser's EventSource reconnects by itself once a stream ends (after EVENTS_MAX_S)."""
    selected = request.query.get("thread") or None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    add_security_headers(response)
    await response.prepare(request)
    clock = dashboard.runtime.clock
    started, sent, version = clock.monotonic(), "", -1
    server_stopping = request.app[STREAMS_END]
    try:
        while (clock.monotonic() - started < EVENTS_MAX_S and not server_stopping.is_set()
               and not request.transport.is_closing()):  # type: ignore[union-attr]
            version = await chat.changed_since(version, EVENTS_RECHECK_S)
            state = json.dumps(await _snapshot(dashboard, chat, selected))
            # Database-only changes (a route decided) show on the next recheck; unchanged states are not sent.
            payload = f"event: state\ndata: {state}\n\n" if state != sent else ": keep-alive\n\n"
            sent = state
            await response.write(payload.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


async def _snapshot(dashboard: Dashboard, chat: LocalChat, selected: str | None) -> dict[str, Any]:
    runtime = dashboard.runtime
    async with runtime.db.sessions() as session:
        events = await reviewing.inbound_for_channel(session, team=chat.team, channel=PLAYGROUND_CHANNEL)
        conversations = {c.thread_ts: c for c, _ in await reviewing.recent_conversations(
            session, team=chat.team, channel=PLAYGROUND_CHANNEL, limit=200)}
        escalations = await reviewing.recent_escalations(session, limit=30)
        conversation = conversations.get(selected) if selected else None
        review = await reviewing.conversation_review(session, conversation.id) if conversation else None
    by_conversation = {e.conversation_id: e for e in sorted(escalations, key=lambda e: e.id)}
    threads = []
    for event in reversed(events):
        if event.payload.get("thread_ts"):
            continue
        found = conversations.get(event.payload["ts"])
        escalation = by_conversation.get(found.id) if found else None
        threads.append({
            "thread_ts": event.payload["ts"], "text": str(event.payload.get("text", ""))[:140],
            "state": found.state if found else "new", "conversation_id": found.id if found else None,
            "escalation": escalation.state if escalation else None,
        })
    thread = None
    if selected:
        thread = _thread(dashboard, chat, selected, [e for e in events if _root(e) == selected], review)
    thread_of = {c.id: ts for ts, c in conversations.items()}
    return {
        "channel": PLAYGROUND_CHANNEL, "customer": CUSTOMER_USER, "oncall": oncall_user(dashboard),
        "route_classes": {route: "c" + color.lstrip("#") for route, color in dashboard.colors().items()},
        "threads": threads[:50], "thread": thread,
        "escalations": [_escalation(chat, e, thread_of.get(e.conversation_id)) for e in escalations],
        # Posted to the escalation channel by the SLA sweep, newest first.
        "sla_warnings": [{"ts": post.ts, "text": plain(post.text), "thread_ts": post.sla_warning.thread_ts}
                         for post in reversed(chat.posts) if post.sla_warning is not None][:SLA_WARNINGS_SHOWN],
    }


def _thread(dashboard: Dashboard, chat: LocalChat, thread_ts: str, events: list[InboundEvent],
            review: reviewing.ConversationReview | None) -> dict[str, Any]:
    items: dict[str, dict[str, Any]] = {}
    decisions: dict[str, dict[str, Any]] = {}
    # The customer's rating of each answer, by the answer's ts.
    rated: dict[str, str] = {}
    if review is not None:
        answered = {d.id: d.reply_ts for d in review.decisions if d.reply_ts}
        rated = {answered[f.decision_id]: f.value for f in review.feedback
                 if f.from_asker and f.decision_id in answered}
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
            kind = "bot" if post.kind == "answer" else "notice"
            items[post.ts] = {"ts": post.ts, "kind": kind, "user": None, "text": plain(post.text),
                              "streaming": post.streaming}
        if post.answer is not None and post.answer.citations:
            items[post.ts]["sources"] = [{"title": c.label, "source": c.source, "url": c.url}
                                         for c in post.answer.citations]
        if post.answer is not None and post.answer.asks_feedback:
            items[post.ts]["feedback"] = {"value": rated.get(post.ts)}
        if post.notice is not None and post.notice.human_trigger is not None:
            items[post.ts]["offers_human"] = post.notice.human_trigger
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
    recorded = next((p for p in chat.posts if p.channel == escalation.page_channel and p.ts == escalation.page_ts),
                    None)
    # Until the round is recorded (a moment after posting), the newest page posted for it stands in.
    post = recorded or next((p for p in reversed(chat.posts)
                             if p.page is not None and p.page.escalation_id == escalation.id), None)
    return {
        "id": escalation.id, "state": escalation.state, "trigger": escalation.trigger, "route": escalation.route,
        "reason": escalation.reason, "summary": escalation.summary, "requester": escalation.requester,
        "conversation_id": escalation.conversation_id, "page_channel": escalation.page_channel,
        "created_at": escalation.created_at.isoformat(), "repage_count": escalation.repage_count,
        "acknowledged_by": escalation.acknowledged_by, "resolved_by": escalation.resolved_by,
        "page": page_lines(post.page if post else None, f"escalation #{escalation.id} ({escalation.state})"),
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


async def _send(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    """A customer message: accepted into the inbox like a Slack event, then processed after the 'ack'."""
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


async def _staff_reply(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    """On-call answers in the thread: the conversation is taken over and the bot stays quiet there."""
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


async def _feedback(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    """The customer rates an answer 👍 ("good") or 👎 ("bad"), as the Slack buttons do; the latest press wins."""
    body = await _json_body(request)
    thread_ts = _thread_ts(body)
    answer_ts, value = body.get("ts"), body.get("value")
    if thread_ts is None or not isinstance(answer_ts, str) or not THREAD_TS.fullmatch(answer_ts):
        return web.json_response({"error": "say which answer to rate (thread_ts and ts)"}, status=400)
    if value not in ("good", "bad"):
        return web.json_response({"error": "rate with good or bad"}, status=400)
    result = await dashboard.runtime.feedback.rate(FeedbackPress(
        team=chat.team, channel=PLAYGROUND_CHANNEL, thread_ts=thread_ts, answer_ts=answer_ts, user=CUSTOMER_USER,
        value="good" if value == "good" else "bad"))
    if result == "not_found":
        return web.json_response({"error": ANSWER_NOT_FOUND, "result": result}, status=404)
    if result == "not_asker":
        return web.json_response({"error": NOT_THE_ASKER, "result": result}, status=403)
    return web.json_response({"result": result, "value": value})


async def _human_request(dashboard: Dashboard, chat: LocalChat, request: web.Request) -> web.StreamResponse:
    """The customer presses "Get a human" on the offer after a 👎 (trigger "feedback") or on its own."""
    body = await _json_body(request)
    thread_ts = _thread_ts(body)
    trigger = body.get("trigger", "user_request")
    if thread_ts is None or trigger not in ("user_request", "feedback"):
        return web.json_response({"error": "say which thread needs a person (thread_ts)"}, status=400)
    result = await dashboard.runtime.escalations.request_human(
        chat.team, PLAYGROUND_CHANNEL, thread_ts, CUSTOMER_USER,
        trigger="feedback" if trigger == "feedback" else "user_request")
    if result == "done":
        return web.json_response({"result": result}, status=201)
    # The page shows `error` to the customer, as Slack tells them in the thread.
    already = result == "already"
    return web.json_response({"result": result, "error": HUMAN_ALREADY if already else HUMAN_NOT_FOUND},
                             status=409 if already else 404)


async def _escalation_action(dashboard: Dashboard, request: web.Request) -> web.StreamResponse:
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
