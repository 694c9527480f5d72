"""What reviewers read: the routing log (`supportbot logs`, the dashboard's list), its charts' facts, and one
conversation with everything recorded about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from storage.models import (
    AnswerFeedback,
    Conversation,
    DecisionRecord,
    Escalation,
    InboundEvent,
    LLMCall,
    Message,
    RouteCorrection,
    Vote,
)

# --- review: the routing log ------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    route: str | None = None
    decided_by: str | None = None
    escalated: bool | None = None
    voted: bool | None = None
    confidence_below: float | None = None
    channel: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    # The asker's rating of the answer ("good", "bad"), and what became of the thread (a Resolution, or "open").
    feedback: str | None = None
    resolution: str | None = None
    after_id: int | None = None
    limit: int = 50
    # Rows skipped before the first returned one (the dashboard's pages).
    offset: int = 0


@dataclass(frozen=True)
class LogRow:
    id: int
    conversation_id: int
    created_at: datetime
    channel: str
    thread_ts: str
    user: str | None
    text: str
    route: str
    original_route: str
    confidence: float
    decided_by: str
    reason: str
    escalated: bool
    voted: bool
    vote_agreement: float | None
    reply: str | None
    latency_ms: float | None
    outcome: str | None
    # The passages given to the model: [{"title", "source", …}].
    sources: list[dict[str, Any]]
    # The asker's latest rating of the answer, and what became of the thread (None while it is open).
    feedback: str | None = None
    resolution: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "created_at": self.created_at.isoformat(),
            "channel": self.channel,
            "thread_ts": self.thread_ts,
            "user": self.user,
            "text": self.text,
            "route": self.route,
            "original_route": self.original_route,
            "confidence": round(self.confidence, 4),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "escalated": self.escalated,
            "voted": self.voted,
            "vote_agreement": None if self.vote_agreement is None else round(self.vote_agreement, 4),
            "reply": self.reply,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "outcome": self.outcome,
            "sources": [{"title": source.get("title"), "source": source.get("source")} for source in self.sources],
            "feedback": self.feedback,
            "resolution": self.resolution,
        }


def _latest_correction() -> Any:
    return (
        select(RouteCorrection.new_route)
        .where(RouteCorrection.decision_id == DecisionRecord.id)
        .order_by(RouteCorrection.id.desc())
        .limit(1)
        .correlate(DecisionRecord)
        .scalar_subquery()
    )


def _log_query(filters: LogFilter) -> Select[Any]:
    corrected = _latest_correction()
    effective_route = func.coalesce(corrected, DecisionRecord.route)
    statement = (
        select(DecisionRecord, Conversation, Message, corrected.label("corrected_route"),
               AnswerFeedback.value.label("feedback"))
        .join(Conversation, Conversation.id == DecisionRecord.conversation_id)
        .join(Message, Message.id == DecisionRecord.message_id)
        .outerjoin(AnswerFeedback, (AnswerFeedback.decision_id == DecisionRecord.id)
                   & AnswerFeedback.from_asker.is_(True))
    )
    if filters.route:
        statement = statement.where(effective_route == filters.route)
    if filters.decided_by == "correction":
        statement = statement.where(corrected.is_not(None))
    elif filters.decided_by:
        statement = statement.where(DecisionRecord.decided_by == filters.decided_by, corrected.is_(None))
    if filters.escalated is not None:
        statement = statement.where(DecisionRecord.escalated.is_(filters.escalated))
    if filters.voted is not None:
        statement = statement.where(DecisionRecord.voted.is_(filters.voted))
    if filters.confidence_below is not None:
        # The confidence a reviewer sees: a corrected decision is certain (1.0), as the rows show it.
        effective_confidence = case((corrected.is_not(None), 1.0), else_=DecisionRecord.confidence)
        statement = statement.where(effective_confidence < filters.confidence_below)
    if filters.channel:
        statement = statement.where(Conversation.channel == filters.channel)
    if filters.user:
        statement = statement.where(Message.user == filters.user)
    if filters.since:
        statement = statement.where(DecisionRecord.created_at >= filters.since)
    if filters.until:
        statement = statement.where(DecisionRecord.created_at < filters.until)
    if filters.text:
        # The search is literal: % and _ typed by a reviewer match themselves.
        literal = filters.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        statement = statement.where(
            or_(func.lower(Message.text).like(pattern, escape="\\"),
                func.lower(DecisionRecord.reply_text).like(pattern, escape="\\"))
        )
    if filters.feedback:
        statement = statement.where(AnswerFeedback.value == filters.feedback)
    if filters.resolution == "open":
        statement = statement.where(Conversation.resolution.is_(None))
    elif filters.resolution:
        statement = statement.where(Conversation.resolution == filters.resolution)
    if filters.after_id is not None:
        statement = statement.where(DecisionRecord.id > filters.after_id)
    return statement


async def query_logs(session: AsyncSession, filters: LogFilter, *, oldest_first: bool = False) -> list[LogRow]:
    order = DecisionRecord.id.asc() if oldest_first else DecisionRecord.id.desc()
    statement = _log_query(filters).order_by(order).limit(filters.limit).offset(filters.offset)
    rows = []
    for decision, conversation, message, corrected_route, feedback in (await session.execute(statement)):
        rows.append(
            LogRow(
                id=decision.id,
                conversation_id=conversation.id,
                created_at=decision.created_at,
                channel=conversation.channel,
                thread_ts=conversation.thread_ts,
                user=message.user,
                text=message.text,
                route=corrected_route or decision.route,
                original_route=decision.route,
                confidence=1.0 if corrected_route else decision.confidence,
                decided_by="correction" if corrected_route else decision.decided_by,
                reason=decision.reason,
                escalated=decision.escalated,
                voted=decision.voted,
                vote_agreement=decision.vote_agreement,
                reply=decision.reply_text,
                latency_ms=decision.latency_ms,
                outcome=decision.outcome,
                sources=list(decision.sources or []),
                feedback=feedback,
                resolution=conversation.resolution,
            )
        )
    return rows


async def count_logs(session: AsyncSession, filters: LogFilter) -> int:
    subquery = _log_query(filters).subquery()
    return int((await session.execute(select(func.count()).select_from(subquery))).scalar_one())


async def escalation_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Escalation.state, func.count()).group_by(Escalation.state))
    return {state: count for state, count in rows}


# --- review: the dashboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionFact:
    """What the dashboard's charts aggregate, one per routing decision (route after corrections)."""

    created_at: datetime
    route: str
    decided_by: str
    escalated: bool
    voted: bool
    vote_agreement: float | None
    latency_ms: float | None
    conversation_id: int = 0
    # The asker's rating of this decision's answer, and what became of its thread (None while open).
    feedback: str | None = None
    resolution: str | None = None


