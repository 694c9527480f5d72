"""Claude through the official async SDK: cached system prompts, bounded retries, typed responses."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import structlog

from bot.config import Config
from bot.errors import LLMBadOutput, LLMUnavailable
from bot.llm.base import LLMRequest, LLMResponse, Usage
from bot.settings import Settings

log = structlog.get_logger(__name__)


class AnthropicLLM:
    provider = "anthropic"

    def __init__(self, settings: Settings, config: Config, *, client: anthropic.AsyncAnthropic | None = None) -> None:
        assert settings.anthropic_api_key is not None
        self._client = client or anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url or None,
            timeout=config.llm.timeout_s,
            max_retries=config.llm.max_retries,
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            # The system prompt is the same for every message of a route: cache it.
            "system": [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.tool is not None:
            params["tools"] = [{"name": request.tool.name, "description": request.tool.description,
                                "input_schema": dict(request.tool.input_schema)}]
            params["tool_choice"] = {"type": "tool", "name": request.tool.name}
        try:
            message = await self._client.messages.create(**params)
        except anthropic.APITimeoutError as exc:
            raise LLMUnavailable(f"timed out: {exc}", kind="timeout") from exc
        except anthropic.APIConnectionError as exc:
            raise LLMUnavailable(f"connection failed: {exc}", kind="connection") from exc
        except anthropic.APIStatusError as exc:
            raise LLMUnavailable(f"HTTP {exc.status_code}: {exc.message}", kind=f"http_{exc.status_code}") from exc
        except anthropic.APIResponseValidationError as exc:
            raise LLMBadOutput(f"response did not validate: {exc}") from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        tool_input = None
        if request.tool is not None:
            tool_blocks = [b for b in message.content if b.type == "tool_use" and b.name == request.tool.name]
            if not tool_blocks or not isinstance(tool_blocks[0].input, dict):
                raise LLMBadOutput(f"expected a {request.tool.name} tool call, got stop_reason={message.stop_reason}")
            tool_input = tool_blocks[0].input
        usage = message.usage
        return LLMResponse(
            text=text,
            model=message.model,
            provider=self.provider,
            tool_input=tool_input,
            usage=Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_input_tokens or 0,
                cache_creation_tokens=usage.cache_creation_input_tokens or 0,
            ),
            stop_reason=message.stop_reason,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def close(self) -> None:
        await self._client.close()
