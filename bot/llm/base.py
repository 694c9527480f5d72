"""The LLM port: one typed request in, one typed response out, whatever the provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

Purpose = Literal["route", "reply", "vote", "judge", "triage"]


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

    def with_model(self, model: str) -> LLMRequest:
        return replace(self, model=model)


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
