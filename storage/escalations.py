"""The escalation records: opening one, its state transitions, delivery rounds and page messages, reports.

Every step that two replicas could race on is a conditional UPDATE whose row count says who won; the
caller owns the session and the transaction, as everywhere in storage/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary import OPEN_ESCALATION_STATES, ConversationState, EscalationState
from storage import sla as clocks
from storage.feedback import set_resolution
from storage.models import Conversation, DecisionRecord, Escalation, EscalationEvent, EscalationPage, Message
from storage.repositories import set_conversation_state


@dataclass(frozen=True)
class Due:
    """A paged escalation whose next step (a round to post, a re-page, expiry) is due."""

    id: int
    next_action_at: datetime | None
    repage_count: int
    paged_rounds: int
    level: int
    created_at: datetime
    conversation_state: str
    taken_over_by: str | None

    @property
    def current_round(self) -> int:
        return self.repage_count + 1

    @property
    def unpaged(self) -> bool:
        """The current round is not fully posted yet (Slack was down, or a crash)."""
        return self.paged_rounds < self.current_round


@dataclass(frozen=True)
class Thread:
    """Where an escalated conversation lives."""

    conversation_id: int
    channel: str
    thread_ts: str
    state: str


@dataclass(frozen=True)
class Transition:
    """A state change that took place: from which state, and the escalated thread."""

    previous: EscalationState
    thread: Thread


@dataclass(frozen=True)
class RequestContext:
    """What a "Get a human" press knows about its thread: the last customer message and route decision."""

    last_text: str | None
    decision_id: int | None
    route: str | None
    confidence: float | None
    earlier: int


# --- opening -------------------------------------------------------------------------------------


async def existing(session: AsyncSession, dedupe_key: str, conversation_id: int) -> int | None:
    """The escalation for this triggering message, or else the thread's open escalation."""
    by_key = (await session.execute(
        select(Escalation.id).where(Escalation.dedupe_key == dedupe_key))).scalar_one_or_none()
    return by_key if by_key is not None else await open_for(session, conversation_id)


async def open_for(session: AsyncSession, conversation_id: int) -> int | None:
    return (await session.execute(
        select(Escalation.id).where(Escalation.conversation_id == conversation_id,
                                    Escalation.state.in_(OPEN_ESCALATION_STATES)))).scalar_one_or_none()


async def insert(session: AsyncSession, escalation: Escalation, *, now: datetime) -> int:
    """Store a new escalation (state paged) with its first event; its thread becomes escalated."""
    session.add(escalation)
    await session.flush()
    session.add(EscalationEvent(
        escalation_id=escalation.id, from_state=None, to_state=EscalationState.PAGED, actor=escalation.requester,
        note=f"{escalation.trigger}: {escalation.reason}"[:2000], at=now))
    await set_conversation_state(session, escalation.conversation_id, ConversationState.ESCALATED, now=now)
    await set_resolution(session, escalation.conversation_id, "escalated", basis="escalation_opened", now=now)
    return escalation.id


async def request_context(session: AsyncSession, conversation_id: int) -> RequestContext:
    last_text = (await session.execute(
        select(Message.text).where(Message.conversation_id == conversation_id, Message.role == "user")
        .order_by(Message.id.desc()).limit(1))).scalar_one_or_none()
    decision = (await session.execute(
        select(DecisionRecord.id, DecisionRecord.route, DecisionRecord.confidence)
        .where(DecisionRecord.conversation_id == conversation_id)
        .order_by(DecisionRecord.id.desc()).limit(1))).one_or_none()
    earlier = (await session.execute(
        select(func.count()).select_from(Escalation).where(Escalation.conversation_id == conversation_id))).scalar_one()
    return RequestContext(last_text=last_text, decision_id=decision.id if decision else None,
                          route=decision.route if decision else None,
                          confidence=decision.confidence if decision else None, earlier=int(earlier))


# --- transitions ---------------------------------------------------------------------------------


