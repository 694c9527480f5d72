"""Coverage gaps: the questions the knowledge base did not answer — no document found, escalated to a person, or
the answer rated 👎 — for the dashboard's Knowledge page to group by theme."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AnswerFeedback, DecisionRecord, Message

# Why a question counts as a gap.
GapReason = Literal["no_docs", "escalated", "rated_bad"]


@dataclass(frozen=True)
class GapQuestion:
    decision_id: int
    conversation_id: int
    text: str
    route: str
    reasons: tuple[GapReason, ...]
    created_at: datetime


def _gap(row: Any) -> GapQuestion:
    decision_id, conversation_id, text, route, grounding, escalated, rated_bad, created_at = row
    reasons: list[GapReason] = []
    if grounding == "missing":
        reasons.append("no_docs")
    if escalated:
        reasons.append("escalated")
    if rated_bad:
        reasons.append("rated_bad")
    return GapQuestion(int(decision_id), int(conversation_id), text, route, tuple(reasons), created_at)


async def unanswered_questions(session: AsyncSession, *, since: datetime | None = None,
                               limit: int = 300) -> list[GapQuestion]:
    """Questions whose search found no document, that were escalated to a person, or whose answer someone rated
    👎; newest first."""
    rated_bad = exists().where(AnswerFeedback.decision_id == DecisionRecord.id, AnswerFeedback.value == "bad")
    statement = (
        select(DecisionRecord.id, DecisionRecord.conversation_id, Message.text, DecisionRecord.route,
               DecisionRecord.grounding, DecisionRecord.escalated, rated_bad.label("rated_bad"),
               DecisionRecord.created_at)
        .join(Message, Message.id == DecisionRecord.message_id)
        .where(or_(DecisionRecord.grounding == "missing", DecisionRecord.escalated.is_(True), rated_bad))
        .order_by(DecisionRecord.created_at.desc(), DecisionRecord.id.desc()).limit(limit))
    if since is not None:
        statement = statement.where(DecisionRecord.created_at >= since)
    return [_gap(row) for row in await session.execute(statement)]
