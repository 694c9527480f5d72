"""Knowledge proposals: what a person answered in a resolved escalation, and the reviewer's verdict on it.

The caller owns the session and the transaction, as everywhere in storage/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary import ProposalStatus
from storage.models import Conversation, DecisionRecord, Escalation, KnowledgeProposal, Message

# The customer's last few messages before the page make the question; more would be the whole thread.
QUESTION_MESSAGES = 3
QUESTION_CHARS = 2000
ANSWER_CHARS = 8000


@dataclass(frozen=True)
class ThreadAnswer:
    """What the customer asked before an escalation's page, and what the team wrote in the thread after it."""

    conversation_id: int
    escalation_id: int
    route: str | None
    channel: str
    thread_ts: str
    question: str
    answer: str
    answered_by: str | None
    # The first of the team's messages: the proposal links to it.
    answer_ts: str | None
    # The link to the customer's message on the page, for when the answer's own link is unknown.
    page_permalink: str | None


async def thread_answer(session: AsyncSession, escalation_id: int) -> ThreadAnswer | None:
    """The question and the team's answer around an escalation; None when nobody from the team wrote in the
    thread after the page (staff and on-call replies are recorded as `staff` messages when they arrive)."""
    row = (await session.execute(
        select(Escalation, Conversation.channel, Conversation.thread_ts)
        .join(Conversation, Conversation.id == Escalation.conversation_id)
        .where(Escalation.id == escalation_id))).one_or_none()
    if row is None:
        return None
    escalation, channel, thread_ts = row
    messages = (await session.execute(
        select(Message).where(Message.conversation_id == escalation.conversation_id)
        .order_by(Message.id))).scalars().all()
    paged_at = escalation.created_at
    answers = [m for m in messages if m.role == "staff" and m.created_at >= paged_at and m.text.strip()]
    if not answers:
        return None
    asked = [m.text.strip() for m in messages if m.role == "user" and m.created_at <= paged_at and m.text.strip()]
    question = "\n\n".join(asked[-QUESTION_MESSAGES:]) or escalation.summary
    route = escalation.route
    if route is None and escalation.decision_id is not None:
        route = await session.scalar(select(DecisionRecord.route).where(DecisionRecord.id == escalation.decision_id))
    return ThreadAnswer(
        conversation_id=escalation.conversation_id, escalation_id=escalation.id, route=route, channel=channel,
        thread_ts=thread_ts, question=question[:QUESTION_CHARS],
        answer="\n\n".join(m.text.strip() for m in answers)[:ANSWER_CHARS], answered_by=answers[0].user,
        answer_ts=answers[0].ts, page_permalink=escalation.permalink)


async def add(session: AsyncSession, found: ThreadAnswer, *, permalink: str | None, now: datetime) -> int:
    """Propose the answer; the escalation's existing proposal when it has one (a replayed resolve)."""
    existing = await session.scalar(
        select(KnowledgeProposal.id).where(KnowledgeProposal.escalation_id == found.escalation_id))
    if existing is not None:
        return int(existing)
    proposal = KnowledgeProposal(
        conversation_id=found.conversation_id, escalation_id=found.escalation_id, route=found.route,
        question=found.question, answer=found.answer, answered_by=found.answered_by, permalink=permalink,
        status="proposed", created_at=now)
    try:
        async with session.begin_nested():
            session.add(proposal)
    except IntegrityError:  # another replica proposed it a moment ago
        again = await session.scalar(
            select(KnowledgeProposal.id).where(KnowledgeProposal.escalation_id == found.escalation_id))
        assert again is not None
        return int(again)
    return proposal.id


async def listing(session: AsyncSession, *, status: ProposalStatus | None = None,
                  limit: int = 200) -> list[KnowledgeProposal]:
    """Newest first; only those with `status` when given."""
    statement = select(KnowledgeProposal).order_by(KnowledgeProposal.id.desc()).limit(limit)
    if status is not None:
        statement = statement.where(KnowledgeProposal.status == status)
    return list((await session.execute(statement)).scalars())


async def get(session: AsyncSession, proposal_id: int) -> KnowledgeProposal | None:
    return await session.get(KnowledgeProposal, proposal_id, populate_existing=True)


async def decide(session: AsyncSession, proposal_id: int, *, status: ProposalStatus, reviewer: str,
                 edited_answer: str | None, now: datetime) -> None:
    """Record the reviewer's verdict; `edited_answer` None keeps an earlier edit."""
    values: dict[str, object] = {"status": status, "reviewer": reviewer, "decided_at": now}
    if edited_answer is not None:
        values["edited_answer"] = edited_answer
    await session.execute(update(KnowledgeProposal).where(KnowledgeProposal.id == proposal_id).values(**values))