async def transition(
    session: AsyncSession, escalation_id: int, *, to_state: EscalationState,
    from_states: Sequence[EscalationState], actor: str, note: str, now: datetime,
) -> Transition | None:
    """Move the escalation to `to_state` if it is in one of `from_states` (a double click or a replayed
    request changes nothing: None); resolving it resolves its thread too."""
    values: dict[str, Any] = {"state": to_state, "updated_at": now, "next_action_at": None}
    if to_state is EscalationState.ACKNOWLEDGED:
        values.update(acknowledged_by=actor, acknowledged_at=now)
    else:
        values.update(resolved_by=actor, resolved_at=now)
    row = (await session.execute(
        select(Escalation.state, Conversation.id, Conversation.channel, Conversation.thread_ts, Conversation.state)
        .join(Conversation, Conversation.id == Escalation.conversation_id)
        .where(Escalation.id == escalation_id))).one_or_none()
    if row is None:
        return None
    previous, conversation_id, channel, thread_ts, conversation_state = row
    if not await _changed(session, update(Escalation).where(
            Escalation.id == escalation_id, Escalation.state.in_(from_states)).values(**values)):
        return None
    session.add(EscalationEvent(escalation_id=escalation_id, from_state=previous, to_state=to_state, actor=actor,
                                note=note, at=now))
    if to_state is EscalationState.RESOLVED:
        await set_conversation_state(session, conversation_id, ConversationState.RESOLVED, now=now)
        await set_resolution(session, conversation_id, "resolved_by_human", basis="escalation_resolved", now=now)
        conversation_state = ConversationState.RESOLVED
        await clocks.record_resolution(session, conversation_id, at=now)
        # Resolved before anyone wrote in the thread: there is no first human reply to wait for.
        await clocks.stop(session, escalation_id=escalation_id, metrics=("first_human_response",), at=now)
    return Transition(EscalationState(previous), Thread(conversation_id, channel, thread_ts, conversation_state))


async def expire(session: AsyncSession, due: Due, *, note: str, now: datetime) -> Thread | None:
    """Close a paged escalation nobody acknowledged; None when another replica got there first. The thread
    goes back to the bot (open) if it is still waiting for a person."""
    if not await _changed(session, update(Escalation).where(
            Escalation.id == due.id, Escalation.state == EscalationState.PAGED,
            Escalation.next_action_at == due.next_action_at,
    ).values(state=EscalationState.EXPIRED, next_action_at=None, updated_at=now)):
        return None
    session.add(EscalationEvent(escalation_id=due.id, from_state=EscalationState.PAGED,
                                to_state=EscalationState.EXPIRED, actor=None, note=note, at=now))
    await clocks.stop(session, escalation_id=due.id, metrics=("first_human_response", "resolution"), at=now)
    thread = await thread_of(session, due.id)
    # Nobody came: unless the thread was settled otherwise meanwhile, it ends here (a new question reopens it).
    await set_resolution(session, thread.conversation_id, "abandoned", basis="escalation_expired", now=now,
                         unless=("resolved_by_bot", "resolved_by_human"))
    if thread.state == ConversationState.ESCALATED:
        await set_conversation_state(session, thread.conversation_id, ConversationState.OPEN, now=now)
    return thread


async def thread_of(session: AsyncSession, escalation_id: int) -> Thread:
    conversation_id, channel, thread_ts, state = (await session.execute(
        select(Conversation.id, Conversation.channel, Conversation.thread_ts, Conversation.state)
        .join(Escalation, Escalation.conversation_id == Conversation.id)
        .where(Escalation.id == escalation_id))).one()
    return Thread(conversation_id, channel, thread_ts, state)


# --- delivery rounds ------------------------------------------------------------------------------


def _due_query() -> Any:
    return (select(Escalation.id, Escalation.next_action_at, Escalation.repage_count, Escalation.paged_rounds,
                   Escalation.level, Escalation.created_at, Conversation.state, Conversation.taken_over_by)
            .join(Conversation, Conversation.id == Escalation.conversation_id)
            .where(Escalation.state == EscalationState.PAGED))


async def due(session: AsyncSession, *, now: datetime, limit: int) -> list[Due]:
    """Paged escalations whose next action is due, the longest waiting first."""
    rows = await session.execute(
        _due_query().where(Escalation.next_action_at <= now).order_by(Escalation.next_action_at).limit(limit))
    return [Due(*row) for row in rows]


async def due_unpaged(session: AsyncSession, escalation_id: int, *, now: datetime) -> Due | None:
    """The escalation, when its current round is still to be posted and nobody holds it."""
    row = (await session.execute(_due_query().where(
        Escalation.id == escalation_id, Escalation.next_action_at <= now,
        Escalation.paged_rounds <= Escalation.repage_count))).one_or_none()
    return Due(*row) if row is not None else None


async def claim(
    session: AsyncSession, due: Due, *, until: datetime, now: datetime, repage_level: int | None = None,
    note: str = "",
) -> bool:
    """Optimistic claim: only the replica whose UPDATE still sees the old due time goes on. With
    `repage_level`, the claim also opens the next round (a re-page) at that level."""
    values: dict[str, Any] = {"next_action_at": until, "updated_at": now}
    if repage_level is not None:
        values.update(repage_count=Escalation.repage_count + 1, level=repage_level)
    claimed = await _changed(session, update(Escalation).where(
        Escalation.id == due.id, Escalation.state == EscalationState.PAGED,
        Escalation.next_action_at == due.next_action_at, Escalation.repage_count == due.repage_count,
    ).values(**values))
    if claimed and repage_level is not None:
        session.add(EscalationEvent(escalation_id=due.id, from_state=EscalationState.PAGED,
                                    to_state=EscalationState.PAGED, actor=None, at=now, note=note))
    return claimed


