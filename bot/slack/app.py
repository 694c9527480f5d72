"""The Bolt app: Slack events and clicks in; the inbox row is written before the ack, the work starts after it.

One request, in order (HTTP at POST /slack/events, or a Socket Mode envelope):

    guard (HTTP only, before anything is parsed): Slack's signature headers, their age, the signature
    Bolt: verify signature -> url_verification -> authorize -> ignore own events -> match listener
    listener (before the ack): read the event -> decide -> pipeline.accept (inbox row) -> queue the work
    ack: HTTP 200 written, or the envelope acknowledged over the WebSocket
    after the ack: dispatcher.submit(inbox_id) (a burst's starts spaced out), button work, assistant prompts

`process_before_response=True` is what makes Bolt run the listener before it answers; the listener only
touches the database, so the ack still leaves in milliseconds whatever the LLM does. Inbox writes of
concurrent requests share a transaction (bot.slack.inbox). Work queued while a request is being answered is
started once the answer is out (see `AFTER_ACK`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.domain import FeedbackPress
from bot.errors import TransportError
from bot.escalation import ACK_ACTION, REQUEST_ACTION, RESOLVE_ACTION
from bot.escalation.service import HUMAN_ALREADY, HUMAN_NOT_FOUND
from bot.feedback import ANSWER_NOT_FOUND, NOT_THE_ASKER
from bot.runtime import Runtime
from bot.slack.blocks import FEEDBACK_ACTION, parse_request_value
from bot.slack.events import ButtonPress, Skip, SlackPost, read_assistant_thread, read_button, read_post
from bot.slack.guard import LogBudget, signature_problem
from bot.slack.inbox import InboxWriter
from bot.slack.transport import BotIdentity, SlackChat, SlackSetupError
from storage.models import parse_row_id

if TYPE_CHECKING:
    from bot.slack.socket_mode import SocketModeLink

log = structlog.get_logger(__name__)

EVENTS_PATH: Final = "/slack/events"
CLOSE_TIMEOUT_S: Final = 10.0
MAX_SUGGESTED_PROMPTS: Final = 4
# Accepted messages start processing at most this often (20 a second, far above a support channel's rate):
# a burst's database and CPU work is spread out instead of starting at once and delaying the acks after it.
PROCESSING_START_INTERVAL_S: Final = 0.05
# auth.test errors that mean the token itself is wrong, as opposed to Slack being unreachable.
BAD_TOKEN_ERRORS: Final = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})

REFUSED: Final = "Only on-call and support staff can use the buttons on escalation pages; nothing was changed."
ALREADY: Final = "Escalation #{id} was already {done} before your click; nothing was changed."
NOT_FOUND: Final = "I can't find escalation #{id}; nothing was changed."
NOT_DELIVERED: Final = "Sorry, Slack didn't take that just now. Please try again in a minute."
PROMPTS_TITLE: Final = "How can I help?"

Decision = Literal["answer", "takeover", "skip"]


class _ClientTokenWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and warns that the client's wins: it is the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_ClientTokenWarning())

# Work queued by a listener while its request is being answered; started once the ack is out.
AFTER_ACK: ContextVar[list[Callable[[], None]] | None] = ContextVar("supportbot_after_ack", default=None)


class SlackBot:
    """Bolt listeners bound to one runtime; `handle_http` serves POST /slack/events."""

    def __init__(self, runtime: Runtime, chat: SlackChat, *, signing_secret: str | None) -> None:
        self.runtime = runtime
        self.chat = chat
        self.socket: SocketModeLink | None = None
        self._support_channels = frozenset(runtime.config.bot.support_channels)
        self._background: set[asyncio.Task[None]] = set()
        self._inbox = InboxWriter(runtime.pipeline)
        self._paced: deque[Callable[[], None]] = deque()
        self._pacer: asyncio.Task[None] | None = None
        self._signing_secret = (signing_secret or "").encode("utf-8")
        self._refusals = LogBudget()
        # Bolt verifies the signature again: cheap, and the guard above it is then not the only check.
        self.bolt = AsyncApp(
            name="supportbot", client=chat.client, signing_secret=signing_secret or "",
            process_before_response=True, attaching_conversation_kwargs_enabled=False,
        )
        self.bolt.event("message")(self.on_message)
        self.bolt.event("app_mention")(self.on_message)
        self.bolt.event("assistant_thread_started")(self.on_assistant_thread_started)
        self.bolt.event("assistant_thread_context_changed")(self.on_nothing_to_do)
        self.bolt.action(ACK_ACTION)(self.on_escalation_button)
        self.bolt.action(RESOLVE_ACTION)(self.on_escalation_button)
        self.bolt.action(REQUEST_ACTION)(self.on_get_a_human)
        self.bolt.action(FEEDBACK_ACTION)(self.on_feedback)

    # --- transports in ------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: the guard, then Bolt answers, then the queued work starts."""
        started = time.perf_counter()
        body = await request.read()  # at most client_max_size: a larger body is answered 413 here
        problem = signature_problem(self._signing_secret, request.headers, body, now=time.time())
        if problem is not None:
            self._refusals.warning("slack_request_refused", status=401, reason=problem)
            return web.json_response({"ok": False, "error": "invalid_request_signature"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            # Signed, yet not a body Slack sends (Bolt reads and indexes into it before its own checks).
            return self._unreadable(f"{type(exc).__name__}: the body is not a Slack request")
        if not isinstance(bolt_request.body.get("event", {}), dict):
            return self._unreadable("`event` is not an object")  # Bolt's middleware would fail on it with a 500
        queued: list[Callable[[], None]] = []
        token = AFTER_ACK.set(queued)
        try:
            bolt_response = await self.bolt.async_dispatch(bolt_request)
        finally:
            AFTER_ACK.reset(token)
        kind = bolt_request.body.get("type")
        if bolt_response.status == 404 and kind in ("event_callback", "app_rate_limited"):
            # Signed (Bolt answers 401 before 404) but nothing here listens for it: ack it, or Slack retries
            # it and counts the failures against the app's event subscription.
            if kind == "app_rate_limited":
                log.warning("slack_app_rate_limited", minute=bolt_request.body.get("minute_rate_limited"))
            bolt_response = BoltResponse(status=200, body="")
        try:
            response = await to_aiohttp_response(bolt_response)
            await response.prepare(request)
            await response.write_eof()
            self.runtime.metrics.ack_latency.observe(time.perf_counter() - started)
            return response
        finally:
            start_all(queued)

    async def warm_up(self, identity: BotIdentity) -> None:
        """Send one event that needs no work through Bolt before the port opens.

        Bolt's authorization asks Slack's auth.test on the first request it sees and keeps the answer; until
        that answer came back, every request of a first burst asked again, and each ack waited for Slack.
        Bolt's listener matching and argument injection also do their first-use work here."""
        body = {"type": "event_callback", "team_id": identity.team_id, "event_id": "supportbot-warm-up",
                "event": {"type": "assistant_thread_context_changed", "assistant_thread": {}}}
        # Socket Mode's form: no signature to make up; the middleware after it is the same.
        try:
            response = await self.bolt.async_dispatch(AsyncBoltRequest(body=json.dumps(body), mode="socket_mode"))
        except Exception as exc:  # Slack just answered auth.test; if it stops now, the first event asks again
            log.warning("slack_warm_up_failed", error=repr(exc))
            return
        log.debug("slack_warmed_up", status=response.status)

    # --- listeners (run before the ack: database only, no Slack calls, no LLM) ---------------------

    async def on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        post = read_post(body, bot_user_id=context.bot_user_id, bot_id=context.bot_id)
        if isinstance(post, Skip):
            log.debug("slack_event_skipped", reason=post.reason, event_id=body.get("event_id"))
            return
        decision = await self._decide(post)
        if decision == "takeover":
            assert post.thread_ts is not None
            await self.runtime.pipeline.record_staff_message(
                team=post.team, channel=post.channel, thread_ts=post.thread_ts, user=post.user, text=post.text,
                ts=post.ts)
        elif decision == "answer":
            inbox_id = await self._inbox.accept(post.inbound())  # pipeline.accept, grouped with concurrent acks
            if inbox_id is not None:
                self._after_ack(lambda: self._pace(lambda: self.runtime.dispatcher.submit(inbox_id)))
        else:
            log.debug("slack_message_skipped", channel=post.channel, event_id=post.event_id)

    async def _decide(self, post: SlackPost) -> Decision:
        """DMs and mentions: answer. Top level: answer in support channels. Thread replies: only in the
        bot's threads, where a reply by staff or on-call (other than the thread's author, and without a
        mention of the bot, which is a question to it) takes the thread over."""
        if post.in_dm or post.mentions_bot:
            return "answer"
        if post.thread_ts is None:
            return "answer" if post.channel in self._support_channels else "skip"
        if not await self.runtime.pipeline.is_bot_thread(post.team, post.channel, post.thread_ts):
            return "skip"
        if self.runtime.escalations.roster.may_act(post.user) and post.parent_user != post.user:
            return "takeover"
        return "answer"

    async def on_assistant_thread_started(self, body: dict[str, Any]) -> None:
        thread = read_assistant_thread(body)
        if thread is not None:
            self._after_ack(lambda: self._spawn(self._suggest_prompts(thread.channel, thread.thread_ts)))

    async def on_nothing_to_do(self) -> None:
        """Acknowledged so Slack stops sending it; the bot keeps no per-thread context."""

    async def on_escalation_button(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # buttons are not acknowledged by Bolt on their own
        press = read_button(body)
        if press is not None:
            self._after_ack(lambda: self._spawn(self._escalation_button(press)))

    async def on_get_a_human(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        press = read_button(body)
        if press is not None:
            self._after_ack(lambda: self._spawn(self._get_a_human(press)))

    async def on_feedback(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        press = read_button(body)
        if press is not None:
            self._after_ack(lambda: self._spawn(self._feedback(press)))

    # --- after the ack --------------------------------------------------------------------------

    async def _feedback(self, press: ButtonPress) -> None:
        """👍/👎 on an answer: recorded for the asker (and staff); anyone else is told it is not theirs to rate."""
        answer_ts = press.message_ts
        if press.value not in ("good", "bad") or answer_ts is None:
            await self._tell(press, ANSWER_NOT_FOUND)
            return
        value: Literal["good", "bad"] = "good" if press.value == "good" else "bad"
        rating = FeedbackPress(team=press.team, channel=press.channel, thread_ts=press.thread_ts or answer_ts,
                               answer_ts=answer_ts, user=press.user, value=value)
        try:
            result = await self.runtime.feedback.rate(rating)
        except TransportError as exc:  # recorded; only the offer of a person did not reach the thread
            log.warning("feedback_offer_not_delivered", error=str(exc))
            await self._tell(press, NOT_DELIVERED)
            return
        log.info("feedback_pressed", user=press.user, value=value, result=result)
        if result == "not_asker":
            await self._tell(press, NOT_THE_ASKER)
        elif result == "not_found":
            await self._tell(press, ANSWER_NOT_FOUND)

    async def _escalation_button(self, press: ButtonPress) -> None:
        escalation_id = parse_row_id(press.value)
        if escalation_id is None:
            await self._tell(press, NOT_FOUND.format(id=press.value[:20]))
            return
        escalations = self.runtime.escalations
        act = escalations.acknowledge if press.action_id == ACK_ACTION else escalations.resolve
        try:
            # On "done" the service updates the page and posts a note in the customer's thread.
            result = await act(escalation_id, press.user)
        except TransportError as exc:
            log.warning("escalation_update_not_delivered", escalation_id=escalation_id, error=str(exc))
            await self._tell(press, NOT_DELIVERED)
            return
        log.info("escalation_button", escalation_id=escalation_id, action=press.action_id, user=press.user,
                 result=result)
        if result == "refused":
            await self._tell(press, REFUSED)
        elif result == "already":
            done = "acknowledged or resolved" if press.action_id == ACK_ACTION else "resolved"
            await self._tell(press, ALREADY.format(id=escalation_id, done=done))
        elif result != "done":
            await self._tell(press, NOT_FOUND.format(id=escalation_id))

    async def _get_a_human(self, press: ButtonPress) -> None:
        request = parse_request_value(press.value)
        if request is None:
            await self._tell(press, HUMAN_NOT_FOUND)
            return
        team, channel, thread_ts, trigger = request
        try:
            result = await self.runtime.escalations.request_human(team, channel, thread_ts, press.user,
                                                                  trigger=trigger)
        except TransportError as exc:
            log.warning("human_request_not_delivered", channel=channel, thread_ts=thread_ts, error=str(exc))
            await self._tell(press, NOT_DELIVERED)
            return
        log.info("human_requested", channel=channel, thread_ts=thread_ts, user=press.user, result=result)
        if result == "already":
            await self._tell(press, HUMAN_ALREADY)
        elif result != "done":
            await self._tell(press, HUMAN_NOT_FOUND)

    async def _suggest_prompts(self, channel: str, thread_ts: str) -> None:
        prompts = [
            {"title": route.persona[:1].upper() + route.persona[1:], "message": route.examples[0]}
            for route in self.runtime.config.routes.values() if route.examples and not route.escalate
        ][:MAX_SUGGESTED_PROMPTS]
        if not prompts:
            return
        try:
            await self.chat.set_suggested_prompts(channel, thread_ts, prompts, title=PROMPTS_TITLE)
        except TransportError as exc:
            log.info("suggested_prompts_failed", error=str(exc))

    async def _tell(self, press: ButtonPress, text: str) -> None:
        """An ephemeral note to whoever pressed the button."""
        try:
            await self.chat.post_ephemeral(press.channel, press.user, text, thread_ts=press.thread_ts)
        except TransportError as exc:
            log.warning("ephemeral_not_delivered", user=press.user, error=str(exc))

    # --- plumbing -------------------------------------------------------------------------------

    def _after_ack(self, start: Callable[[], None]) -> None:
        queued = AFTER_ACK.get()
        if queued is None:
            start()  # dispatched by someone else (a test calling Bolt directly): nothing to wait for
        else:
            queued.append(start)

    def _pace(self, start: Callable[[], None]) -> None:
        """Start processing now; while a burst is being started, one message every PROCESSING_START_INTERVAL_S,
        so that its database and CPU work does not all begin at once and crowd out the acks that follow."""
        self._paced.append(start)
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._start_paced(), name="slack-pacer")
            self._background.add(self._pacer)
            self._pacer.add_done_callback(self._finished)

    async def _start_paced(self) -> None:
        while self._paced:
            start_all([self._paced.popleft()])
            if self._paced:
                await asyncio.sleep(PROCESSING_START_INTERVAL_S)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack_background_failed", error=repr(task.exception()))

    def _unreadable(self, reason: str) -> web.Response:
        """400 for a body Slack would never send; nothing is read from it or stored."""
        self._refusals.warning("slack_request_refused", status=400, reason=reason)
        return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until button and assistant work started after acks is done (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._background:
                await asyncio.wait(set(self._background))

    async def close_async(self) -> None:
        """Stop receiving (Socket Mode), then let work started after acks finish; a second call does nothing."""
        socket, self.socket = self.socket, None
        if socket is not None:
            await socket.close_async()  # type: ignore[no-untyped-call]
        if self._pacer is not None:
            self._pacer.cancel()  # messages not started yet stay in the inbox: the next start recovers them
            self._paced.clear()
        with contextlib.suppress(TimeoutError):
            await self.wait_idle(CLOSE_TIMEOUT_S)
        for task in list(self._background):
            task.cancel()


def start_all(queued: list[Callable[[], None]]) -> None:
    for start in queued:
        try:
            start()
        except Exception:
            log.exception("after_ack_start_failed")


async def attach_slack(app: web.Application, runtime: Runtime) -> SlackBot:
    """Mount POST /slack/events (HTTP mode) or connect the Socket Mode link; the caller closes the result."""
    chat = runtime.chat
    if not isinstance(chat, SlackChat):
        raise SlackSetupError("the runtime was built without the Slack transport (build it with "
                              "chat=await open_slack_chat(settings, config))")
    settings = runtime.settings
    identity = await _check_token(chat)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    bot = SlackBot(runtime, chat, signing_secret=secret)
    if identity is not None:
        await bot.warm_up(identity)
    if settings.run_mode == "socket":
        from bot.slack.socket_mode import SocketModeLink  # its client and handler are not needed in HTTP mode

        assert settings.slack_app_token is not None
        bot.socket = SocketModeLink(bot, settings.slack_app_token.get_secret_value())
        await bot.socket.connect_async()  # type: ignore[no-untyped-call]
        log.info("slack_socket_mode_connected")
    else:
        app.router.add_post(EVENTS_PATH, bot.handle_http)
        log.info("slack_http_mode", path=EVENTS_PATH)
    return bot


async def _check_token(chat: SlackChat) -> BotIdentity | None:
    """Refuse to start with a token Slack rejects; start anyway (None) when Slack is only unreachable."""
    try:
        identity = await chat.identity()
    except TransportError as exc:
        if exc.code in BAD_TOKEN_ERRORS:
            raise SlackSetupError(f"Slack refused SLACK_BOT_TOKEN ({exc}); copy the Bot User OAuth Token "
                                  "(xoxb-...) from the app's OAuth & Permissions page") from exc
        log.warning("slack_unreachable_at_start", error=str(exc))
        return None
    log.info("slack_identity", bot_user=identity.user_id, team=identity.team_id)
    return identity

