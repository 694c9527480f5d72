"""The offline provider: deterministic, clearly labelled answers so the product runs with no API key."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bot.config import Config
from bot.llm.base import LLMRequest, LLMResponse, Usage, last_fenced

OFFLINE_BANNER = "_(offline mode: no ANTHROPIC_API_KEY is set, so this is a canned answer)_"

# Route classifier used to stand in for Claude's routing: text -> (route, confidence).
Classify = Callable[[str], tuple[str, float]]

_WORD = re.compile(r"[a-z0-9']+")
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "has", "have", "how",
    "i", "i'm", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "please", "so",
    "that", "the", "this", "to", "was", "we", "what", "when", "where", "which", "why", "will", "with", "you",
    "your",
})


class OfflineLLM:
    provider = "offline"

    def __init__(self, config: Config, classify: Classify | None = None) -> None:
        self._config = config
        self._classify = classify

    async def complete(self, request: LLMRequest) -> LLMResponse:
        text = _quoted_message(request.messages[-1].content if request.messages else "")
        tool_input: Mapping[str, Any] | None = None
        reply = ""
        if request.tool is None:
            # Not streamed (`request.stream_to` is left alone): a canned answer is whole at once.
            reply = self._reply(request, text)
        elif request.tool.name == "route_message":
            tool_input = self._route(text, request.tool.input_schema)
        elif request.tool.name == "submit_verdict":
            tool_input = {"verdict": "reply", "draft": self._reply(request, text),
                          "reason": "offline provider always drafts the templated reply"}
        elif request.tool.name == "pick_best_draft":
            tool_input = {"best": 0, "reason": "offline provider picks the first draft"}
        elif request.tool.name == "triage_message":
            tool_input = self._triage(text)
        else:
            tool_input = synthesise(request.tool.input_schema)
        usage = Usage(input_tokens=_tokens(request.system) + sum(_tokens(m.content) for m in request.messages),
                      output_tokens=_tokens(reply or str(tool_input)))
        return LLMResponse(
            text=reply,
            model=request.model,
            provider=self.provider,
            tool_input=tool_input,
            usage=usage,
            stop_reason="tool_use" if tool_input is not None else "end_turn",
        )

    def _reply(self, request: LLMRequest, text: str) -> str:
        """The best passage of the team's docs, quoted with where it is from; else the persona's canned answer."""
        if not request.documents:
            return self._persona_reply(request.route, text)
        from bot.knowledge.answer import extract

        best = extract(text, request.documents[0])
        where = f"**{best.title}**" + (f" ({best.heading})" if best.heading and best.heading != best.title else "")
        quote = "\n".join(f"> {line}" if line.strip() else ">" for line in best.text.splitlines())
        return f"{OFFLINE_BANNER}\nFrom our docs, {where}:\n{quote}"

    def _persona_reply(self, route: str | None, text: str) -> str:
        routes = self._config.routes
        persona = routes[route].persona if route in routes else "support agent"
        topic = _snippet(text)
        body = {
            "billing": "I can look into charges, invoices and refunds. Please send the invoice number "
            "or the date and amount of the charge, and the last four digits of the card. Refunds "
            "usually appear within 3-5 business days once approved.",
            "technical": "Let's narrow it down:\n1. What exactly happens, and any error message?\n"
            "2. When did it start, and what changed?\n3. Which app or browser version?\n"
            "Meanwhile, signing out and back in or clearing the cache often helps.",
            "sales": "Happy to help you choose. Tell me your team size and what you need most, and "
            "I'll suggest the plan that fits; an account executive can prepare a quote.",
            "escalate": "I'm sorry about this. I've asked a person from the team to join this thread.",
        }.get(route or "", "Thanks for reaching out! Could you tell me a bit more so I can point you "
              "to the right place?")
        return f"{OFFLINE_BANNER}\nHi, this is the {persona}. About “{topic}”: {body}"

    def _route(self, text: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        allowed = _enum(schema, "route") or list(self._config.routes)
        if self._classify is not None:
            route, confidence = self._classify(text)
        else:
            route, confidence = self._config.fallback_route, 0.5
        if route not in allowed:
            route = self._config.fallback_route if self._config.fallback_route in allowed else allowed[0]
        return {"route": route, "confidence": round(confidence, 3),
                "reason": "offline provider: local classifier standing in for Claude"}

    def _triage(self, text: str) -> dict[str, Any]:
        routing = self._route(text, {})
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2]
        themes = list(dict.fromkeys(words))[:3]
        return {"route": routing["route"], "summary": _snippet(text, 120), "themes": themes,
                "urgency": "high" if routing["route"] == "escalate" else "normal"}


def _quoted_message(content: str) -> str:
    """The customer's words when a prompt fences them in <message> tags, else the whole content."""
    found = last_fenced(content)
    return content if found is None else found


def _enum(schema: Mapping[str, Any], key: str) -> list[str] | None:
    properties = schema.get("properties", {})
    values = properties.get(key, {}).get("enum") if isinstance(properties, Mapping) else None
    return [str(v) for v in values] if isinstance(values, list) else None


def synthesise(schema: Mapping[str, Any]) -> Any:
    """A minimal value matching a JSON schema, for tools the offline provider does not know."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: synthesise(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return "offline"


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0