async def decision_facts(session: AsyncSession, filters: LogFilter, *, limit: int = 50_000) -> list[DecisionFact]:
    """Chart data for every decision `filters` selects (its page and limit aside), newest `limit` first."""
    corrected = _latest_correction()
    statement = (
        _log_query(filters)
        .with_only_columns(
            DecisionRecord.created_at, func.coalesce(corrected, DecisionRecord.route),
            case((corrected.is_not(None), "correction"), else_=DecisionRecord.decided_by),
            DecisionRecord.escalated, DecisionRecord.voted, DecisionRecord.vote_agreement, DecisionRecord.latency_ms,
            DecisionRecord.conversation_id, AnswerFeedback.value, Conversation.resolution,
        )
        .order_by(DecisionRecord.id.desc())
        .limit(limit)
    )
    return [DecisionFact(*row) for row in await session.execute(statement)]


@dataclass(frozen=True)
class LLMCallFact:
    created_at: datetime
    purpose: str
    model: str
    route: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    latency_ms: float
    failed: bool
    provider: str


async def llm_call_facts(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None, limit: int = 50_000
) -> list[LLMCallFact]:
    """Token, latency and cost data of the LLM calls in a time window, newest `limit` first."""
    statement = select(
        LLMCall.created_at, LLMCall.purpose, LLMCall.model, LLMCall.route, LLMCall.input_tokens,
        LLMCall.output_tokens, LLMCall.cache_read_tokens, LLMCall.cache_creation_tokens, LLMCall.latency_ms,
        LLMCall.error.is_not(None), LLMCall.provider,
    )
    if since is not None:
        statement = statement.where(LLMCall.created_at >= since)
    if until is not None:
        statement = statement.where(LLMCall.created_at < until)
    rows = await session.execute(statement.order_by(LLMCall.id.desc()).limit(limit))
    return [LLMCallFact(*list(row)) for row in rows]


