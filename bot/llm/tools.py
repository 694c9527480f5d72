"""The forced tools, one pydantic model each: the model gives the JSON schema the LLM must fill and validates
what comes back, so an answer is a typed value or an LLMBadOutput saying what is wrong with it.

    route_message    RouteAnswer    the LLM router (routes: the configured ones)
    submit_verdict   Verdict        one voting sample
    pick_best_draft  BestDraft      the voting judge (index bounded by the drafts shown)
    triage_message   TriageAnswer   one backlog message (routes: the configured ones)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from bot.errors import LLMBadOutput
from bot.llm.base import ToolSpec

MAX_REASON_CHARS = 300
MAX_THEMES = 5
Urgency = Literal["low", "normal", "high"]


def _lowered(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _probability(value: object) -> object:
    # true is not 1.0: a boolean where a probability belongs is an answer outside the schema.
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a number")
    return value


def _short(limit: int) -> Any:
    return BeforeValidator(lambda value: " ".join(value.split())[:limit] if isinstance(value, str) else value)


def _whole_number(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a number")
    return value


# Constraints before validators, so the schema says minimum/maximum.
Probability = Annotated[float, Ge(0.0), Le(1.0), AllowInfNan(False), BeforeValidator(_probability)]
Reason = Annotated[str, _short(MAX_REASON_CHARS), Field(description="one short sentence")]


class ToolInput(BaseModel):
    """A tool's input as the model fills it; keys the schema does not name are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _routes(routes: Sequence[str]) -> Any:
    """A route name, one of `routes` (an enum in the schema), read case-insensitively."""
    allowed = tuple(routes)

    def known(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return Annotated[str, BeforeValidator(_lowered), AfterValidator(known),
                     Field(description="the one best route", json_schema_extra={"enum": list(allowed)})]


class RouteAnswer(ToolInput):
    route: str
    confidence: Annotated[Probability, Field(description="probability that the route is right")]
    reason: Reason = "(no reason given)"

    @classmethod
    def tool(cls, routes: Sequence[str]) -> ToolSpec:
        return tool_spec("route_message", "Record which support route should handle the customer's message.",
                         cls.for_routes(routes))

    @classmethod
    def for_routes(cls, routes: Sequence[str]) -> type[RouteAnswer]:
        """This model with `route` limited to exactly the configured routes (an enum in the schema)."""
        return create_model("RouteAnswer", __base__=cls, route=(_routes(routes), ...))


class Verdict(ToolInput):
    verdict: Annotated[Literal["reply", "needs_human"], Field(
        description="reply: the draft can be sent as is; needs_human: a person must handle this")]
    draft: Annotated[str, Field(description="the reply you would send to the customer")]
    reason: Reason = ""

    @model_validator(mode="after")
    def _a_reply_has_words(self) -> Verdict:
        if self.verdict == "reply" and not self.draft.strip():
            raise ValueError("a reply verdict with an empty draft")
        return self


VERDICT_TOOL_NAME = "submit_verdict"


class BestDraft(ToolInput):
    best: Annotated[int, Ge(0), BeforeValidator(_whole_number), Field(description="index of the best draft")]
    reason: Reason = ""

    @classmethod
    def tool(cls, drafts: int) -> ToolSpec:
        """The judge's tool; the index is bounded by the number of drafts it is shown."""
        return tool_spec("pick_best_draft", "Pick the best of the numbered draft replies.", cls.among(drafts))

    @classmethod
    def among(cls, drafts: int) -> type[BestDraft]:
        index: Any = Annotated[int, Ge(0), Le(max(0, drafts - 1)), BeforeValidator(_whole_number),
                               Field(description="index of the best draft")]
        return create_model("BestDraft", __base__=cls, best=(index, ...))


class TriageAnswer(ToolInput):
    route: str
    summary: Annotated[str, _short(300), Field(description="one sentence, at most 25 words")]
    themes: Annotated[list[str], Field(max_length=MAX_THEMES * 2, description=(
        '1-3 short lowercase topics, e.g. "double charge", "login"'))]
    urgency: Annotated[Urgency, BeforeValidator(_lowered), Field(description=(
        "high: angry, legal or regulator threats, security problems, work blocked or money lost; "
        "normal: someone waiting for help; low: questions, feedback"))]
    # A missing confidence is no reason to lose the triage: an exported label is then flagged for review.
    confidence: Annotated[Probability | None, Field(description="probability that the route is right")] = None

    @classmethod
    def tool(cls, routes: Sequence[str]) -> ToolSpec:
        return tool_spec("triage_message",
                         "Record the triage of one customer message: route, summary, themes and urgency.",
                         cls.for_routes(routes))

    @classmethod
    def for_routes(cls, routes: Sequence[str]) -> type[TriageAnswer]:
        return create_model("TriageAnswer", __base__=cls, route=(_routes(routes), ...))

    @property
    def clean_themes(self) -> tuple[str, ...]:
        """Distinct, normalised themes, at most MAX_THEMES."""
        return tuple(dict.fromkeys(t for t in (normalize_theme(theme) for theme in self.themes) if t))[:MAX_THEMES]


def normalize_theme(theme: str) -> str:
    return re.sub(r"\s+", " ", theme.strip().strip(".,;:!?\"'").lower())[:60]


def tool_spec(name: str, description: str, model: type[ToolInput]) -> ToolSpec:
    schema = model.model_json_schema()
    # Every field is asked for, the optional ones included: the model answers better with a full form.
    schema["required"] = list(schema.get("properties", {}))
    return ToolSpec(name=name, description=description, input_schema=schema)


Parsed = TypeVar("Parsed", bound=ToolInput)


def parse(model: type[Parsed], answer: Mapping[str, Any] | None) -> Parsed:
    """The tool input as `model`, or LLMBadOutput naming what does not fit the schema."""
    if not isinstance(answer, Mapping):
        raise LLMBadOutput("no tool input")
    try:
        return model.model_validate(dict(answer))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'answer'}: {str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)[:3])
        raise LLMBadOutput(problems) from None
