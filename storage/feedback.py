"""Feedback on answers and what became of each thread: the rows behind 👍/👎 and conversations.resolution."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary import ConversationState, FeedbackValue, Resolution, ResolutionBasis
from storage.models import AnswerFeedback, Conversation, DecisionRecord, Message


@dataclass(frozen=True)
class AnsweredDecision:
    """The decision a bot answer (a message ts) belongs to, and who asked the question it answers."""

    decision_id: int
    conversation_id: int
    asker: str | None
    conversation_state: str


async def answered_decision(session: AsyncSession, *, team: str, channel: str, thread_ts: str,
                            reply_ts: str) -> AnsweredDecision | None:
    row = (await session.execute(
        select(DecisionRecord.id, Conversation.id, Message.user, Conversation.state)
        .join(Conversation, Conversation.id == DecisionRecord.conversation_id)
        .join(Message, Message.id == DecisionRecord.message_id)
        .where(Conversation.team == team, Conversation.channel == channel, Conversation.thread_ts == thread_ts,
               DecisionRecord.reply_ts == reply_ts)
        .order_by(DecisionRecord.id.desc()).limit(1))).one_or_none()
    return None if row is None else AnsweredDecision(row[0], row[1], row[2], row[3])


async def record_feedback(
    session: AsyncSession, answered: AnsweredDecision, *, user: str, value: FeedbackValue, now: datetime
) -> FeedbackValue | None:
    """Store `user`'s rating of the answer (replacing their earlier one); returns the earlier value, if any."""
    existing = (await session.execute(
        select(AnswerFeedback).where(AnswerFeedback.decision_id == answered.decision_id,
                                     AnswerFeedback.user == user).with_for_update())).scalar_one_or_none()
    await session.execute(update(Conversation).where(Conversation.id == answered.conversation_id)
                          .values(updated_at=now))
    if existing is None:
        session.add(AnswerFeedback(decision_id=answered.decision_id, conversation_id=answered.conversation_id,
                                   user=user, from_asker=user == answered.asker, value=value, created_at=now,
                                   updated_at=now))
        await session.flush()
        return None
    previous: FeedbackValue = existing.value  # type: ignore[assignment]
    existing.value = value
    existing.updated_at = now
    return previous


async def note_reason(session: AsyncSession, conversation_id: int, *, user: str, text: str, now: datetime) -> bool:
    """The asker's first message after rating the thread's latest answer 👎 says what was wrong with it."""
    latest = (await session.execute(
        select(DecisionRecord.id).where(DecisionRecord.conversation_id == conversation_id,
                                        DecisionRecord.reply_ts.is_not(None))
        .order_by(DecisionRecord.id.desc()).limit(1))).scalar_one_or_none()
    if latest is None:
        return False
    result = await session.execute(
        update(AnswerFeedback).where(AnswerFeedback.decision_id == latest, AnswerFeedback.user == user,
                                     AnswerFeedback.from_asker.is_(True), AnswerFeedback.value == "bad",
                                     AnswerFeedback.reason.is_(None))
        .values(reason=text[:4000], updated_at=now))
    return getattr(result, "rowcount", 0) == 1


async def set_resolution(
    session: AsyncSession, conversation_id: int, resolution: Resolution | None, *, basis: ResolutionBasis | None,
    now: datetime, unless: tuple[Resolution, ...] = (), only_if_open: bool = False,
) -> bool:
    """Record what became of the thread (None: it is open again). `unless` leaves a thread with one of those
    resolutions alone; `only_if_open` only settles a thread that is still open (another replica may have)."""
    statement = update(Conversation).where(Conversation.id == conversation_id)
    if only_if_open:
        statement = statement.where(Conversation.resolution.is_(None))
    if unless:
        statement = statement.where(Conversation.resolution.is_(None) | Conversation.resolution.not_in(unless))
    result = await session.execute(statement.values(
        resolution=resolution, resolution_basis=basis, resolved_at=None if resolution is None else now))
    return getattr(result, "rowcount", 0) == 1


@dataclass(frozen=True)
class QuietThread:
    """An open thread nobody wrote in since `cutoff`, with what the settling pass decides on."""

    conversation_id: int
    state: str
    last_role: str | None
    # The last answer the bot gave (its decision's reply is the thread's last message) and the asker's rating.
    last_is_answer: bool
    asker_feedback: str | None


async def quiet_threads(session: AsyncSession, *, cutoff: datetime, limit: int) -> list[QuietThread]:
    """Threads with no resolution and no message or rating since `cutoff`, oldest first."""
    conversations = (await session.execute(
        select(Conversation.id, Conversation.state)
        .where(Conversation.resolution.is_(None), Conversation.updated_at <= cutoff,
               Conversation.state.in_([ConversationState.OPEN, ConversationState.TAKEN_OVER,
                                       ConversationState.RESOLVED]))
        .order_by(Conversation.updated_at).limit(limit))).all()
    found: list[QuietThread] = []
    for conversation_id, state in conversations:
        last = (await session.execute(
            select(Message.role, Message.ts).where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc()).limit(1))).one_or_none()
        answer = (await session.execute(
            select(DecisionRecord.id, DecisionRecord.reply_ts, DecisionRecord.outcome)
            .where(DecisionRecord.conversation_id == conversation_id, DecisionRecord.reply_ts.is_not(None))
            .order_by(DecisionRecord.id.desc()).limit(1))).one_or_none()
        last_is_answer = (last is not None and answer is not None and last[0] == "assistant"
                          and answer[2] == "replied" and answer[1] == last[1])
        feedback = None if answer is None else (await session.execute(
            select(AnswerFeedback.value).where(AnswerFeedback.decision_id == answer[0],
                                               AnswerFeedback.from_asker.is_(True)))).scalar_one_or_none()
        found.append(QuietThread(conversation_id, state, last[0] if last else None, last_is_answer, feedback))
    return found


async def has_answer(session: AsyncSession, conversation_id: int) -> bool:
    """The bot answered in this thread at least once (a thanks then confirms it)."""
    count = (await session.execute(
        select(func.count()).select_from(DecisionRecord)
        .where(DecisionRecord.conversation_id == conversation_id, DecisionRecord.outcome == "replied",
               DecisionRecord.reply_ts.is_not(None)))).scalar_one()
    return int(count) > 0


async def thread_route(session: AsyncSession, conversation_id: int) -> tuple[str | None, str]:
    """The route of the thread's first decision (None before any) and the thread's channel."""
    channel = (await session.execute(select(Conversation.channel)
                                     .where(Conversation.id == conversation_id))).scalar_one()
    route = (await session.execute(
        select(DecisionRecord.route).where(DecisionRecord.conversation_id == conversation_id)
        .order_by(DecisionRecord.id).limit(1))).scalar_one_or_none()
    return route, channel

