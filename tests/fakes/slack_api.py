"""A real-HTTP fake of the Slack Web API and Socket Mode, run by aiohttp in the test's loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import dataclasses
import itertools
import json
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import MultiMapping

from tests.fakes import slack_payloads as payloads

EnvelopeType = Literal["events_api", "interactive", "slash_commands"]
DisconnectReason = Literal["refresh_requested", "warning", "link_disabled"]
# A streamed message is "streaming" until chat.stopStream ("stopped") or until Slack gives up
# on it ("expired"); either way it is then frozen and chat.update works on it again.
StreamState = Literal["streaming", "stopped", "expired"]

# Form-encoded callers send these as JSON strings; the fake decodes them so tests see objects.
JSON_FIELDS = frozenset(
    {
        "blocks",
        "attachments",
        "metadata",
        "prompts",
        "loading_messages",
        "unfurls",
        "view",
        "chunks",
    }
)
FIRST_TS_MICROS = 1_700_000_000_000_100
TS_STEP_MICROS = 100
PERMALINK_BASE = "https://fake.slack.com/archives"
DROPPED = 0  # SlackCall.status of an attempt whose connection was closed without a response
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
MARKDOWN_TEXT_LIMIT = 12_000  # characters of markdown_text per stream call, as Slack documents


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class SlackCall:
    """One HTTP attempt the fake received, answered or not, in arrival order."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when the request arrived
    status: int = 200  # HTTP status sent back; DROPPED (0) when the connection was cut
    # JSON body sent back; None when not JSON or the connection was cut before any work was
    # done; with drop_response_next, the body the call earned but never received.
    response: dict[str, Any] | None = None
    token: str | None = None

    @property
    def ok(self) -> bool:
        """True when Slack would have accepted the call (HTTP 200 and `"ok": true`)."""
        return self.status == 200 and self.response is not None and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        """The Slack error code of a rejected call (`ratelimited`, `channel_not_found`, ...)."""
        if self.response is None:
            return None
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class SlackMessage:
    """A message as stored in a channel; `thread_ts` is set on replies only."""

    channel: str
    ts: str
    text: str
    user: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    subtype: str | None = None
    blocks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    reactions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    edited_ts: str | None = None
    visible_to: str | None = None  # set on ephemeral messages only
    extra: Mapping[str, Any] = field(default_factory=dict)
    stream_state: StreamState | None = None  # set on messages made by chat.startStream only

    @property
    def is_reply(self) -> bool:
        """True for a message posted inside a thread (not the thread's parent)."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def visible_in_channel(self) -> bool:
        """True when the message shows in the channel itself (top level or broadcast reply)."""
        return not self.is_reply or self.subtype == "thread_broadcast"


@dataclass(frozen=True)
class SlackUser:
    """A workspace member as `users.info` describes it."""

    id: str
    name: str
    display_name: str = ""
    real_name: str = ""
    is_bot: bool = False
    bot_id: str | None = None
    tz: str = "Europe/London"
    tz_label: str = "Greenwich Mean Time"
    tz_offset: int = 0
    email: str | None = None
    deleted: bool = False
    is_admin: bool = False


@dataclass(frozen=True)
class SlackChannel:
    """A conversation as `conversations.info` describes it."""

    id: str
    name: str = ""
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    user: str | None = None  # the other party of a DM
    is_member: bool = True
    is_archived: bool = False
    topic: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class SocketAck:
    """A Socket Mode acknowledgement `{"envelope_id": ..., "payload": ...}` sent by the client."""

    envelope_id: str
    payload: dict[str, Any] | None
    at: float


@dataclass(frozen=True)
class Delivery:
    """A message a simulated user posted, and the envelopes that announced it over Socket Mode."""

    message: SlackMessage
    envelope_ids: tuple[str, ...]


@dataclass
class AssistantThread:
    """What the app set on one assistant thread through the `assistant.threads.*` methods."""

    statuses: list[str] = field(default_factory=list)
    title: str | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)
    prompts_title: str | None = None

    @property
    def status(self) -> str | None:
        """The status currently shown under the thread (the last one set)."""
        return self.statuses[-1] if self.statuses else None


# --------------------------------------------------------------- internals


class _SlackError(Exception):
    """An `ok: false` answer, with Slack's error code."""

    def __init__(self, error: str, *, messages: Sequence[str] = (), **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str | None
    body: str | None
    drop: bool
    remaining: int
    after_processing: bool = False  # drop only: the call takes effect, its answer is lost


@dataclass
class _RateLimit:
    ratio: float
    retry_after: int
    rng: random.Random
    max_consecutive: int
    consecutive: int = 0


class _Params:
    """Typed, read-only access to the merged query/form/JSON arguments of one call."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def text(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, str | int | float):
            return str(value)
        return json.dumps(value)

    def required(self, name: str, *, error: str = "invalid_arguments") -> str:
        value = self.text(name)
        if not value:
            raise _SlackError(error, messages=[f"[ERROR] missing required field: {name}"])
        return value

    def flag(self, name: str) -> bool:
        value = self._values.get(name)
        return value is True or value == 1 or value in ("1", "true", "True")

    def integer(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise _SlackError("invalid_arguments", messages=[f"[ERROR] bad {name}"]) from None

    def objects(self, name: str) -> list[dict[str, Any]] | None:
        value = self._values.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise _SlackError(f"invalid_{name}", messages=[f"[ERROR] {name} must be a JSON array"])
        return copy.deepcopy(value)

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self._values.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, dict):
            raise _SlackError(f"invalid_{name}_format")
        return copy.deepcopy(value)


def _ts_from_micros(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _micros_from_ts(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _SlackError("invalid_cursor") from None
    if not decoded.startswith("next_ts:"):
        raise _SlackError("invalid_cursor")
    return decoded.removeprefix("next_ts:")


def _decode_json_fields(values: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_FIELDS & values.keys():
        value = values[name]
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                values[name] = json.loads(value)
    return values


def _flatten(multi: MultiMapping[Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in multi.items():
        if isinstance(value, web.FileField):
            flat[key] = {"filename": value.filename, "content_type": value.content_type}
        else:
            flat[key] = value
    return flat


@dataclass
class _StreamClock:
    """When a stream still open started and was last appended to (the fake's clock)."""

    started_at: float
    appended_at: float


# ------------------------------------------------- Block Kit: context_actions


def _label(button: Mapping[str, Any]) -> str:
    text = button.get("text")
    return str(text.get("text", "")) if isinstance(text, dict) else ""


def _plain_text_problem(value: Any, where: str, limit: int) -> str | None:
    if not isinstance(value, dict):
        return f"must provide an object [json-pointer:{where}]"
    if value.get("type") != "plain_text":
        return f"must be a plain_text text object [json-pointer:{where}/type]"
    if unknown := sorted(value.keys() - {"type", "text", "emoji"}):
        return f"unsupported field: {unknown[0]} [json-pointer:{where}]"
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return f"missing required field: text [json-pointer:{where}]"
    if len(text) > limit:
        return f"must be less than {limit + 1} characters [json-pointer:{where}/text]"
    if "emoji" in value and not isinstance(value["emoji"], bool):
        return f"must be a boolean [json-pointer:{where}/emoji]"
    return None


def _optional_string_problem(
    element: Mapping[str, Any], name: str, where: str, limit: int
) -> str | None:
    if name not in element:
        return None
    value = element[name]
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string [json-pointer:{where}/{name}]"
    if len(value) > limit:
        return f"must be less than {limit + 1} characters [json-pointer:{where}/{name}]"
    return None


def _feedback_button_problem(button: Any, where: str) -> str | None:
    if not isinstance(button, dict):
        return f"must provide an object [json-pointer:{where}]"
    if unknown := sorted(button.keys() - {"text", "value", "accessibility_label"}):
        return f"unsupported field: {unknown[0]} [json-pointer:{where}]"
    if "text" not in button:
        return f"missing required field: text [json-pointer:{where}]"
    if problem := _plain_text_problem(button["text"], f"{where}/text", 75):
        return problem
    if not isinstance(button.get("value"), str) or not button["value"]:
        return f"missing required field: value [json-pointer:{where}]"
    return _optional_string_problem(button, "value", where, 2000) or _optional_string_problem(
        button, "accessibility_label", where, 75
    )


def _feedback_buttons_problem(element: Mapping[str, Any], where: str) -> str | None:
    allowed = {"type", "action_id", "positive_button", "negative_button"}
    if unknown := sorted(element.keys() - allowed):
        return f"unsupported field: {unknown[0]} [json-pointer:{where}]"
    if problem := _optional_string_problem(element, "action_id", where, 255):
        return problem
    for side in ("positive_button", "negative_button"):
        if side not in element:
            return f"missing required field: {side} [json-pointer:{where}]"
        if problem := _feedback_button_problem(element[side], f"{where}/{side}"):
            return problem
    return None


def _icon_button_problem(element: Mapping[str, Any], where: str) -> str | None:
    allowed = {
        "type",
        "action_id",
        "icon",
        "text",
        "accessibility_label",
        "value",
        "visible_to_user_ids",
        "confirm",
    }
    if unknown := sorted(element.keys() - allowed):
        return f"unsupported field: {unknown[0]} [json-pointer:{where}]"
    if not isinstance(element.get("icon"), str) or not element["icon"]:
        return f"missing required field: icon [json-pointer:{where}]"
    if "text" not in element:
        return f"missing required field: text [json-pointer:{where}]"
    if problem := _plain_text_problem(element["text"], f"{where}/text", 75):
        return problem
    for name, limit in (("action_id", 255), ("value", 2000), ("accessibility_label", 75)):
        if problem := _optional_string_problem(element, name, where, limit):
            return problem
    users = element.get("visible_to_user_ids", [])
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        return f"must be an array of user ids [json-pointer:{where}/visible_to_user_ids]"
    if not isinstance(element.get("confirm", {}), dict):
        return f"must provide an object [json-pointer:{where}/confirm]"
    return None


def _context_actions_problem(block: Mapping[str, Any], where: str) -> str | None:
    """The first way `block` differs from Slack's context_actions schema, or None."""
    if unknown := sorted(block.keys() - {"type", "elements", "block_id"}):
        return f"unsupported field: {unknown[0]} [json-pointer:{where}]"
    if problem := _optional_string_problem(block, "block_id", where, 255):
        return problem
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return f"missing required field: elements [json-pointer:{where}]"
    if len(elements) > 5:
        return f"must have no more than 5 items [json-pointer:{where}/elements]"
    action_ids: set[str] = set()
    for j, element in enumerate(elements):
        at = f"{where}/elements/{j}"
        if not isinstance(element, dict):
            return f"must provide an object [json-pointer:{at}]"
        kind = element.get("type")
        if kind == "feedback_buttons":
            problem = _feedback_buttons_problem(element, at)
        elif kind == "icon_button":
            problem = _icon_button_problem(element, at)
        else:
            problem = f"unsupported type: {kind} [json-pointer:{at}/type]"
        if problem:
            return problem
        action_id = element.get("action_id")
        if isinstance(action_id, str):
            if action_id in action_ids:
                return f"action_id already exists: {action_id} [json-pointer:{at}/action_id]"
            action_ids.add(action_id)
    return None


Handler = Callable[[_Params], dict[str, Any]]


# ---------------------------------------------------------------- the fake


class FakeSlackAPI:
    """Plays slack.com/api and the Socket Mode WebSocket on 127.0.0.1, recording every call."""

    def __init__(
        self,
        *,
        bot_user_id: str = payloads.BOT_USER_ID,
        bot_id: str = payloads.BOT_ID,
        bot_name: str = payloads.BOT_NAME,
        team_id: str = payloads.TEAM_ID,
        team_name: str = "Fake Team",
        app_id: str = payloads.APP_ID,
        missing_channels: Iterable[str] = (),
        usergroups: Mapping[str, Sequence[str]] | None = None,
        valid_tokens: Iterable[str] | None = None,
        stream_idle_timeout_s: float = 300.0,
        stream_max_age_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.team_id = team_id
        self.team_name = team_name
        self.app_id = app_id
        self._valid_tokens = set(valid_tokens) if valid_tokens is not None else None
        self._revoked_tokens: set[str] = set()
        # Slack closes a stream nobody appends to, and any stream after a while (issue
        # slackapi/python-slack-sdk#1859); `clock` lets a test move that time by hand.
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.stream_max_age_s = stream_max_age_s
        self._clock = clock

        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()

        self._calls: list[SlackCall] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._rate_limits: dict[str, _RateLimit] = {}
        self._delays: dict[str, float] = {}

        self._clock_micros = FIRST_TS_MICROS - TS_STEP_MICROS
        self._messages: dict[str, dict[str, SlackMessage]] = {}
        self._ephemerals: list[SlackMessage] = []
        self._channels: dict[str, SlackChannel] = {}
        self._missing_channels: set[str] = set(missing_channels)
        self._users: dict[str, SlackUser] = {}
        self._missing_users: set[str] = set()
        self._usergroups: dict[str, list[str]] = {
            group: list(members) for group, members in (usergroups or {}).items()
        }
        self._assistant_threads: dict[tuple[str, str], AssistantThread] = {}
        self._response_url_ids = itertools.count(1)
        self._stream_clocks: dict[tuple[str, str], _StreamClock] = {}
        self._streaming_refusal: str | None = None
        self._rejected_block_types: set[str] = set()

        self._sockets: list[web.WebSocketResponse] = []
        self._socket_connections_total = 0
        self._acks: list[SocketAck] = []
        self._socket_messages: list[dict[str, Any]] = []

        self.add_user(
            bot_user_id,
            name=bot_name,
            display_name=bot_name,
            real_name=bot_name,
            is_bot=True,
            bot_id=bot_id,
        )
        self._methods: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "assistant.threads.setStatus": self._assistant_set_status,
            "assistant.threads.setSuggestedPrompts": self._assistant_set_suggested_prompts,
            "assistant.threads.setTitle": self._assistant_set_title,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start serving."""
        if self._runner is not None:
            raise RuntimeError("FakeSlackAPI is already running")
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket-mode/link", self._handle_socket)
        app.router.add_post("/actions/{hook:.*}", self._handle_response_url)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        self._port = int(server.sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        """Close WebSockets, cut pending delays short and stop the server; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                for ws in self._sockets
            ),
            return_exceptions=True,
        )
        await runner.cleanup()
        self._sockets.clear()
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL for `AsyncWebClient(base_url=...)`, e.g. `http://127.0.0.1:PORT/api/`."""
        return f"{self._origin('http')}/api/"

    @property
    def socket_mode_url(self) -> str:
        """The WebSocket URL `apps.connections.open` hands out (without its ticket)."""
        return f"{self._origin('ws')}/socket-mode/link"

    def response_url(self) -> str:
        """A fresh `response_url` served by the fake; posts to it are recorded as `response_url`."""
        hook = next(self._response_url_ids)
        return f"{self._origin('http')}/actions/{self.team_id}/{hook}/fake"

    def _origin(self, scheme: str) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlackAPI is not running: await start() first")
        return f"{scheme}://127.0.0.1:{self._port}"

    # ------------------------------------------------------------ recording

    @property
    def calls(self) -> list[SlackCall]:
        """Every attempt received so far, rejected ones included, in arrival order."""
        return list(self._calls)

    def calls_to(self, method: str) -> list[SlackCall]:
        """Every attempt at `method` (check `.ok` / `.status` to tell successes from rejections)."""
        return [call for call in self._calls if call.method == method]

    def successful_calls_to(self, method: str) -> list[SlackCall]:
        """The attempts at `method` that Slack would have accepted."""
        return [call for call in self.calls_to(method) if call.ok]

    def stream_calls(self, channel: str, ts: str) -> list[SlackCall]:
        """Every attempt at the chat.*Stream methods for the streamed message `ts` in `channel`
        (the start that created it, then appends and stops, rejected ones included)."""

        def belongs(call: SlackCall) -> bool:
            if call.method == "chat.startStream":
                return call.response is not None and (
                    call.response.get("ts"),
                    call.response.get("channel"),
                ) == (ts, channel)
            return call.method in STREAM_METHODS and (
                call.params.get("channel"),
                call.params.get("ts"),
            ) == (channel, ts)

        return [call for call in self._calls if belongs(call)]

    def reset(self, *, state: bool = False) -> None:
        """Forget calls, acks and faults; with `state=True` also every message and thread,
        and the workspace's refusals (`refuse_streaming`, `reject_block_type`)."""
        self._calls.clear()
        self._acks.clear()
        self._socket_messages.clear()
        self.clear_faults()
        if state:
            self._messages.clear()
            self._ephemerals.clear()
            self._assistant_threads.clear()
            self._stream_clocks.clear()
            self._streaming_refusal = None
            self._rejected_block_types.clear()

    async def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        successful: bool = False,
    ) -> list[SlackCall]:
        """Wait until `count` attempts at `method` (or successes) arrived; return them all."""

        def matching() -> list[SlackCall]:
            return self.successful_calls_to(method) if successful else self.calls_to(method)

        try:
            await self._wait_until(lambda: len(matching()) >= count, timeout)
        except TimeoutError:
            seen = Counter(call.method for call in self._calls)
            kind = "successful call(s)" if successful else "call(s)"
            raise AssertionError(
                f"expected {count} {kind} to {method} within {timeout}s, got {len(matching())}; "
                f"methods seen: {dict(seen) or 'none'}"
            ) from None
        return matching()

    async def _wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                changed = self._changed
                await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, call: SlackCall) -> None:
        self._calls.append(call)
        self._notify()

    # ---------------------------------------------------------- configuration

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        display_name: str = "",
        real_name: str = "",
        is_bot: bool = False,
        bot_id: str | None = None,
        tz: str = "Europe/London",
        tz_label: str = "Greenwich Mean Time",
        tz_offset: int = 0,
        email: str | None = None,
        deleted: bool = False,
        is_admin: bool = False,
    ) -> SlackUser:
        """Register (or replace) a workspace member; unknown user ids get a generated profile."""
        user = SlackUser(
            id=user_id,
            name=name or user_id.lower(),
            display_name=display_name,
            real_name=real_name,
            is_bot=is_bot,
            bot_id=bot_id,
            tz=tz,
            tz_label=tz_label,
            tz_offset=tz_offset,
            email=email,
            deleted=deleted,
            is_admin=is_admin,
        )
        self._users[user_id] = user
        self._missing_users.discard(user_id)
        return user

    def mark_user_missing(self, user_id: str) -> None:
        """Make `users.info` answer `user_not_found` for `user_id`."""
        self._users.pop(user_id, None)
        self._missing_users.add(user_id)

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        is_private: bool = False,
        is_member: bool = True,
        is_archived: bool = False,
        topic: str = "",
        purpose: str = "",
    ) -> SlackChannel:
        """Register a channel's details; unknown channel ids exist with generated details."""
        channel = SlackChannel(
            id=channel_id,
            name=name or channel_id.lower(),
            is_private=is_private,
            is_member=is_member,
            is_archived=is_archived,
            topic=topic,
            purpose=purpose,
        )
        self._channels[channel_id] = channel
        self._missing_channels.discard(channel_id)
        return channel

    def mark_channel_missing(self, channel_id: str) -> None:
        """Make every method that takes `channel_id` answer `channel_not_found`."""
        self._missing_channels.add(channel_id)

    def add_usergroup(self, usergroup_id: str, users: Sequence[str]) -> None:
        """Register a user group (`S...`) and its members for `usergroups.users.list`."""
        self._usergroups[usergroup_id] = list(users)

    def revoke_token(self, token: str) -> None:
        """Make every later call with `token` answer `token_revoked`."""
        self._revoked_tokens.add(token)

    def refuse_streaming(self, error: str | None = "not_allowed_token_type") -> None:
        """Answer every `chat.startStream` with `error`, as a workspace or app without the
        streaming feature does; None allows streaming again."""
        self._streaming_refusal = error

    def reject_block_type(self, block_type: str) -> None:
        """Answer `invalid_blocks` to any message carrying a `block_type` block (an older
        workspace that does not know it): chat.postMessage, chat.update, chat.postEphemeral,
        chat.stopStream and `blocks` stream chunks."""
        self._rejected_block_types.add(block_type)

    # ------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int = 1,
        error: str | None = None,
        body: str | None = None,
        count: int = 1,
    ) -> None:
        """Reject the next `count` calls to `method` ("*" for any method).

        With only `error`: HTTP 200 `{"ok": false, "error": error}`. Otherwise `status`
        (default 429) — 429 carries `Retry-After: retry_after` and `ratelimited`; other
        statuses carry `body` as text/plain when given, else a JSON error body.
        """
        resolved = status if status is not None else (200 if error is not None else 429)
        if resolved == 200 and error is None:
            raise ValueError("fail_next with status=200 needs an error code")
        self._faults.setdefault(method, deque()).append(
            _Fault(resolved, retry_after, error, body, drop=False, remaining=count)
        )

    def drop_connection_next(self, method: str, *, count: int = 1) -> None:
        """Close the connection without answering the next `count` calls to `method`."""
        self._faults.setdefault(method, deque()).append(
            _Fault(0, None, None, None, drop=True, remaining=count)
        )

    def drop_response_next(self, method: str, *, count: int = 1) -> None:
        """Carry out the next `count` calls to `method`, then close the connection instead of
        answering: the client cannot tell whether the call took effect (it did)."""
        self._faults.setdefault(method, deque()).append(
            _Fault(0, None, None, None, drop=True, remaining=count, after_processing=True)
        )

    def rate_limit(
        self,
        method: str,
        ratio: float = 0.2,
        retry_after: int = 0,
        seed: int = 0,
        *,
        max_consecutive: int = 1,
    ) -> None:
        """Answer a seeded-random `ratio` of calls to `method` with 429, never more than
        `max_consecutive` in a row (so a client that retries once always gets through)."""
        if not 0.0 <= ratio < 1.0:
            raise ValueError("ratio must be in [0, 1)")
        self._rate_limits[method] = _RateLimit(
            ratio, retry_after, random.Random(seed), max_consecutive
        )

    def delay(self, method: str, seconds: float) -> None:
        """Hold every answer to `method` for `seconds` (0 removes the delay)."""
        if seconds <= 0:
            self._delays.pop(method, None)
        else:
            self._delays[method] = seconds

    def clear_faults(self, method: str | None = None) -> None:
        """Remove pending failures, rate limits and delays (for one method, or all)."""
        for table in (self._faults, self._rate_limits, self._delays):
            if method is None:
                table.clear()
            else:
                table.pop(method, None)

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
                return fault
        limit = self._rate_limits.get(method)
        if limit is not None:
            draw = limit.rng.random()
            if draw < limit.ratio and limit.consecutive < limit.max_consecutive:
                limit.consecutive += 1
                return _Fault(429, limit.retry_after, None, None, drop=False, remaining=0)
            limit.consecutive = 0
        return None

    # ------------------------------------------------------------ the store

    def _next_ts(self) -> str:
        self._clock_micros += TS_STEP_MICROS
        return _ts_from_micros(self._clock_micros)

    def seed_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = "U0USER",
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        subtype: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        reactions: Mapping[str, Sequence[str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SlackMessage:
        """Put a message in the store as if someone had posted it (no call is recorded)."""
        if ts is None:
            ts = self._next_ts()
        else:
            self._clock_micros = max(self._clock_micros, _micros_from_ts(ts))
        message = SlackMessage(
            channel=channel,
            ts=ts,
            text=text,
            user=user,
            bot_id=bot_id,
            thread_ts=None if thread_ts == ts else thread_ts,
            subtype=subtype,
            blocks=copy.deepcopy(blocks),
            metadata=copy.deepcopy(metadata),
            reactions={name: tuple(users) for name, users in (reactions or {}).items()},
            extra=dict(extra or {}),
        )
        self._store(message)
        return message

    def messages_in(self, channel: str, thread_ts: str | None = None) -> list[SlackMessage]:
        """What a user sees, oldest first: the channel (no thread replies unless broadcast),
        or with `thread_ts` the thread pane (parent, then replies)."""
        self._expire_streams()
        stored = self._messages.get(channel, {})
        if thread_ts is None:
            shown = [m for m in stored.values() if m.visible_in_channel]
        else:
            parent = stored.get(thread_ts)
            root = parent.thread_ts if parent is not None and parent.is_reply else thread_ts
            shown = [m for m in stored.values() if m.ts == root or m.thread_ts == root]
        return sorted(shown, key=lambda m: _micros_from_ts(m.ts))

    def message(self, channel: str, ts: str) -> SlackMessage:
        """The stored message `ts` in `channel` (AssertionError when there is none); a streamed
        one shows what the user sees now: `text` streamed so far, `stream_state`, `blocks`."""
        self._expire_streams()
        found = self._messages.get(channel, {}).get(ts)
        if found is None:
            raise AssertionError(f"no message {ts} in {channel}")
        return found

    def expire_stream(self, channel: str, ts: str) -> SlackMessage:
        """Make Slack give up on the open stream `ts` now, as its timeouts would: the message
        keeps the text streamed so far and later appends and stops are refused."""
        if (channel, ts) not in self._stream_clocks:
            raise AssertionError(f"no open stream {ts} in {channel}")
        self._close_stream(channel, ts, "expired")
        return self.message(channel, ts)

    def _expire_streams(self) -> None:
        now = self._clock()
        for (channel, ts), clock in list(self._stream_clocks.items()):
            idle = now - clock.appended_at >= self.stream_idle_timeout_s
            if idle or now - clock.started_at >= self.stream_max_age_s:
                self._close_stream(channel, ts, "expired")

    def _close_stream(self, channel: str, ts: str, state: StreamState) -> None:
        self._stream_clocks.pop((channel, ts), None)
        message = self._messages.get(channel, {}).get(ts)
        if message is not None:
            self._store(dataclasses.replace(message, stream_state=state))

    def ephemeral_messages(
        self, *, channel: str | None = None, user: str | None = None
    ) -> list[SlackMessage]:
        """Ephemeral messages posted so far, optionally only in `channel` or shown to `user`."""
        return [
            m
            for m in self._ephemerals
            if (channel is None or m.channel == channel) and (user is None or m.visible_to == user)
        ]

    def assistant_thread(self, channel_id: str, thread_ts: str) -> AssistantThread:
        """What the app set (status, title, prompts) on one assistant thread."""
        return self._assistant_threads.setdefault((channel_id, thread_ts), AssistantThread())

    def _store(self, message: SlackMessage) -> None:
        self._messages.setdefault(message.channel, {})[message.ts] = message

    def _find(self, channel: str, ts: str) -> SlackMessage:
        found = self._messages.get(channel, {}).get(ts)
        if found is None or found.subtype == "tombstone":
            raise _SlackError("message_not_found")
        return found

    def _replies(self, channel: str, parent_ts: str) -> list[SlackMessage]:
        replies = [m for m in self._messages.get(channel, {}).values() if m.thread_ts == parent_ts]
        return sorted(replies, key=lambda m: _micros_from_ts(m.ts))

    def _thread_root(self, channel: str, thread_ts: str) -> str:
        parent = self._messages.get(channel, {}).get(thread_ts)
        if parent is not None and parent.thread_ts is not None:
            return parent.thread_ts
        return thread_ts

    def _resolve_channel(self, raw: str | None) -> str:
        if not raw:
            raise _SlackError("channel_not_found")
        channel = raw
        if raw.startswith("#"):
            by_name = [c.id for c in self._channels.values() if c.name == raw[1:]]
            if not by_name:
                raise _SlackError("channel_not_found")
            channel = by_name[0]
        elif raw[:1] in ("U", "W"):
            channel = self._open_dm(raw)
        if channel in self._missing_channels:
            raise _SlackError("channel_not_found")
        if channel not in self._channels:
            self._channels[channel] = self._generated_channel(channel)
        return channel

    def _generated_channel(self, channel_id: str) -> SlackChannel:
        if channel_id.startswith("D"):
            return SlackChannel(id=channel_id, is_im=True, is_private=True, user=None)
        return SlackChannel(
            id=channel_id, name=channel_id.lower(), is_private=channel_id[:1] == "G"
        )

    def _open_dm(self, user_id: str) -> str:
        channel_id = f"D{user_id[1:]}"
        if channel_id not in self._channels:
            self._channels[channel_id] = SlackChannel(
                id=channel_id, is_im=True, is_private=True, user=user_id
            )
        return channel_id

    # ------------------------------------------------------------ rendering

    def _render(self, message: SlackMessage, *, include_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message"}
        if message.subtype is not None:
            out["subtype"] = message.subtype
        out["text"] = message.text
        if message.user is not None:
            out["user"] = message.user
        if message.bot_id is not None:
            out["bot_id"] = message.bot_id
            profile = payloads.bot_profile(message.bot_id)
            if message.bot_id == self.bot_id:
                profile.update(name=self.bot_name, app_id=self.app_id, team_id=self.team_id)
            out["app_id"] = profile["app_id"]
            out["bot_profile"] = profile
        out["ts"] = message.ts
        out["team"] = self.team_id
        if message.blocks is not None:
            out["blocks"] = copy.deepcopy(message.blocks)
        if message.attachments is not None:
            out["attachments"] = copy.deepcopy(message.attachments)
        if message.is_reply:
            assert message.thread_ts is not None
            out["thread_ts"] = message.thread_ts
            parent = self._messages.get(message.channel, {}).get(message.thread_ts)
            out["parent_user_id"] = parent.user if parent is not None else message.user
        else:
            replies = self._replies(message.channel, message.ts)
            if replies:
                reply_users = list(dict.fromkeys(r.user or "" for r in replies))
                out.update(
                    {
                        "thread_ts": message.ts,
                        "reply_count": len(replies),
                        "reply_users_count": len(reply_users),
                        "latest_reply": replies[-1].ts,
                        "reply_users": reply_users,
                        "is_locked": False,
                        "subscribed": False,
                    }
                )
        if message.edited_ts is not None:
            out["edited"] = {"user": message.user or self.bot_user_id, "ts": message.edited_ts}
        if message.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in message.reactions.items()
            ]
        if include_metadata and message.metadata is not None:
            out["metadata"] = copy.deepcopy(message.metadata)
        out.update(copy.deepcopy(dict(message.extra)))
        return out

    def _render_channel(self, channel: SlackChannel) -> dict[str, Any]:
        if channel.is_im:
            return {
                "id": channel.id,
                "created": 1700000000,
                "is_im": True,
                "is_org_shared": False,
                "user": channel.user,
                "is_user_deleted": False,
                "priority": 0,
            }
        return {
            "id": channel.id,
            "name": channel.name,
            "is_channel": not channel.is_private,
            "is_group": channel.is_private and not channel.is_mpim,
            "is_im": False,
            "is_mpim": channel.is_mpim,
            "is_private": channel.is_private,
            "created": 1700000000,
            "is_archived": channel.is_archived,
            "is_general": False,
            "unlinked": 0,
            "name_normalized": channel.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_member": channel.is_member,
            "creator": self.bot_user_id,
            "topic": {"value": channel.topic, "creator": "", "last_set": 0},
            "purpose": {"value": channel.purpose, "creator": "", "last_set": 0},
        }

    def _render_user(self, user: SlackUser) -> dict[str, Any]:
        real_name = user.real_name or user.name
        profile: dict[str, Any] = {
            "real_name": real_name,
            "display_name": user.display_name,
            "real_name_normalized": real_name,
            "display_name_normalized": user.display_name,
            "team": self.team_id,
            "image_48": f"https://fake.slack.com/avatars/{user.id}_48.png",
        }
        if user.email is not None:
            profile["email"] = user.email
        if user.bot_id is not None:
            profile["bot_id"] = user.bot_id
            profile["api_app_id"] = self.app_id if user.bot_id == self.bot_id else ""
        return {
            "id": user.id,
            "team_id": self.team_id,
            "name": user.name,
            "deleted": user.deleted,
            "real_name": real_name,
            "tz": user.tz,
            "tz_label": user.tz_label,
            "tz_offset": user.tz_offset,
            "profile": profile,
            "is_admin": user.is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
        }

    # ------------------------------------------------------------- HTTP side

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update(body)
            elif request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                params.update(_flatten(await request.post()))
            else:
                await request.read()
        return _decode_json_fields(params)

    @staticmethod
    def _token_of(request: web.Request, params: dict[str, Any]) -> str | None:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            return authorization.removeprefix("Bearer ").strip() or None
        token = params.pop("token", None)
        return token if isinstance(token, str) and token else None

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        method = request.match_info["method"]
        params = await self._read_params(request)
        token = self._token_of(request, params)
        params.pop("token", None)
        headers = dict(request.headers)

        seconds = self._delays.get(method, self._delays.get("*", 0.0))
        if seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

        def record(status: int, body: dict[str, Any] | None) -> None:
            self._record(SlackCall(method, params, headers, arrived, status, body, token))

        fault = self._take_fault(method)
        if fault is not None and fault.drop and not fault.after_processing:
            return self._drop(request, record, None)
        if fault is not None and not fault.drop:
            return self._fault_response(fault, record)

        try:
            body = self._dispatch(method, params, token)
        except _SlackError as error:
            body = error.body()
        except Exception as bug:
            # A bug in the fake: record it so the test's failure points here, then let
            # aiohttp log the traceback and answer 500.
            record(500, {"ok": False, "error": f"fake_bug: {bug!r}"})
            raise
        if fault is not None:
            return self._drop(request, record, body)
        record(200, body)
        return web.json_response(body, headers={"X-Slack-Req-Id": uuid.uuid4().hex})

    @staticmethod
    def _drop(
        request: web.Request,
        record: Callable[[int, dict[str, Any] | None], None],
        unsent: dict[str, Any] | None,
    ) -> web.Response:
        record(DROPPED, unsent)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    @staticmethod
    def _fault_response(
        fault: _Fault, record: Callable[[int, dict[str, Any] | None], None]
    ) -> web.Response:
        if fault.status == 429:
            body: dict[str, Any] = {"ok": False, "error": "ratelimited"}
            record(429, body)
            return web.json_response(
                body, status=429, headers={"Retry-After": str(fault.retry_after or 0)}
            )
        if fault.body is not None:
            record(fault.status, None)
            return web.Response(status=fault.status, text=fault.body)
        default_error = "internal_error" if fault.status >= 500 else "request_failed"
        body = {"ok": False, "error": fault.error or default_error}
        record(fault.status, body)
        return web.json_response(body, status=fault.status)

    def _dispatch(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        handler = self._methods.get(method)
        if handler is None:
            raise _SlackError("unknown_method", req_method=method)
        if token is None:
            raise _SlackError("not_authed")
        if token in self._revoked_tokens:
            raise _SlackError("token_revoked")
        if not token.startswith(("xoxb-", "xoxp-", "xapp-")) or (
            self._valid_tokens is not None and token not in self._valid_tokens
        ):
            raise _SlackError("invalid_auth")
        if (method == "apps.connections.open") != token.startswith("xapp-"):
            raise _SlackError("not_allowed_token_type")
        self._expire_streams()
        return handler(_Params(params))

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body = await request.json()
        except ValueError:
            body = {}
        params = body if isinstance(body, dict) else {"body": body}
        answer = {"ok": True}
        self._record(
            SlackCall("response_url", params, dict(request.headers), arrived, 200, answer, None)
        )
        return web.json_response(answer)

    # ------------------------------------------------------------ Web API

    def _auth_test(self, p: _Params) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _metadata(self, p: _Params) -> dict[str, Any] | None:
        metadata = p.mapping("metadata")
        if metadata is None:
            return None
        if not isinstance(metadata.get("event_type"), str) or not isinstance(
            metadata.get("event_payload", {}), dict
        ):
            raise _SlackError("invalid_metadata_format")
        return metadata

    def _blocks(self, p: _Params) -> list[dict[str, Any]] | None:
        blocks = p.objects("blocks")
        if blocks is not None:
            self._check_blocks(blocks, "/blocks")
        return blocks

    def _check_blocks(self, blocks: Any, where: str) -> None:
        """Refuse blocks this workspace does not know, and context_actions blocks that do not
        match Slack's schema (other block types are not checked)."""
        if not isinstance(blocks, list):
            raise _SlackError("invalid_blocks_format")
        problems: list[str] = []
        for i, block in enumerate(blocks):
            at = f"{where}/{i}"
            kind = block.get("type") if isinstance(block, dict) else None
            if not isinstance(block, dict) or not isinstance(kind, str):
                problems.append(f"missing required field: type [json-pointer:{at}]")
            elif kind in self._rejected_block_types:
                problems.append(f"unsupported type: {kind} [json-pointer:{at}/type]")
            elif kind == "context_actions" and (problem := _context_actions_problem(block, at)):
                problems.append(problem)
        if problems:
            raise _SlackError(
                "invalid_blocks",
                messages=[f"[ERROR] {problem}" for problem in problems],
                errors=problems,
            )

    def _chat_post_message(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        text = p.text("text") or ""
        blocks = self._blocks(p)
        attachments = p.objects("attachments")
        if not text and not blocks and not attachments:
            raise _SlackError("no_text")
        metadata = self._metadata(p)
        thread_ts = p.text("thread_ts") or None
        if thread_ts is not None:
            thread_ts = self._thread_root(channel, thread_ts)
        broadcast = thread_ts is not None and p.flag("reply_broadcast")
        extra = {k: v for k in ("username", "icon_emoji", "icon_url") if (v := p.text(k))}
        message = SlackMessage(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
            subtype="thread_broadcast" if broadcast else None,
            blocks=blocks,
            attachments=attachments,
            metadata=metadata,
            extra=extra,
        )
        self._store(message)
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "message": self._render(message, include_metadata=True),
        }

    def _chat_update(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        current = self._find(channel, p.required("ts", error="message_not_found"))
        if current.bot_id != self.bot_id:
            raise _SlackError("cant_update_message")
        if current.stream_state == "streaming":
            raise _SlackError("streaming_state_conflict")
        text = p.text("text")
        blocks = self._blocks(p)
        attachments = p.objects("attachments")
        metadata = self._metadata(p)
        updated = dataclasses.replace(
            current,
            text=current.text if text is None else text,
            blocks=current.blocks if blocks is None else blocks,
            attachments=current.attachments if attachments is None else attachments,
            metadata=current.metadata if metadata is None else metadata,
            edited_ts=self._next_ts(),
        )
        self._store(updated)
        return {
            "ok": True,
            "channel": channel,
            "ts": updated.ts,
            "text": updated.text,
            "message": self._render(updated, include_metadata=True),
        }

    def _chat_delete(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        current = self._find(channel, p.required("ts", error="message_not_found"))
        if current.bot_id != self.bot_id:
            raise _SlackError("cant_delete_message")
        if not current.is_reply and self._replies(channel, current.ts):
            # Slack keeps a placeholder so the thread survives its parent.
            self._store(
                SlackMessage(
                    channel=channel,
                    ts=current.ts,
                    text="This message was deleted.",
                    user="USLACKBOT",
                    subtype="tombstone",
                    extra={"hidden": True},
                )
            )
        else:
            del self._messages[channel][current.ts]
        self._stream_clocks.pop((channel, current.ts), None)
        return {"ok": True, "channel": channel, "ts": current.ts}

    def _chat_post_ephemeral(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        user = p.required("user", error="user_not_found")
        text = p.text("text") or ""
        blocks = self._blocks(p)
        attachments = p.objects("attachments")
        if not text and not blocks and not attachments:
            raise _SlackError("no_text")
        thread_ts = p.text("thread_ts") or None
        message = SlackMessage(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
            blocks=blocks,
            attachments=attachments,
            visible_to=user,
        )
        self._ephemerals.append(message)
        return {"ok": True, "message_ts": message.ts}

    def _chat_get_permalink(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        message = self._find(channel, p.required("message_ts", error="message_not_found"))
        permalink = f"{PERMALINK_BASE}/{channel}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            permalink += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": permalink}

    def _stream_content(self, p: _Params) -> tuple[str, list[dict[str, Any]]]:
        """The markdown text and the `blocks` chunks one stream call adds, in order."""
        pieces: list[str] = []
        blocks: list[dict[str, Any]] = []
        markdown = p.text("markdown_text")
        if markdown:
            pieces.append(markdown)
        for i, chunk in enumerate(p.objects("chunks") or []):
            kind = chunk.get("type")
            if kind == "markdown_text" and isinstance(chunk.get("text"), str):
                pieces.append(chunk["text"])
            elif kind == "blocks" and isinstance(chunk.get("blocks"), list):
                self._check_blocks(chunk["blocks"], f"/chunks/{i}/blocks")
                blocks.extend(chunk["blocks"])
            elif kind not in ("task_update", "plan_update"):  # task cards show no message text
                raise _SlackError(
                    "invalid_chunks",
                    messages=[f"[ERROR] invalid chunk: {kind} [json-pointer:/chunks/{i}]"],
                )
        if any(len(piece) > MARKDOWN_TEXT_LIMIT for piece in pieces):
            raise _SlackError("msg_too_long")
        return "".join(pieces), blocks

    def _open_stream(self, p: _Params) -> SlackMessage:
        channel = self._resolve_channel(p.text("channel"))
        message = self._find(channel, p.required("ts", error="message_not_found"))
        if message.bot_id != self.bot_id:
            raise _SlackError("message_not_owned_by_app")
        if message.stream_state != "streaming":
            raise _SlackError("message_not_in_streaming_state")
        return message

    def _chat_start_stream(self, p: _Params) -> dict[str, Any]:
        if self._streaming_refusal is not None:
            raise _SlackError(self._streaming_refusal)
        channel = self._resolve_channel(p.text("channel"))
        thread_ts = self._thread_root(channel, p.required("thread_ts"))
        if not self._channels[channel].is_im:
            # Outside a DM Slack streams to one person and must know who.
            if not p.text("recipient_team_id"):
                raise _SlackError("missing_recipient_team_id")
            if not p.text("recipient_user_id"):
                raise _SlackError("missing_recipient_user_id")
        text, blocks = self._stream_content(p)
        extra = {k: v for k in ("username", "icon_emoji", "icon_url") if (v := p.text(k))}
        message = SlackMessage(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
            blocks=blocks or None,
            extra=extra,
            stream_state="streaming",
        )
        self._store(message)
        now = self._clock()
        self._stream_clocks[(channel, message.ts)] = _StreamClock(now, now)
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _chat_append_stream(self, p: _Params) -> dict[str, Any]:
        message = self._open_stream(p)
        if not p.text("markdown_text") and not p.objects("chunks"):
            raise _SlackError(
                "invalid_arguments", messages=["[ERROR] missing required field: markdown_text"]
            )
        text, blocks = self._stream_content(p)
        self._store(
            dataclasses.replace(
                message,
                text=message.text + text,
                blocks=[*(message.blocks or []), *blocks] or None,
            )
        )
        self._stream_clocks[(message.channel, message.ts)].appended_at = self._clock()
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_stop_stream(self, p: _Params) -> dict[str, Any]:
        message = self._open_stream(p)
        text, chunk_blocks = self._stream_content(p)
        blocks = [*(message.blocks or []), *chunk_blocks, *(self._blocks(p) or [])]
        metadata = self._metadata(p)
        self._store(
            dataclasses.replace(
                message,
                text=message.text + text,
                blocks=blocks or None,
                metadata=message.metadata if metadata is None else metadata,
            )
        )
        self._close_stream(message.channel, message.ts, "stopped")
        final = self._messages[message.channel][message.ts]
        return {
            "ok": True,
            "channel": final.channel,
            "ts": final.ts,
            "message": self._render(final, include_metadata=True),
        }

    def _reaction_target(self, p: _Params) -> tuple[SlackMessage, str]:
        channel = self._resolve_channel(p.text("channel"))
        timestamp = p.required("timestamp", error="no_item_specified")
        name = p.required("name", error="invalid_name").strip(":")
        return self._find(channel, timestamp), name

    def _reactions_add(self, p: _Params) -> dict[str, Any]:
        message, name = self._reaction_target(p)
        users = message.reactions.get(name, ())
        if self.bot_user_id in users:
            raise _SlackError("already_reacted")
        reactions = {**message.reactions, name: (*users, self.bot_user_id)}
        self._store(dataclasses.replace(message, reactions=reactions))
        return {"ok": True}

    def _reactions_remove(self, p: _Params) -> dict[str, Any]:
        message, name = self._reaction_target(p)
        users = message.reactions.get(name, ())
        if self.bot_user_id not in users:
            raise _SlackError("no_reaction")
        remaining = tuple(u for u in users if u != self.bot_user_id)
        reactions = {k: v for k, v in message.reactions.items() if k != name}
        if remaining:
            reactions[name] = remaining
        self._store(dataclasses.replace(message, reactions=reactions))
        return {"ok": True}

    @staticmethod
    def _within(message: SlackMessage, p: _Params) -> bool:
        at = _micros_from_ts(message.ts)
        inclusive = p.flag("inclusive")
        if oldest := p.text("oldest"):
            bound = _micros_from_ts(oldest)
            if at < bound or (at == bound and not inclusive):
                return False
        if latest := p.text("latest"):
            bound = _micros_from_ts(latest)
            if at > bound or (at == bound and not inclusive):
                return False
        return True

    @staticmethod
    def _page(
        messages: list[SlackMessage], p: _Params, default_limit: int
    ) -> tuple[list[SlackMessage], str]:
        start = 0
        if cursor := p.text("cursor"):
            next_ts = _decode_cursor(cursor)
            starts = [i for i, m in enumerate(messages) if m.ts == next_ts]
            if not starts:
                raise _SlackError("invalid_cursor")
            start = starts[0]
        limit = max(1, min(p.integer("limit", default_limit), 1000))
        page = messages[start : start + limit]
        rest = messages[start + limit :]
        return page, _encode_cursor(rest[0].ts) if rest else ""

    def _conversations_replies(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        root = self._thread_root(channel, p.required("ts", error="thread_not_found"))
        parent = self._messages.get(channel, {}).get(root)
        replies = [m for m in self._replies(channel, root) if self._within(m, p)]
        thread = ([parent] if parent is not None else []) + replies
        if not thread:
            raise _SlackError("thread_not_found")
        page, next_cursor = self._page(thread, p, default_limit=1000)
        include_metadata = p.flag("include_all_metadata")
        return {
            "ok": True,
            "messages": [self._render(m, include_metadata=include_metadata) for m in page],
            "has_more": bool(next_cursor),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _conversations_history(self, p: _Params) -> dict[str, Any]:
        channel = self._resolve_channel(p.text("channel"))
        shown = [m for m in self.messages_in(channel) if self._within(m, p)]
        shown.reverse()  # newest first, like Slack
        page, next_cursor = self._page(shown, p, default_limit=100)
        include_metadata = p.flag("include_all_metadata")
        return {
            "ok": True,
            "messages": [self._render(m, include_metadata=include_metadata) for m in page],
            "has_more": bool(next_cursor),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _conversations_open(self, p: _Params) -> dict[str, Any]:
        if channel_param := p.text("channel"):
            channel_id = self._resolve_channel(channel_param)
            already_open = True
        else:
            users = [u.strip() for u in (p.text("users") or "").split(",") if u.strip()]
            if not users:
                raise _SlackError("users_list_not_supplied")
            if any(u in self._missing_users for u in users):
                raise _SlackError("user_not_found")
            if len(users) == 1:
                channel_id = f"D{users[0][1:]}"
                already_open = channel_id in self._channels
                self._open_dm(users[0])
            else:
                channel_id = "G" + "".join(sorted(u[1:] for u in users))[:10]
                already_open = channel_id in self._channels
                self._channels.setdefault(
                    channel_id,
                    SlackChannel(
                        id=channel_id,
                        name=f"mpdm-{'--'.join(users)}-1",
                        is_private=True,
                        is_mpim=True,
                    ),
                )
        channel = self._channels[channel_id]
        rendered = self._render_channel(channel) if p.flag("return_im") else {"id": channel.id}
        return {
            "ok": True,
            "no_op": already_open,
            "already_open": already_open,
            "channel": rendered,
        }

    def _conversations_info(self, p: _Params) -> dict[str, Any]:
        channel_id = self._resolve_channel(p.text("channel"))
        return {"ok": True, "channel": self._render_channel(self._channels[channel_id])}

    def _users_info(self, p: _Params) -> dict[str, Any]:
        user_id = p.required("user", error="user_not_found")
        if user_id in self._missing_users:
            raise _SlackError("user_not_found")
        user = self._users.get(user_id) or SlackUser(id=user_id, name=user_id.lower())
        return {"ok": True, "user": self._render_user(user)}

    def _usergroups_users_list(self, p: _Params) -> dict[str, Any]:
        group = p.required("usergroup", error="no_such_subteam")
        if group not in self._usergroups:
            raise _SlackError("no_such_subteam")
        return {"ok": True, "users": list(self._usergroups[group])}

    def _assistant_target(self, p: _Params) -> AssistantThread:
        channel_id = self._resolve_channel(p.required("channel_id"))
        return self.assistant_thread(channel_id, p.required("thread_ts"))

    def _assistant_set_status(self, p: _Params) -> dict[str, Any]:
        thread = self._assistant_target(p)
        thread.statuses.append(p.text("status") or "")
        return {"ok": True}

    def _assistant_set_suggested_prompts(self, p: _Params) -> dict[str, Any]:
        thread = self._assistant_target(p)
        prompts = p.objects("prompts")
        if not prompts:
            raise _SlackError(
                "invalid_arguments", messages=["[ERROR] missing required field: prompts"]
            )
        thread.prompts = prompts
        thread.prompts_title = p.text("title")
        return {"ok": True}

    def _assistant_set_title(self, p: _Params) -> dict[str, Any]:
        thread = self._assistant_target(p)
        thread.title = p.required("title")
        return {"ok": True}

    def _apps_connections_open(self, p: _Params) -> dict[str, Any]:
        ticket = uuid.uuid4()
        return {"ok": True, "url": f"{self.socket_mode_url}?ticket={ticket}&app_id={self.app_id}"}

    # ----------------------------------------------------------- Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        # autoping answers the SDK's "sdk-ping-pong:<time>" pings with an identical pong,
        # which is how SocketModeClient decides that the connection is alive.
        ws = web.WebSocketResponse(autoping=True, timeout=1.0)
        await ws.prepare(request)
        self._sockets.append(ws)
        self._socket_connections_total += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "applink-fake-1",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._notify()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_socket_text(frame.data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._notify()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        self._socket_messages.append(message)
        envelope_id = message.get("envelope_id")
        if isinstance(envelope_id, str):
            payload = message.get("payload")
            self._acks.append(
                SocketAck(
                    envelope_id, payload if isinstance(payload, dict) else None, time.monotonic()
                )
            )
        self._notify()

    @property
    def socket_clients(self) -> int:
        """How many Socket Mode connections are open right now."""
        return len(self._sockets)

    @property
    def socket_connections_total(self) -> int:
        """How many Socket Mode connections were ever opened (reconnects included)."""
        return self._socket_connections_total

    @property
    def acks(self) -> list[SocketAck]:
        """Every acknowledgement received over Socket Mode, in arrival order."""
        return list(self._acks)

    async def wait_for_socket_client(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        connections: int = 1,
    ) -> None:
        """Wait until `connections` connections were opened in total and one is open now."""
        try:
            await self._wait_until(
                lambda: self._socket_connections_total >= connections and bool(self._sockets),
                timeout,
            )
        except TimeoutError:
            raise AssertionError(
                f"expected {connections} Socket Mode connection(s) within {timeout}s, "
                f"got {self._socket_connections_total} ({len(self._sockets)} open); "
                f"apps.connections.open calls: {len(self.calls_to('apps.connections.open'))}"
            ) from None

    async def send_envelope(
        self,
        type: EnvelopeType,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> str:
        """Push one envelope to the newest open connection (waiting up to `timeout` for one)."""
        await self.wait_for_socket_client(timeout)
        envelope_id = envelope_id or str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or payload.get("type") in (
                "view_submission",
                "block_suggestion",
            )
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        await self._sockets[-1].send_json(envelope)
        return envelope_id

    async def wait_for_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> SocketAck:
        """Wait for the client's acknowledgement of `envelope_id` and return it."""

        def found() -> SocketAck | None:
            return next((a for a in self._acks if a.envelope_id == envelope_id), None)

        try:
            await self._wait_until(lambda: found() is not None, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no ack for envelope {envelope_id} within {timeout}s; "
                f"acked: {[a.envelope_id for a in self._acks] or 'none'}"
            ) from None
        ack = found()
        assert ack is not None
        return ack

    async def send_disconnect(self, reason: DisconnectReason = "refresh_requested") -> None:
        """Ask every connected client to reconnect, as Slack does every few hours."""
        for ws in list(self._sockets):
            await ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-1"}}
            )

    async def user_posts(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        channel_type: payloads.ChannelType | None = None,
        app_mention: bool = False,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Simulate a person posting: store the message and deliver its `message` event
        (and, with `app_mention`, the matching `app_mention` event) over Socket Mode."""
        message = self.seed_message(
            channel,
            text,
            user=user,
            thread_ts=thread_ts,
            blocks=payloads.rich_text_blocks(text),
        )
        parent_user = None
        if message.thread_ts is not None:
            parent = self._messages.get(channel, {}).get(message.thread_ts)
            parent_user = parent.user if parent is not None else None
        events = [
            payloads.message_event(
                channel,
                user,
                text,
                message.ts,
                thread_ts=message.thread_ts,
                parent_user_id=parent_user,
                channel_type=channel_type,
            )
        ]
        if app_mention:
            events.append(
                payloads.app_mention_event(
                    channel, user, text, message.ts, thread_ts=message.thread_ts
                )
            )
        envelope_ids = []
        for event in events:
            body = payloads.event_callback(
                event, team_id=self.team_id, api_app_id=self.app_id, bot_user_id=self.bot_user_id
            )
            envelope_ids.append(await self.send_envelope("events_api", body, timeout=timeout))
        return Delivery(message, tuple(envelope_ids))

    def press_payload(
        self, channel: str, ts: str, user: str, *, action_id: str, value: str
    ) -> dict[str, Any]:
        """The `block_actions` payload Slack sends when `user` presses the button `action_id`
        with `value` on message `ts`, built from what the message shows now: a thumb of a
        `feedback_buttons` element, an `icon_button`, or a plain `button`. AssertionError when
        the message shows no such button, since nobody could press it."""
        message = self.message(channel, ts)
        found = self._button_on(message, action_id, value)
        if found is None:
            raise AssertionError(
                f"message {ts} in {channel} shows no button {action_id}={value!r}; "
                f"its blocks: {json.dumps(message.blocks)}"
            )
        block_id, element_type, label = found
        known = self._channels.get(channel)
        return payloads.block_actions(
            action_id,
            value,
            user_id=user,
            channel=channel,
            message_ts=ts,
            block_id=block_id,
            action_type=element_type,
            button_text=label,
            thread_ts=message.thread_ts,
            message=self._render(message, include_metadata=False),
            response_url=self.response_url(),
            channel_name=known.name if known is not None and known.name else channel.lower(),
            team_id=self.team_id,
            api_app_id=self.app_id,
        )

    async def user_presses(
        self,
        channel: str,
        ts: str,
        user: str,
        *,
        action_id: str,
        value: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> str:
        """Simulate `user` pressing a button on message `ts` (see `press_payload`) and deliver
        the `block_actions` payload over Socket Mode; return the envelope id."""
        payload = self.press_payload(channel, ts, user, action_id=action_id, value=value)
        return await self.send_envelope("interactive", payload, timeout=timeout)

    @staticmethod
    def _button_on(
        message: SlackMessage, action_id: str, value: str
    ) -> tuple[str, str, str] | None:
        """(block_id, element type, label) of the button `action_id`/`value` on `message`."""
        for i, block in enumerate(message.blocks or []):
            # Slack fills in a block_id the app left out; the fake derives a stable one.
            block_id = str(block.get("block_id") or uuid.uuid5(uuid.NAMESPACE_OID, f"{i}").hex[:5])
            elements = block.get("elements", [])
            if block.get("type") == "section" and isinstance(block.get("accessory"), dict):
                elements = [block["accessory"]]
            if not isinstance(elements, list):
                continue
            for element in elements:
                if not isinstance(element, dict) or element.get("action_id") != action_id:
                    continue
                kind = str(element.get("type"))
                if kind == "feedback_buttons":
                    for side in ("positive_button", "negative_button"):
                        button = element.get(side)
                        if isinstance(button, dict) and button.get("value") == value:
                            return block_id, kind, _label(button)
                elif element.get("value") == value:
                    return block_id, kind, _label(element)
        return None
