"""The LLM port: one typed request in, one typed response out, whatever the provider."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.domain import Document
from bot.vocabulary import Purpose

if TYPE_CHECKING:
    from bot.errors import LLMError

# The `kind` of an LLMError, as recorded in llm_calls.error and the supportbot_llm_errors_total metric:
#   rate_limited (429), overloaded (529), server_error (other 5xx, 409), timeout (an attempt ran out of
#   time), connection, bad_response (a body that is not a valid Messages response), deadline (the call's
#   overall budget ran out), bad_request (other 4xx: our bug), auth (401/403), canceled/expired (batch
#   items), bad_output (a well-formed answer that does not fit the requested tool schema), circuit_open (not
#   sent: the model failed too often just now; metrics only, see bot/llm/breaker.py).
RETRYABLE_KINDS = frozenset({"rate_limited", "overloaded", "server_error", "timeout", "connection", "bad_response"})
# Failures another model cannot fix: the request itself, the credentials, or a spent budget.
NO_FALLBACK_KINDS = frozenset({"bad_request", "auth", "deadline"})


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model is forced to call, so its answer arrives as JSON matching `input_schema`."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


class TextSink(Protocol):
    """Receives a reply's text while the model writes it (a streamed answer)."""

    async def write(self, delta: str) -> None: ...

    async def restart(self) -> None:
        """What was written so far is void (the attempt failed); the next write starts the reply anew."""
        ...


@dataclass(frozen=True)
class LLMRequest:
    purpose: Purpose
    model: str
    system: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 1024
    tool: ToolSpec | None = None
    temperature: float | None = None
    # For the call log and cost per route; not sent to the model.
    route: str | None = None
    conversation_id: int | None = None
    # Per-call overrides of the `[llm]` budget, set by the fallback step; None = the configured value.
    deadline_s: float | None = None
    max_retries: int | None = None
    # Where the text goes as it is written (plain replies only); the response still carries all of it.
    stream_to: TextSink | None = None
    # The team's passages the prompt quotes, for a provider that answers from them without reading prompts.
    documents: tuple[Document, ...] = ()


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True)
class LLMResponse:
    text: str
    model: str
    provider: str
    tool_input: Mapping[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    latency_ms: float = 0.0
    # Row id in llm_calls once recorded.
    call_id: int | None = None


class LLM(Protocol):
    """Raises bot.errors.LLMUnavailable or LLMBadOutput; never returns a half answer."""

    provider: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


@dataclass(frozen=True)
class BatchProgress:
    """How far a Message Batch has got: requests finished (succeeded or not) out of the total."""

    done: int
    total: int
    status: str


class BatchLLM(LLM, Protocol):
    """A provider that can also run many requests as one asynchronous batch (cheaper, slower)."""

    supports_batch: bool

    async def complete_batch(
        self, requests: Sequence[LLMRequest], *, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> list[LLMResponse | LLMError]:
        """One answer or one error per request, in request order; never raises for a single item."""
        ...


def batch_capable(llm: LLM) -> BatchLLM | None:
    """`llm` as a BatchLLM when it (through its wrappers) can run a Message Batch, else None."""
    if getattr(llm, "supports_batch", False) and hasattr(llm, "complete_batch"):
        return llm  # type: ignore[return-value]
    return None


class LLMWrapper:
    """A step around another LLM (call recorder, circuit breaker, fallback): the provider's name, its Message
    Batches and `close` pass through; subclasses give `complete`."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.provider = inner.provider

    @property
    def supports_batch(self) -> bool:
        return batch_capable(self.inner) is not None

    async def complete_batch(
        self, requests: Sequence[LLMRequest], *, on_progress: Callable[[BatchProgress], None] | None = None
    ) -> list[LLMResponse | LLMError]:
        inner = batch_capable(self.inner)
        if inner is None:
            raise TypeError(f"the {self.provider} provider cannot run message batches")
        return await inner.complete_batch(requests, on_progress=on_progress)

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()


FenceTag = Literal["message", "draft", "passage"]

# Every spelling of an angle bracket a model might read as one: ASCII, full-width, small, CJK, mathematical,
# ornamental, modifier letters, Canadian syllabics. Inside a fence they all become the single angle quotation
# marks ‹ ›, so the only tags in a prompt are the ones this module writes.
_OPENING = "<＜﹤〈⟨❮˂ᐸ‹"
_CLOSING = ">＞﹥〉⟩❯˃ᐳ›"
_BRACKETS = str.maketrans({**dict.fromkeys(_OPENING, "‹"), **dict.fromkeys(_CLOSING, "›")})
# Entities are decoded this many levels deep (&amp;amp;lt; is three); text still holding one after that gets
# each "&" that could begin an entity (&lt, &#60, &#x3c) replaced, so no decoding of it yields a bracket.
_DECODE_LEVELS = 3
_ENTITY_START = re.compile(r"&(?=#|[A-Za-z])")
_ATTRIBUTE_NAME = re.compile(r"[a-z_]+")


def fenced(text: str, tag: FenceTag = "message", **attributes: str) -> str:
    """Untrusted text for a prompt, inside <tag name="value">…</tag>: the one way such text enters a prompt.

    Nothing in the text can close the fence, open another or pass for one, however it is spelt (any case,
    spaces inside the tag, `&lt;/MESSAGE&gt;`, full-width brackets): entities are decoded, then every
    bracket becomes ‹ or ›. Who wrote it is an attribute set here from our records (`role="staff"`), never
    something the text says about itself ("[a support staff member wrote] …" stays the customer's words)."""
    rendered = []
    for name, value in attributes.items():
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an attribute name")  # names come from our code, never from text
        rendered.append(f' {name}="{_neutral(value).replace(chr(34), "”")}"')
    return f"<{tag}{''.join(rendered)}>\n{_neutral(text)}\n</{tag}>"


def last_fenced(content: str, tag: FenceTag = "message") -> str | None:
    """The text of the last <tag …> fence in a prompt (as the model reads it), or None when there is none."""
    found = re.findall(rf"<{tag}(?: [^>]*)?>\n(.*?)\n</{tag}>", content, re.DOTALL)
    return found[-1] if found else None


def _neutral(text: str) -> str:
    for _ in range(_DECODE_LEVELS):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    if html.unescape(text) != text:
        text = _ENTITY_START.sub("＆", text)
    return text.translate(_BRACKETS)
