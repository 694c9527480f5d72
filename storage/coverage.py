"""Coverage gaps: the questions the knowledge base did not answer — no document found, escalated to a person, or
(given the ids the feedback records name) rated 👎 — for the dashboard's Knowledge page to group by theme."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import DecisionRecord, Message

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


def _select() -> Any:
    return (select(DecisionRecord.id, DecisionRecord.conversation_id, Message.text, DecisionRecord.route,
                   DecisionRecord.grounding, DecisionRecord.escalated, DecisionRecord.created_at)
            .join(Message, Message.id == DecisionRecord.message_id))


def _gap(row: Any, *, rated_bad: bool = False) -> GapQuestion:
    decision_id, conversation_id, text, route, grounding, escalated, created_at = row
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
    """Questions whose search found no document, or that were escalated to a person; newest first."""
    statement = (_select().where(or_(DecisionRecord.grounding == "missing", DecisionRecord.escalated.is_(True)))
                 .order_by(DecisionRecord.created_at.desc(), DecisionRecord.id.desc()).limit(limit))
    if since is not None:
        statement = statement.where(DecisionRecord.created_at >= since)
    return [_gap(row) for row in await session.execute(statement)]


async def questions_rated_bad(session: AsyncSession, bad_decision_ids: Collection[int]) -> list[GapQuestion]:
    """The questions behind answers people rated 👎, given those decisions' ids (the feedback records know
    them); newest first."""
    if not bad_decision_ids:
        return []
    statement = (_select().where(DecisionRecord.id.in_(list(bad_decision_ids)))
                 .order_by(DecisionRecord.created_at.desc(), DecisionRecord.id.desc()))
    return [_gap(row, rated_bad=True) for row in await session.execute(statement)]
