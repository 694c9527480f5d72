"""The forced tools' models: the schema the model is asked to fill, and what an answer must be to be used."""

from __future__ import annotations

import math

import pytest

from bot.errors import LLMBadOutput
from bot.llm.tools import BestDraft, RouteAnswer, TriageAnswer, Verdict, parse

ROUTES = ["billing", "technical", "general"]


def test_the_route_schema_enumerates_exactly_the_configured_routes() -> None:
    schema = RouteAnswer.tool(ROUTES).input_schema
    assert schema["properties"]["route"]["enum"] == ROUTES
    assert schema["properties"]["confidence"]["minimum"] == 0 and schema["properties"]["confidence"]["maximum"] == 1
    assert set(schema["required"]) == {"route", "confidence", "reason"}


def test_a_route_answer_is_read_case_insensitively_and_keeps_a_short_reason() -> None:
    answer = parse(RouteAnswer.for_routes(ROUTES), {"route": " Billing ", "confidence": 1, "reason": "x " * 400,
                                                    "extra": "ignored"})
    assert (answer.route, answer.confidence, len(answer.reason)) == ("billing", 1.0, 300)


@pytest.mark.parametrize(("answer", "problem"), [
    (None, "no tool input"),
    ({"route": "refunds", "confidence": 0.9}, "route: 'refunds' is not one of billing, technical, general"),
    ({"route": "billing", "confidence": True}, "confidence: is a boolean"),
    ({"route": "billing", "confidence": math.nan}, "confidence: Input should be a finite number"),
    ({"route": "billing", "confidence": 85}, "confidence: Input should be less than or equal to 1"),
    ({"confidence": 0.5}, "route: Field required"),
])
def test_a_route_answer_outside_the_schema_says_what_is_wrong(answer: object, problem: str) -> None:
    with pytest.raises(LLMBadOutput, match="^" + problem.replace("(", r"\(")):
        parse(RouteAnswer.for_routes(ROUTES), answer)  # type: ignore[arg-type]


def test_a_verdict_to_reply_needs_a_draft() -> None:
    assert parse(Verdict, {"verdict": "needs_human", "draft": ""}).verdict == "needs_human"
    with pytest.raises(LLMBadOutput, match="a reply verdict with an empty draft"):
        parse(Verdict, {"verdict": "reply", "draft": "   "})
    with pytest.raises(LLMBadOutput, match="verdict"):
        parse(Verdict, {"verdict": "maybe", "draft": "hi"})


def test_the_judge_index_is_bounded_by_the_drafts_shown() -> None:
    assert BestDraft.tool(3).input_schema["properties"]["best"]["maximum"] == 2
    assert parse(BestDraft.among(3), {"best": 2.0}).best == 2
    for wrong in (3, -1, True, "first"):
        with pytest.raises(LLMBadOutput, match="best"):
            parse(BestDraft.among(3), {"best": wrong})


def test_a_triage_answer_normalises_its_themes_and_may_lack_a_confidence() -> None:
    answer = parse(TriageAnswer.for_routes(ROUTES), {
        "route": "GENERAL", "summary": "  asks\nabout   VAT ", "themes": ["VAT!", "vat", " Invoices "],
        "urgency": "High"})
    assert (answer.route, answer.summary, answer.clean_themes, answer.urgency, answer.confidence) == (
        "general", "asks about VAT", ("vat", "invoices"), "high", None)
    schema = TriageAnswer.tool(ROUTES).input_schema
    assert schema["properties"]["urgency"]["enum"] == ["low", "normal", "high"]
