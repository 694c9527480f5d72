"""A real-HTTP fake of the Anthropic Messages and Message Batches APIs for tests, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import json
import math
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, cast

from aiohttp import web

__all__ = [
    "ERROR_TYPES",
    "FakeAnthropicAPI",
    "FaultKind",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ToolHandler",
    "error",
    "estimate_tokens",
    "garbage",
    "hang",
    "message",
    "synthesize_input",
    "text",
    "tool_use",
    "validate_message_params",
]

JSONObject: TypeAlias = dict[str, Any]
ReplyKind = Literal["message", "error", "garbage", "hang"]
FaultKind = Literal["429", "500", "503", "504", "529", "timeout", "garbage"]

MESSAGES_PATH = "/v1/messages"
BATCHES_PATH = "/v1/messages/batches"

# The `error.type` the real API sends with each status.
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES: Mapping[int, str] = {
    429: "This request would exceed the rate limit for your organization (fake).",
    500: "Internal server error (fake).",
    503: "Service unavailable (fake).",
    504: "Request timed out (fake).",
    529: "Overloaded (fake).",
}

# A broken responder is a test bug: tell the SDK not to retry it.
_NO_RETRY: Mapping[str, str] = {"x-should-retry": "false"}
_GARBAGE_BODY = '{"type": "message", "content": [{"type": "text", "te'
_API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (or one request inside a message batch)."""

    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    system: str | list[JSONObject] | None
    messages: list[JSONObject]
    tools: list[JSONObject]
    tool_choice: JSONObject | None
    model: str | None
    max_tokens: int | None
    stream: bool
    at: float
    custom_id: str | None = None

    @property
    def tool_names(self) -> list[str]:
        return [str(tool.get("name")) for tool in self.tools]

    @property
    def forced_tool(self) -> str | None:
        """The tool named by `tool_choice: {"type": "tool", "name": ...}`, if any."""
        if self.tool_choice and self.tool_choice.get("type") == "tool":
            name = self.tool_choice.get("name")
            return name if isinstance(name, str) else None
        return None

    @property
    def system_text(self) -> str:
        if isinstance(self.system, str):
            return self.system
        if isinstance(self.system, list):
            return "\n".join(str(block.get("text", "")) for block in self.system)
        return ""

    @property
    def last_user_text(self) -> str:
        for msg in reversed(self.messages):
            if msg.get("role") == "user":
                return _content_text(msg.get("content"))
        return ""

    @property
    def api_key(self) -> str | None:
        """The key sent as `x-api-key` or as `Authorization: Bearer ...`."""
        if key := self.headers.get("x-api-key"):
            return key
        auth = self.headers.get("authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def schema_for(self, tool: str) -> JSONObject | None:
        for spec in self.tools:
            if spec.get("name") == tool:
                schema = spec.get("input_schema")
                return schema if isinstance(schema, dict) else None
        return None


_RECORDED_KEY = web.RequestKey("recorded", RecordedRequest)
_BAD_JSON_KEY = web.RequestKey("bad_json", bool)


def _record(
    method: str, path: str, headers: Mapping[str, str], body: Any, *, custom_id: str | None = None
) -> RecordedRequest:
    params: Mapping[str, Any] = body if isinstance(body, dict) else {}
    system = params.get("system")
    messages = params.get("messages")
    tools = params.get("tools")
    tool_choice = params.get("tool_choice")
    model = params.get("model")
    max_tokens = params.get("max_tokens")
    return RecordedRequest(
        method=method,
        path=path,
        headers={k.lower(): v for k, v in headers.items()},
        json=body,
        system=system if isinstance(system, str | list) else None,
        messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
        tools=[t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else [],
        tool_choice=tool_choice if isinstance(tool_choice, dict) else None,
        model=model if isinstance(model, str) else None,
        max_tokens=max_tokens
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
        else None,
        stream=params.get("stream") is True,
        at=time.monotonic(),
        custom_id=custom_id,
    )


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one Messages call; build it with the helpers below."""

    kind: ReplyKind
    content: tuple[Mapping[str, Any], ...] = ()
    stop_reason: str = "end_turn"
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    retry_after: float | None = None
    body: str = ""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    output_tokens: int | None = None

    def delayed(self, delay_s: float) -> Reply:
        return replace(self, delay_s=delay_s)


Responder: TypeAlias = Callable[[RecordedRequest], "Reply | Awaitable[Reply]"]
ToolHandler: TypeAlias = (
    Mapping[str, Any]
    | Callable[
        [RecordedRequest], "Mapping[str, Any] | Reply | Awaitable[Mapping[str, Any] | Reply]"
    ]
)


def text(body: str, *, stop_reason: str = "end_turn", delay_s: float = 0.0) -> Reply:
    return Reply(
        "message",
        content=({"type": "text", "text": body},),
        stop_reason=stop_reason,
        delay_s=delay_s,
    )


def tool_use(
    name: str,
    input: Mapping[str, Any],
    *,
    preamble: str | None = None,
    id: str | None = None,
    delay_s: float = 0.0,
) -> Reply:
    block: JSONObject = {"type": "tool_use", "name": name, "input": dict(input)}
    if id is not None:
        block["id"] = id
    blocks: tuple[Mapping[str, Any], ...] = (block,)
    if preamble is not None:
        blocks = ({"type": "text", "text": preamble}, block)
    return Reply("message", content=blocks, stop_reason="tool_use", delay_s=delay_s)


def message(
    *content: Mapping[str, Any], stop_reason: str = "end_turn", delay_s: float = 0.0
) -> Reply:
    """A reply with arbitrary content blocks (`tool_use` blocks get an id if they lack one)."""
    return Reply("message", content=tuple(content), stop_reason=stop_reason, delay_s=delay_s)


def error(
    status: int,
    type: str | None = None,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    delay_s: float = 0.0,
) -> Reply:
    return Reply(
        "error",
        status=status,
        error_type=type or ERROR_TYPES.get(status, "api_error"),
        error_message=message or _ERROR_MESSAGES.get(status, f"Fake error {status}."),
        retry_after=retry_after,
        headers=dict(headers or {}),
        delay_s=delay_s,
    )


def garbage(
    body: str = _GARBAGE_BODY,
    status: int = 200,
    *,
    content_type: str = "application/json",
    delay_s: float = 0.0,
) -> Reply:
    """A body sent verbatim: invalid JSON, or valid JSON of the wrong shape."""
    return Reply("garbage", status=status, body=body, content_type=content_type, delay_s=delay_s)


def hang() -> Reply:
    """Never answer; the handler ends when the client disconnects or the fake stops."""
    return Reply("hang")


# --------------------------------------------------------------------------- helpers


def estimate_tokens(chars: str | int) -> int:
    """The fake's deterministic token estimate: one token per four characters, at least one."""
    count = chars if isinstance(chars, int) else len(chars)
    return max(1, math.ceil(count / 4))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_content_text(block.get("content")))
    return "\n".join(part for part in parts if part)


def synthesize_input(schema: Any, *, _root: Any = None, _depth: int = 0) -> Any:
    """A deterministic value satisfying a JSON schema: first enum value, "fake", 0.9, 1, True..."""
    root = schema if _root is None else _root
    if not isinstance(schema, dict) or _depth > 12:
        return None
    if isinstance(ref := schema.get("$ref"), str):
        return synthesize_input(_resolve_ref(root, ref), _root=root, _depth=_depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf"):
        if isinstance(options := schema.get(combinator), list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return synthesize_input((usable or options)[0], _root=root, _depth=_depth + 1)
    if isinstance(parts := schema.get("allOf"), list) and parts:
        merged: Any = {}
        for part in parts:
            value = synthesize_input(part, _root=root, _depth=_depth + 1)
            merged = (
                {**merged, **value}
                if isinstance(value, dict) and isinstance(merged, dict)
                else value
            )
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {
            name: synthesize_input(sub, _root=root, _depth=_depth + 1)
            for name, sub in props.items()
        }
    if kind == "array":
        items = schema.get("items", {})
        count = max(1, int(schema.get("minItems", 1)))
        return [synthesize_input(items, _root=root, _depth=_depth + 1) for _ in range(count)]
    if kind == "string":
        min_length = int(schema.get("minLength", 0))
        return "fake" + "e" * max(0, min_length - 4)
    if kind == "number":
        return _clamp(0.9, schema)
    if kind == "integer":
        return int(_clamp(1, schema))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return schema.get("default")


def _clamp(value: float, schema: Mapping[str, Any]) -> float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = float(low)
    if isinstance(high, int | float) and value > high:
        value = float(high)
    return value


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


def validate_message_params(body: Any, *, strict_alternation: bool = True) -> str | None:
    """The first problem the real API would answer 400 for, or None (a minimal subset)."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: Input should be a non-empty string"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        return "max_tokens: Input should be a valid integer greater than or equal to 0"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        return "temperature: Input should be less than or equal to 1"
    if (problem := _validate_system(body.get("system"))) is not None:
        return problem
    if (problem := _validate_tools(body.get("tools"), body.get("tool_choice"))) is not None:
        return problem
    return _validate_messages(body["messages"], strict_alternation=strict_alternation)


def _validate_system(system: Any) -> str | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid string or list of text blocks"
    for i, block in enumerate(system):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            return f"system.{i}: Input should be a text block with a string `text`"
        if not block["text"]:
            return f"system.{i}: text content blocks must be non-empty"
    return None


def _validate_tools(tools: Any, tool_choice: Any) -> str | None:
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{i}.name: Field required"
            if tool.get("type") in (None, "custom") and not isinstance(
                tool.get("input_schema"), dict
            ):
                return f"tools.{i}.custom.input_schema: Field required"
            names.append(tool["name"])
        if len(set(names)) != len(names):
            return "tools: Tool names must be unique."
    if tool_choice is None:
        return None
    if not isinstance(tool_choice, dict) or tool_choice.get("type") not in (
        "auto",
        "any",
        "tool",
        "none",
    ):
        return (
            "tool_choice: Input tag does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    if tool_choice["type"] == "tool" and tool_choice.get("name") not in names:
        return f"tool_choice: Tool '{tool_choice.get('name')}' not found in provided tools"
    if tool_choice["type"] == "any" and not names:
        return "tool_choice: tool_choice `any` may only be specified while providing tools."
    return None


def _validate_messages(messages: Any, *, strict_alternation: bool) -> str | None:
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    previous_role: str | None = None
    pending_tool_uses: list[str] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if strict_alternation and role == previous_role:
            return (
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        is_final_assistant = i == len(messages) - 1 and role == "assistant"
        if isinstance(content, str):
            blocks: list[Any] = (
                [{"type": "text", "text": content}] if content or not is_final_assistant else []
            )
        elif isinstance(content, list):
            blocks = content
        else:
            return f"messages.{i}.content: Input should be a valid string or list of content blocks"
        if not blocks and not is_final_assistant:
            return (
                f"messages.{i}: all messages must have non-empty content "
                "except for the optional final assistant message"
            )
        results: list[str] = []
        uses: list[str] = []
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"messages.{i}.content.{j}: Input should be a content block with a `type`"
            if block["type"] == "text" and not block.get("text") and not is_final_assistant:
                return f"messages.{i}.content.{j}: text content blocks must be non-empty"
            if block["type"] == "tool_use":
                uses.append(str(block.get("id")))
            if block["type"] == "tool_result":
                results.append(str(block.get("tool_use_id")))
                if role != "user" or block.get("tool_use_id") not in pending_tool_uses:
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
        if pending_tool_uses and (missing := [u for u in pending_tool_uses if u not in results]):
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        pending_tool_uses = uses if role == "assistant" else []
        previous_role = role
    return None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _Stopped(Exception):
    """Raised inside handlers when the fake is stopping."""


class _Cut(Exception):
    """Raised inside a stream when a planned cut is due."""


@dataclass(frozen=True)
class _StreamCut:
    """A streamed reply to break after `after_chunks` content deltas."""

    after_chunks: int
    error_type: str | None  # None: close the connection without a word
    message: str


def _output_chars(content: Iterable[Mapping[str, Any]]) -> int:
    """Characters the model writes for `content`: text, or the JSON of a tool's input."""
    return sum(
        len(str(b.get("text", "")))
        if b.get("type") == "text"
        else len(json.dumps(b.get("input", {})))
        for b in content
    )


@dataclass
class _Batch:
    id: str
    created_at: datetime
    created_monotonic: float
    items: list[RecordedRequest]
    invalid: dict[str, str]
    polls: int = 0
    processing_status: str = "in_progress"
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results: list[JSONObject] = field(default_factory=list)


@dataclass(frozen=True)
class _Segment:
    """One cacheable unit of the prompt, in cache order (tools, system, messages)."""

    canonical: str
    tokens: int
    cache_control: Mapping[str, Any] | None


# --------------------------------------------------------------------------- the fake


class FakeAnthropicAPI:
    """The Anthropic API on 127.0.0.1: real wire format, programmable replies, faults, counters."""

    def __init__(
        self,
        *,
        api_key: str = "sk-ant-dummy",
        latency_s: float = 0.0,
        timeout_delay_s: float = 30.0,
        strict_alternation: bool = True,
        min_cacheable_tokens: int = 0,
        batch_end_after_polls: int | None = 1,
        batch_end_after_s: float | None = None,
        stream_chunk_chars: int = 16,
        first_token_s: float = 0.0,
        tokens_per_s: float | None = None,
    ) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.timeout_delay_s = timeout_delay_s
        # The live API merges consecutive same-role turns; by default the fake rejects them.
        self.strict_alternation = strict_alternation
        # The live API caches only prefixes of 1024-4096+ tokens (per model); 0 caches any size.
        self.min_cacheable_tokens = min_cacheable_tokens
        # A batch ends on the first retrieve after `polls` retrieves, or once `s` seconds passed
        # (whichever is set and comes first); None switches that condition off.
        self.batch_end_after_polls = batch_end_after_polls
        self.batch_end_after_s = batch_end_after_s
        self.stream_chunk_chars = stream_chunk_chars
        # The model's pace, from when the fake starts answering: the first token after
        # `first_token_s`, then `tokens_per_s` (about 4 characters a token; None: at once).
        # A streamed reply shows it delta by delta; an unstreamed one arrives when its
        # streamed twin would have finished.
        self.first_token_s = first_token_s
        self.tokens_per_s = tokens_per_s
        self.responder: Responder = self.default_responder
        self.requests: list[RecordedRequest] = []
        self.batch_items: list[RecordedRequest] = []
        self.responder_errors: list[BaseException] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        self._ids = itertools.count(1)
        self._clear_state()

    def _clear_state(self) -> None:
        self._queue: deque[Reply] = deque()
        self._forced_faults: deque[Reply | Literal["timeout"]] = deque()
        self._fault_ratio = 0.0
        self._fault_kinds: tuple[FaultKind, ...] = ()
        self._fault_rng = random.Random(0)
        self._fault_retry_after: float | None = None
        self._faults_left: int | None = None
        self._tool_handlers: dict[str, ToolHandler] = {}
        self._stream_cuts: deque[_StreamCut] = deque()
        self._cache: set[str] = set()
        self._batches: dict[str, _Batch] = {}

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeAnthropicAPI is already running")
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post(MESSAGES_PATH, self._handle_messages)
        app.router.add_post(BATCHES_PATH, self._handle_batch_create)
        app.router.add_get(BATCHES_PATH, self._handle_batch_list)
        app.router.add_get(BATCHES_PATH + "/{batch_id}", self._handle_batch_retrieve)
        app.router.add_delete(BATCHES_PATH + "/{batch_id}", self._handle_batch_delete)
        app.router.add_post(BATCHES_PATH + "/{batch_id}/cancel", self._handle_batch_cancel)
        app.router.add_get(BATCHES_PATH + "/{batch_id}/results", self._handle_batch_results)
        # handler_cancellation: a client that gives up cancels its handler, keeping in_flight true.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
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
        if self._port is None:
            raise RuntimeError("FakeAnthropicAPI is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    # ----------------------------------------------------------------- programming

    def enqueue(self, *replies: Reply) -> None:
        """Replies used first, in order, before the responder is asked."""
        self._queue.extend(replies)

    def on_tool(self, name: str, handler: ToolHandler) -> None:
        """Input for tool `name` from the default responder, merged over the synthesised input."""
        self._tool_handlers[name] = handler

    def fail_next(
        self, count: int = 1, status: int | FaultKind = 429, *, retry_after: float | None = 0.01
    ) -> None:
        """Fail the next `count` Messages calls (after auth and validation) with a real error."""
        for _ in range(count):
            self._forced_faults.append(self._fault_reply(status, retry_after))

    def fault_ratio(
        self,
        ratio: float,
        kinds: Sequence[FaultKind] = ("429", "529", "500", "timeout", "garbage"),
        *,
        seed: int = 0,
        retry_after: float | None = 0.01,
        max_faults: int | None = None,
    ) -> None:
        """Fail a seeded-random fraction of Messages calls with one of `kinds`; 0 turns it off."""
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be between 0 and 1")
        self._fault_ratio = ratio
        self._fault_kinds = tuple(kinds)
        self._fault_rng = random.Random(seed)
        self._fault_retry_after = retry_after
        self._faults_left = max_faults

    def fail_stream_next(
        self,
        after_chunks: int = 1,
        error_type: str = "overloaded_error",
        message: str | None = None,
        *,
        count: int = 1,
    ) -> None:
        """Break the next `count` streamed replies after `after_chunks` content deltas with an
        `error` event, as the API does when it is overloaded mid-answer: the HTTP status was
        already 200 and no `message_stop` follows. Unstreamed calls are not affected."""
        status = next((code for code, kind in ERROR_TYPES.items() if kind == error_type), None)
        text_ = message or _ERROR_MESSAGES.get(status or 0, f"Fake {error_type}.")
        for _ in range(count):
            self._stream_cuts.append(_StreamCut(after_chunks, error_type, text_))

    def drop_stream_next(self, after_chunks: int = 1, *, count: int = 1) -> None:
        """Close the connection of the next `count` streamed replies after `after_chunks`
        content deltas, without an error event (a network cut or a crashed proxy)."""
        for _ in range(count):
            self._stream_cuts.append(_StreamCut(after_chunks, None, ""))

    def reset(self) -> None:
        """Forget requests, replies, faults, caches, batches, counters and the pace (latency,
        first token, tokens per second); keep serving."""
        self.requests.clear()
        self.batch_items.clear()
        self.responder_errors.clear()
        self.responder = self.default_responder
        self.latency_s = 0.0
        self.first_token_s = 0.0
        self.tokens_per_s = None
        # in_flight counts live handlers, so it survives a reset; the peak restarts from it
        self.max_in_flight = self.in_flight
        self._clear_state()

    # ----------------------------------------------------------------- inspection

    def requests_for(
        self, tool: str | None = None, model: str | None = None, *, path: str | None = MESSAGES_PATH
    ) -> list[RecordedRequest]:
        """Recorded requests to `path` (None: any) that offered `tool` and used `model`."""
        return [
            r
            for r in self.requests
            if (path is None or r.path == path)
            and (tool is None or tool in r.tool_names)
            and (model is None or r.model == model)
        ]

    async def wait_for_requests(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point of this helper
        *,
        path: str | None = MESSAGES_PATH,
    ) -> list[RecordedRequest]:
        """Wait until at least `n` requests to `path` arrived; TimeoutError says what did arrive."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.requests_for(path=path)) >= n)
        except TimeoutError:
            seen = [f"{r.method} {r.path}" for r in self.requests]
            raise TimeoutError(
                f"expected {n} requests to {path} within {timeout}s, "
                f"got {len(self.requests_for(path=path))}: {seen}"
            ) from None
        return self.requests_for(path=path)

    async def wait_until_idle(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point of this helper
    ) -> None:
        """Wait until no Messages call is being handled (a client that gave up cancels its own)."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    # ----------------------------------------------------------------- default behaviour

    async def default_responder(self, request: RecordedRequest) -> Reply:
        """Forced tool: its `tool_use` (on_tool or synthesised input); else echo the user's text."""
        tool = request.forced_tool
        if tool is None and request.tool_choice and request.tool_choice.get("type") == "any":
            tool = next((n for n in request.tool_names if n in self._tool_handlers), None)
            tool = tool or (request.tool_names[0] if request.tool_names else None)
        if tool is None:
            snippet = " ".join(request.last_user_text.split())
            if len(snippet) > 120:
                snippet = snippet[:117] + "..."
            return text(f"[fake {request.model}] re: {snippet}")
        synthesised = synthesize_input(request.schema_for(tool) or {"type": "object"})
        tool_input: JSONObject = synthesised if isinstance(synthesised, dict) else {}
        handler = self._tool_handlers.get(tool)
        if handler is None:
            return tool_use(tool, tool_input)
        produced: Any = handler(request) if callable(handler) else handler
        if inspect.isawaitable(produced):
            produced = await produced
        if isinstance(produced, Reply):
            return produced
        return tool_use(tool, {**tool_input, **dict(cast(Mapping[str, Any], produced))})

    # ----------------------------------------------------------------- HTTP plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
            request[_BAD_JSON_KEY] = False
        except ValueError:
            body = raw.decode("utf-8", "replace")
            request[_BAD_JSON_KEY] = True
        recorded = _record(request.method, request.path, request.headers, body)
        request[_RECORDED_KEY] = recorded
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        counts = request.method == "POST" and request.path == MESSAGES_PATH
        if counts:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._idle.clear()
        try:
            await self._pause(self.latency_s)
            if (refusal := self._check_headers(recorded)) is not None:
                return refusal
            return await handler(request)
        except _Stopped:
            return self._error_response(503, "api_error", "The fake Anthropic API is stopping.")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._error_response(
                exc.status, ERROR_TYPES.get(exc.status, "invalid_request_error"), exc.reason
            )
        finally:
            if counts:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()

    def _check_headers(self, request: RecordedRequest) -> web.Response | None:
        key = request.api_key
        if key is None:
            return self._error_response(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return self._error_response(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return self._error_response(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        if not _API_VERSION_RE.match(version):
            return self._error_response(
                400, "invalid_request_error", f"anthropic-version: invalid version {version!r}"
            )
        return None

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise _Stopped as soon as the fake stops."""
        if self._stopping.is_set():
            raise _Stopped
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(None if math.isinf(seconds) else seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise _Stopped

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):020d}"

    def _error_body(self, error_type: str, message: str, request_id: str) -> JSONObject:
        return {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }

    def _error_response(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        request_id = self._new_id("req_fake")
        out = {"request-id": request_id, **(headers or {})}
        if retry_after is not None:
            out["retry-after"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        return web.json_response(
            self._error_body(error_type, message, request_id),
            status=status,
            reason="Overloaded" if status == 529 else None,
            headers=out,
        )

    def _fault_reply(
        self, kind: int | str, retry_after: float | None
    ) -> Reply | Literal["timeout"]:
        if kind == "timeout":
            return "timeout"
        if kind == "garbage":
            return garbage()
        return error(int(kind), retry_after=retry_after)

    def _next_fault(self) -> Reply | Literal["timeout"] | None:
        if self._forced_faults:
            return self._forced_faults.popleft()
        if self._fault_ratio <= 0 or not self._fault_kinds or self._faults_left == 0:
            return None
        if self._fault_rng.random() >= self._fault_ratio:
            return None
        if self._faults_left is not None:
            self._faults_left -= 1
        return self._fault_reply(self._fault_rng.choice(self._fault_kinds), self._fault_retry_after)

    async def _reply_for(self, request: RecordedRequest) -> Reply:
        if self._queue:
            return self._queue.popleft()
        try:
            produced = self.responder(request)
            if inspect.isawaitable(produced):
                produced = await produced
        except Exception as exc:  # surfaced to the test through responder_errors
            self.responder_errors.append(exc)
            return error(500, "api_error", f"fake responder raised {exc!r}", headers=_NO_RETRY)
        if not isinstance(produced, Reply):
            exc = TypeError(f"responder returned {produced!r}, expected a Reply")
            self.responder_errors.append(exc)
            return error(500, "api_error", str(exc), headers=_NO_RETRY)
        return produced

    # ----------------------------------------------------------------- /v1/messages

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        recorded = request[_RECORDED_KEY]
        if request[_BAD_JSON_KEY]:
            return self._error_response(
                400, "invalid_request_error", "Request body is not valid JSON."
            )
        problem = validate_message_params(recorded.json, strict_alternation=self.strict_alternation)
        if problem is not None:
            return self._error_response(400, "invalid_request_error", problem)
        fault = self._next_fault()
        if fault == "timeout":
            await self._pause(self.timeout_delay_s)
            fault = None
        reply = fault if isinstance(fault, Reply) else await self._reply_for(recorded)
        await self._pause(reply.delay_s)
        if reply.kind == "hang":
            await self._pause(math.inf)
        if reply.kind == "error":
            return self._error_response(
                reply.status,
                reply.error_type,
                reply.error_message,
                retry_after=reply.retry_after,
                headers=reply.headers,
            )
        if reply.kind == "garbage":
            return web.Response(
                text=reply.body,
                status=reply.status,
                content_type=reply.content_type,
                headers={"request-id": self._new_id("req_fake"), **reply.headers},
            )
        body = self._message_body(recorded, reply)
        headers = {"request-id": self._new_id("req_fake"), **reply.headers}
        if recorded.stream:
            cut = self._stream_cuts.popleft() if self._stream_cuts else None
            return await self._stream(request, body, headers, cut)
        await self._pause(self._writing_s(_output_chars(body["content"])))
        return web.json_response(body, headers=headers)

    def _message_body(self, request: RecordedRequest, reply: Reply) -> JSONObject:
        content: list[JSONObject] = []
        for block in reply.content:
            out = dict(block)
            if out.get("type") == "tool_use" and "id" not in out:
                out["id"] = self._new_id("toolu_fake")
            content.append(out)
        stop_reason = reply.stop_reason
        max_tokens = request.max_tokens if request.max_tokens is not None else 0
        if stop_reason == "end_turn" and all(b.get("type") == "text" for b in content):
            budget = max_tokens * 4
            total = 0
            for block in content:
                chars = len(str(block.get("text", "")))
                if total + chars > budget:
                    block["text"] = str(block["text"])[: max(0, budget - total)]
                    stop_reason = "max_tokens"
                total += chars
        output_tokens = (
            reply.output_tokens
            if reply.output_tokens is not None
            else estimate_tokens(_output_chars(content))
        )
        return {
            "id": self._new_id("msg_fake"),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {**self._input_usage(request), "output_tokens": output_tokens},
        }

    # ----------------------------------------------------------------- token accounting

    def _segments(self, request: RecordedRequest) -> list[_Segment]:
        pieces: list[tuple[str, Mapping[str, Any]]] = [("tool", t) for t in request.tools]
        if isinstance(request.system, str):
            pieces.append(("system", {"type": "text", "text": request.system}))
        elif isinstance(request.system, list):
            pieces.extend(("system", block) for block in request.system)
        for msg in request.messages:
            content = msg.get("content")
            blocks: Iterable[Any] = (
                [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            )
            role = str(msg.get("role"))
            pieces.extend((role, block) for block in blocks if isinstance(block, dict))
        segments: list[_Segment] = []
        for where, block in pieces:
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            chars = (
                len(str(plain.get("text", "")))
                if plain.get("type") == "text"
                else len(json.dumps(plain))
            )
            control = block.get("cache_control")
            segments.append(
                _Segment(
                    canonical=json.dumps([where, plain], sort_keys=True),
                    tokens=estimate_tokens(chars),
                    cache_control=control if isinstance(control, dict) else None,
                )
            )
        top_level = request.json.get("cache_control") if isinstance(request.json, dict) else None
        if isinstance(top_level, dict) and segments:
            segments[-1] = replace(segments[-1], cache_control=top_level)
        return segments

    def _input_usage(self, request: RecordedRequest) -> JSONObject:
        """Input, cache-creation and cache-read token counts; remembers cached prefixes."""
        segments = self._segments(request)
        total = max(1, sum(s.tokens for s in segments))
        prefix_tokens = list(itertools.accumulate(s.tokens for s in segments))
        breakpoints = [
            i
            for i, s in enumerate(segments)
            if s.cache_control is not None and prefix_tokens[i] >= self.min_cacheable_tokens
        ]
        if not breakpoints:
            return {
                "input_tokens": total,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            }
        digest = hashlib.sha256(str(request.model).encode())
        keys: dict[int, str] = {}
        for i, segment in enumerate(segments):
            digest.update(segment.canonical.encode())
            if i in breakpoints:
                keys[i] = digest.hexdigest()
        last = breakpoints[-1]
        hit = max((i for i in breakpoints if keys[i] in self._cache), default=None)
        read = prefix_tokens[hit] if hit is not None else 0
        created = prefix_tokens[last] - read
        self._cache.update(keys.values())
        one_hour = any(
            s.cache_control is not None and s.cache_control.get("ttl") == "1h"
            for s in segments[(hit + 1 if hit is not None else 0) : last + 1]
        )
        return {
            "input_tokens": max(0, total - prefix_tokens[last]),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0 if one_hour else created,
                "ephemeral_1h_input_tokens": created if one_hour else 0,
            },
        }

    # ----------------------------------------------------------------- streaming

    def _writing_s(self, chars: int) -> float:
        """Seconds after an answer starts at which the model, at the fake's pace, has written
        `chars` characters (the first token's wait included)."""
        paced = chars / 4 / self.tokens_per_s if self.tokens_per_s else 0.0
        return self.first_token_s + paced

    async def _stream(
        self,
        request: web.Request,
        body: JSONObject,
        headers: Mapping[str, str],
        cut: _StreamCut | None,
    ) -> web.StreamResponse:
        began = time.monotonic()
        response = web.StreamResponse(
            status=200,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        written = 0  # characters of output sent so far
        deltas = 0

        async def at(chars: int) -> None:
            await self._pause(began + self._writing_s(chars) - time.monotonic())

        try:
            start = {
                **body,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**body["usage"], "output_tokens": 1},
            }
            await response.write(_sse("message_start", {"type": "message_start", "message": start}))
            await response.write(_sse("ping", {"type": "ping"}))
            step = max(1, self.stream_chunk_chars)
            for index, block in enumerate(body["content"]):
                if block.get("type") == "tool_use":
                    opening: JSONObject = {**block, "input": {}}
                    payload, delta_type, key = (
                        json.dumps(block.get("input", {})),
                        "input_json_delta",
                        "partial_json",
                    )
                elif block.get("type") == "text":
                    opening = {**block, "text": ""}
                    payload, delta_type, key = str(block.get("text", "")), "text_delta", "text"
                else:
                    opening, payload, delta_type, key = block, "", "", ""
                await at(written)
                await response.write(
                    _sse(
                        "content_block_start",
                        {"type": "content_block_start", "index": index, "content_block": opening},
                    )
                )
                for offset in range(0, len(payload), step):
                    if cut is not None and deltas == cut.after_chunks:
                        raise _Cut
                    await at(written)
                    piece = payload[offset : offset + step]
                    await response.write(
                        _sse(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": delta_type, key: piece},
                            },
                        )
                    )
                    written += len(piece)
                    deltas += 1
                await response.write(
                    _sse("content_block_stop", {"type": "content_block_stop", "index": index})
                )
            if cut is not None:
                raise _Cut
            await at(written)
            await response.write(
                _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                        "usage": {"output_tokens": body["usage"]["output_tokens"]},
                    },
                )
            )
            await response.write(_sse("message_stop", {"type": "message_stop"}))
            await response.write_eof()
        except _Cut:
            assert cut is not None
            await self._cut(request, response, cut, headers)
        except (_Stopped, ConnectionResetError):
            pass
        return response

    async def _cut(
        self,
        request: web.Request,
        response: web.StreamResponse,
        cut: _StreamCut,
        headers: Mapping[str, str],
    ) -> None:
        if cut.error_type is None:
            if request.transport is not None:
                request.transport.abort()
            return
        error_body = self._error_body(cut.error_type, cut.message, headers["request-id"])
        with contextlib.suppress(ConnectionResetError):
            await response.write(_sse("error", error_body))
            await response.write_eof()

    # ----------------------------------------------------------------- batches

    async def _handle_batch_create(self, request: web.Request) -> web.Response:
        recorded = request[_RECORDED_KEY]
        body = recorded.json
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return self._error_response(
                400, "invalid_request_error", "requests: at least one request is required"
            )
        seen: set[str] = set()
        batch_items: list[RecordedRequest] = []
        invalid: dict[str, str] = {}
        for i, item in enumerate(items):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not custom_id or not isinstance(params, dict):
                return self._error_response(
                    400,
                    "invalid_request_error",
                    f"requests.{i}: `custom_id` and `params` are required",
                )
            if custom_id in seen:
                return self._error_response(
                    400,
                    "invalid_request_error",
                    f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}",
                )
            seen.add(custom_id)
            if params.get("stream"):
                return self._error_response(
                    400,
                    "invalid_request_error",
                    f"requests.{i}.params.stream: streaming is not supported in batches",
                )
            problem = validate_message_params(params, strict_alternation=self.strict_alternation)
            if problem is not None:
                invalid[custom_id] = problem
            batch_items.append(
                _record("POST", BATCHES_PATH, recorded.headers, params, custom_id=custom_id)
            )
        now = datetime.now(UTC)
        batch = _Batch(
            id=self._new_id("msgbatch_fake"),
            created_at=now,
            created_monotonic=time.monotonic(),
            items=batch_items,
            invalid=invalid,
        )
        self._batches[batch.id] = batch
        self.batch_items.extend(batch_items)
        return web.json_response(
            self._batch_body(batch), headers={"request-id": self._new_id("req_fake")}
        )

    async def _handle_batch_retrieve(self, request: web.Request) -> web.Response:
        batch = self._batch_or_404(request)
        batch.polls += 1
        if batch.processing_status != "ended" and self._batch_due(batch):
            await self._end_batch(batch)
        return web.json_response(
            self._batch_body(batch), headers={"request-id": self._new_id("req_fake")}
        )

    async def _handle_batch_list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        batches = sorted(self._batches.values(), key=lambda b: b.created_monotonic, reverse=True)[
            :limit
        ]
        data = [self._batch_body(b) for b in batches]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
            headers={"request-id": self._new_id("req_fake")},
        )

    async def _handle_batch_cancel(self, request: web.Request) -> web.Response:
        batch = self._batch_or_404(request)
        if batch.processing_status == "in_progress":
            batch.processing_status = "canceling"
            batch.cancel_initiated_at = datetime.now(UTC)
        return web.json_response(
            self._batch_body(batch), headers={"request-id": self._new_id("req_fake")}
        )

    async def _handle_batch_delete(self, request: web.Request) -> web.Response:
        batch = self._batch_or_404(request)
        if batch.processing_status != "ended":
            return self._error_response(
                400,
                "invalid_request_error",
                "Batches must be ended or canceled before they can be deleted.",
            )
        del self._batches[batch.id]
        return web.json_response(
            {"id": batch.id, "type": "message_batch_deleted"},
            headers={"request-id": self._new_id("req_fake")},
        )

    async def _handle_batch_results(self, request: web.Request) -> web.Response:
        batch = self._batch_or_404(request)
        if batch.processing_status != "ended":
            return self._error_response(
                400,
                "invalid_request_error",
                f"Batch {batch.id} has not ended ({batch.processing_status}).",
            )
        lines = "".join(json.dumps(line) + "\n" for line in batch.results)
        return web.Response(
            text=lines,
            content_type="application/binary",
            headers={"request-id": self._new_id("req_fake")},
        )

    async def finish_batches(self) -> None:
        """End every batch still in progress now, computing its results."""
        for batch in list(self._batches.values()):
            if batch.processing_status != "ended":
                await self._end_batch(batch)

    def _batch_or_404(self, request: web.Request) -> _Batch:
        batch = self._batches.get(request.match_info["batch_id"])
        if batch is None:
            raise web.HTTPNotFound(
                reason=f"message batch {request.match_info['batch_id']!r} not found"
            )
        return batch

    def _batch_due(self, batch: _Batch) -> bool:
        if batch.processing_status == "canceling":
            return True
        if self.batch_end_after_polls is not None and batch.polls > self.batch_end_after_polls:
            return True
        elapsed = time.monotonic() - batch.created_monotonic
        return self.batch_end_after_s is not None and elapsed >= self.batch_end_after_s

    async def _end_batch(self, batch: _Batch) -> None:
        results: list[JSONObject] = []
        for item in batch.items:
            custom_id = str(item.custom_id)
            if batch.processing_status == "canceling":
                results.append({"custom_id": custom_id, "result": {"type": "canceled"}})
                continue
            if custom_id in batch.invalid:
                body = self._error_body(
                    "invalid_request_error", batch.invalid[custom_id], self._new_id("req_fake")
                )
                results.append(
                    {"custom_id": custom_id, "result": {"type": "errored", "error": body}}
                )
                continue
            reply = await self._reply_for(item)
            if reply.kind == "message":
                msg = self._message_body(item, reply)
                msg["usage"]["service_tier"] = "batch"
                results.append(
                    {"custom_id": custom_id, "result": {"type": "succeeded", "message": msg}}
                )
            elif reply.kind == "hang":
                results.append({"custom_id": custom_id, "result": {"type": "expired"}})
            else:
                error_type = reply.error_type if reply.kind == "error" else "api_error"
                text_ = (
                    reply.error_message
                    if reply.kind == "error"
                    else "Invalid response from model (fake)."
                )
                body = self._error_body(error_type, text_, self._new_id("req_fake"))
                results.append(
                    {"custom_id": custom_id, "result": {"type": "errored", "error": body}}
                )
        batch.results = results
        batch.processing_status = "ended"
        batch.ended_at = datetime.now(UTC)

    def _batch_body(self, batch: _Batch) -> JSONObject:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.processing_status == "ended":
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.items)
        results_url = (
            f"{self.url}{BATCHES_PATH}/{batch.id}/results"
            if batch.processing_status == "ended"
            else None
        )
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.processing_status,
            "request_counts": counts,
            "ended_at": _iso(batch.ended_at) if batch.ended_at else None,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancel_initiated_at)
            if batch.cancel_initiated_at
            else None,
            "results_url": results_url,
        }