async def load(session: AsyncSession, escalation_id: int) -> tuple[Escalation, Conversation]:
    """The escalation as stored now, and its conversation."""
    escalation = await session.get(Escalation, escalation_id, populate_existing=True)
    assert escalation is not None
    conversation = await session.get(Conversation, escalation.conversation_id)
    assert conversation is not None
    return escalation, conversation


async def round_pages(session: AsyncSession, escalation_id: int, round_no: int) -> dict[str, EscalationPage]:
    """The page messages of one round, by target, whether posted yet or not."""
    rows = await session.execute(select(EscalationPage).where(
        EscalationPage.escalation_id == escalation_id, EscalationPage.round == round_no))
    return {page.target: page for page in rows.scalars()}


async def posted_pages(session: AsyncSession, escalation_id: int) -> list[EscalationPage]:
    rows = await session.execute(select(EscalationPage).where(
        EscalationPage.escalation_id == escalation_id, EscalationPage.ts.is_not(None)).order_by(EscalationPage.id))
    return list(rows.scalars())


def add_page(session: AsyncSession, *, escalation_id: int, round_no: int, level: int, target: str, channel: str,
             now: datetime) -> None:
    """Record a page message before posting it, so a post whose outcome is lost is looked for, not repeated."""
    session.add(EscalationPage(escalation_id=escalation_id, round=round_no, level=level, target=target,
                               channel=channel, ts=None, created_at=now))


async def record_page(session: AsyncSession, *, escalation_id: int, round_no: int, target: str, channel: str,
                      ts: str, now: datetime) -> None:
    await session.execute(update(EscalationPage).where(
        EscalationPage.escalation_id == escalation_id, EscalationPage.round == round_no,
        EscalationPage.target == target,
    ).values(channel=channel, ts=ts, posted_at=now))


async def finish_round(
    session: AsyncSession, escalation_id: int, *, round_no: int, channel: str, ts: str, next_at: datetime,
    note: str, now: datetime,
) -> bool:
    """Count round `round_no` as posted (its first message is the one the escalation points at) and schedule
    the next step; returns whether the escalation is still paged."""
    await session.execute(update(Escalation).where(
        Escalation.id == escalation_id, Escalation.paged_rounds < round_no,
    ).values(paged_rounds=round_no, page_channel=channel, page_ts=ts, updated_at=now))
    await session.execute(update(Escalation).where(
        Escalation.id == escalation_id, Escalation.state == EscalationState.PAGED,
        Escalation.repage_count == round_no - 1,
    ).values(next_action_at=next_at))
    session.add(EscalationEvent(escalation_id=escalation_id, from_state=EscalationState.PAGED,
                                to_state=EscalationState.PAGED, actor=None, at=now, note=note))
    state = (await session.execute(select(Escalation.state).where(Escalation.id == escalation_id))).scalar_one()
    return state == EscalationState.PAGED


async def retry_round(session: AsyncSession, escalation_id: int, *, round_no: int, at: datetime,
                      now: datetime) -> None:
    """Round `round_no` reached nobody: the next sweep after `at` tries it again."""
    await session.execute(update(Escalation).where(
        Escalation.id == escalation_id, Escalation.state == EscalationState.PAGED,
        Escalation.paged_rounds < round_no,
    ).values(next_action_at=at, updated_at=now))


# --- reports ---------------------------------------------------------------------------------------


async def listing(
    session: AsyncSession, *, open_only: bool = False, limit: int = 50
) -> list[tuple[Escalation, str, str, int]]:
    """Newest first: each escalation with its thread's channel and ts, and how many page messages it posted."""
    page_count = (select(func.count()).select_from(EscalationPage)
                  .where(EscalationPage.escalation_id == Escalation.id, EscalationPage.ts.is_not(None))
                  .scalar_subquery())
    statement = (
        select(Escalation, Conversation.channel, Conversation.thread_ts, page_count)
        .join(Conversation, Conversation.id == Escalation.conversation_id)
        .order_by(Escalation.created_at.desc(), Escalation.id.desc()).limit(limit)
    )
    if open_only:
        statement = statement.where(Escalation.state.in_(OPEN_ESCALATION_STATES))
    return [(e, channel, thread_ts, int(pages)) for e, channel, thread_ts, pages in await session.execute(statement)]


async def _changed(session: AsyncSession, statement: Any) -> bool:
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return getattr(result, "rowcount", 0) == 1
