"""The coverage-gap queries on SQLite and PostgreSQL: questions with no document, escalated ones, and the questions
behind answers rated 👎 (by decision id)."""

from __future__ import annotations

from pathlib import Path

from bot.clock import ManualClock
from bot.domain import InboundMessage
from bot.knowledge.service import KnowledgeBase
from bot.local_chat import LocalChat
from bot.runtime import build_runtime
from bot.settings import Settings
from storage import coverage
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


async def test_gaps_are_the_questions_with_no_document_or_a_person_and_those_rated_bad(
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
        async with runtime.db.sessions() as session:
            gaps = await coverage.unanswered_questions(session)
            recent = await coverage.unanswered_questions(session, since=clock.now())
            bad = await coverage.questions_rated_bad(session, {1, 999})
            none = await coverage.questions_rated_bad(session, set())
        assert [(g.text, g.reasons) for g in gaps] == [(texts[2], ("escalated",)), (texts[1], ("no_docs",))]
        assert [g.text for g in recent] == [texts[2]]
        assert [(g.decision_id, g.text, g.reasons) for g in bad] == [(1, texts[0], ("rated_bad",))] and none == []
    finally:
        await runtime.close()
