"""The coverage-gap query on SQLite and PostgreSQL: questions with no document, escalated ones, and those whose
answer someone rated 👎."""

from __future__ import annotations

from pathlib import Path

from bot.clock import ManualClock
from bot.domain import InboundMessage
from bot.knowledge.service import KnowledgeBase
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from storage import coverage, feedback
from tests.conftest import config_with
from tests.knowledge.conftest import write_docs

TOML = """
[router]
mode = "rules"
[[router.rules]]
name = "legal"
route = "escalate"
pattern = '(?i)\\blawyer\\b'
[knowledge]
min_score = 0.6
"""


async def test_gaps_are_the_questions_with_no_document_a_person_or_a_bad_rating(
    database_url: str, tmp_path: Path, clock: ManualClock,
) -> None:
    config = config_with(TOML)
    runtime = await build_runtime(Settings(database_url=database_url), config, chat=LocalChat(clock), clock=clock,
                                  instance_id="coverage")
    try:
        await KnowledgeBase(runtime.db, config).add([str(write_docs(tmp_path / "docs"))], name="manual")
        texts = ["two devices edited the same note offline and now there is a conflict copy, what do I do?",
                 "can your API send me a fax when a deploy finishes?", "my lawyer will hear about this"]
        for n, text in enumerate(texts, start=1):
            clock.advance(60)
            await runtime.pipeline.handle(InboundMessage(source="slack", team="T0", channel="C0", user="U0",
                                                         text=text, ts=f"1800000000.00000{n}", event_id=f"Ev{n}"))
        async with runtime.db.sessions.begin() as session:
            # The asker rates the grounded answer 👎.
            await feedback.record_feedback(session, feedback.AnsweredDecision(1, 1, "U0", "open"), user="U0",
                                           value="bad", now=clock.now())
        async with runtime.db.sessions() as session:
            gaps = await coverage.unanswered_questions(session)
            recent = await coverage.unanswered_questions(session, since=clock.now())
        assert [(g.decision_id, g.text, g.reasons) for g in gaps] == [
            (3, texts[2], ("escalated",)), (2, texts[1], ("no_docs",)), (1, texts[0], ("rated_bad",))]
        assert [g.text for g in recent] == [texts[2]]
    finally:
        await runtime.close()