@dataclass(frozen=True)
class ConversationReview:
    """Everything recorded about one conversation, for the dashboard's conversation page."""

    conversation: Conversation
    messages: list[Message]
    decisions: list[DecisionRecord]
    votes: list[Vote]
    llm_calls: list[LLMCall]
    escalations: list[Escalation]
    # Every rating of the thread's answers (the asker's and staff's), oldest first.
    feedback: list[AnswerFeedback]


async def conversation_review(session: AsyncSession, conversation_id: int) -> ConversationReview | None:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    messages = (await session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id))).scalars()
    decisions = (await session.execute(
        select(DecisionRecord).where(DecisionRecord.conversation_id == conversation_id)
        .options(selectinload(DecisionRecord.corrections)).order_by(DecisionRecord.id))).scalars()
    votes = (await session.execute(
        select(Vote).join(DecisionRecord, DecisionRecord.id == Vote.decision_id)
        .where(DecisionRecord.conversation_id == conversation_id)
        .options(selectinload(Vote.samples)).order_by(Vote.id))).scalars()
    calls = (await session.execute(
        select(LLMCall).where(LLMCall.conversation_id == conversation_id).order_by(LLMCall.id))).scalars()
    escalations = (await session.execute(
        select(Escalation).where(Escalation.conversation_id == conversation_id)
        .options(selectinload(Escalation.events)).order_by(Escalation.id))).scalars()
    feedback = (await session.execute(
        select(AnswerFeedback).where(AnswerFeedback.conversation_id == conversation_id)
        .order_by(AnswerFeedback.id))).scalars()
    return ConversationReview(conversation, list(messages), list(decisions), list(votes), list(calls),
                              list(escalations), list(feedback))


async def current_route(session: AsyncSession, decision_id: int) -> str | None:
    """The route of a decision after its latest correction; None when there is no such decision."""
    statement = (select(func.coalesce(_latest_correction(), DecisionRecord.route))
                 .where(DecisionRecord.id == decision_id))
    return (await session.execute(statement)).scalar_one_or_none()


async def recent_conversations(
    session: AsyncSession, *, team: str, channel: str, limit: int = 50
) -> list[tuple[Conversation, str]]:
    """The newest conversations of a channel with their first message's text."""
    first_text = (
        select(Message.text).where(Message.conversation_id == Conversation.id).order_by(Message.id).limit(1)
        .correlate(Conversation).scalar_subquery()
    )
    statement = (
        select(Conversation, first_text).where(Conversation.team == team, Conversation.channel == channel)
        .order_by(Conversation.id.desc()).limit(limit)
    )
    return [(conversation, text or "") for conversation, text in await session.execute(statement)]


async def recent_escalations(session: AsyncSession, *, limit: int = 50) -> list[Escalation]:
    """Open escalations first (newest first), then the most recently closed ones."""
    is_open = case((Escalation.state.in_(("paged", "acknowledged")), 0), else_=1)
    statement = select(Escalation).order_by(is_open, Escalation.id.desc()).limit(limit)
    return list((await session.execute(statement)).scalars())


async def inbound_for_channel(
    session: AsyncSession, *, team: str, channel: str, limit: int = 500
) -> list[InboundEvent]:
    """The newest inbox rows of one channel (the playground's channel history), oldest first."""
    prefix = f"{team}:{channel}:".replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    statement = (
        select(InboundEvent).where(InboundEvent.dedupe_key.like(prefix + "%", escape="\\"))
        .order_by(InboundEvent.id.desc()).limit(limit)
    )
    return list(reversed(list((await session.execute(statement)).scalars())))
