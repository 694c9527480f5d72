"""Response-time clocks: started once per thread or escalation, met or stopped, warned and breached once.

Starting is INSERT … ON CONFLICT DO NOTHING on the clock's key, and every later step a conditional UPDATE
whose row count says which replica won, so several replicas sweeping at once warn and count each clock once.
The caller owns the session and the transaction, as everywhere in storage/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary import OPEN_ESCALATION_STATES, SlaMetric
from storage.models import Conversation, Escalation, Message, SlaClock
from storage.repositories import _insert


@dataclass(frozen=True)
class ClockStart:
    """A clock to start: what it measures, for which thread (and escalation), from when, due when."""

    metric: SlaMetric
    conversation_id: int
    escalation_id: int | None
    route: str | None
    started_at: datetime
    target_s: float | None
    warn_due_at: datetime | None
    deadline: datetime | None

    @property
    def key(self) -> str:
        owner = f"e{self.escalation_id}" if self.escalation_id is not None else f"c{self.conversation_id}"
        return f"{self.metric}:{owner}"


@dataclass(frozen=True)
class DueClock:
    """A running clock whose warning or deadline has come, with the thread it belongs to."""

    id: int
    metric: SlaMetric
    route: str | None
    target_s: float
    started_at: datetime
    deadline: datetime
    escalation_id: int | None
    channel: str
    thread_ts: str
    permalink: str | None


@dataclass(frozen=True)
class MetClock:
    id: int
    metric: SlaMetric
    started_at: datetime
    met_at: datetime


async def start(session: AsyncSession, clock: ClockStart) -> None:
    """Start the clock unless it already runs (a retried message, another replica)."""
    statement = _insert(session, SlaClock).values(
        key=clock.key, metric=clock.metric, conversation_id=clock.conversation_id,
        escalation_id=clock.escalation_id, route=clock.route, started_at=clock.started_at, target_s=clock.target_s,
        warn_due_at=clock.warn_due_at, deadline=clock.deadline,
    ).on_conflict_do_nothing(index_elements=["key"])
    await session.execute(statement)


async def resolution_started_at(session: AsyncSession, conversation_id: int, *,
                                escalation_id: int | None = None) -> datetime:
    """When the customer first wrote about what this escalation (or, with None, the thread) is to resolve: the
    thread's first message (the first-response clock's start, else the conversation's creation), or, when an
    earlier escalation of the thread already closed, the first customer message after it closed."""
    earlier_end = await session.scalar(select(func.max(func.coalesce(Escalation.resolved_at, Escalation.updated_at)))
                                       .where(Escalation.conversation_id == conversation_id,
                                              Escalation.id != escalation_id,
                                              Escalation.state.not_in(OPEN_ESCALATION_STATES)))
    if earlier_end is not None:
        since: datetime | None = await session.scalar(select(func.min(Message.created_at)).where(
            Message.conversation_id == conversation_id, Message.role == "user", Message.created_at >= earlier_end))
        return since or earlier_end
    first = await session.scalar(select(SlaClock.started_at).where(
        SlaClock.key == f"first_response:c{conversation_id}"))
    if first is not None:
        return first
    created: datetime = (await session.execute(
        select(Conversation.created_at).where(Conversation.id == conversation_id))).scalar_one()
    return created


async def meet(session: AsyncSession, *, conversation_id: int, metric: SlaMetric, at: datetime) -> bool:
    """What the running clock of this metric waits for happened (the bot posted, a person wrote)."""
    result = await session.execute(update(SlaClock).where(
        SlaClock.conversation_id == conversation_id, SlaClock.metric == metric, SlaClock.met_at.is_(None),
        SlaClock.stopped_at.is_(None), SlaClock.started_at <= at,
    ).values(met_at=at).execution_options(synchronize_session=False))
    return getattr(result, "rowcount", 0) > 0


async def record_resolution(session: AsyncSession, conversation_id: int, *, at: datetime) -> bool:
    """The thread is resolved: its running time-to-resolution clock is met. Every resolution reaches the
    clocks here: a resolved escalation (storage.escalations.transition), and a thread the bot resolves
    (bot.sla.clocks.record_bot_resolution, which starts that thread's clock first)."""
    return await meet(session, conversation_id=conversation_id, metric="resolution", at=at)


async def stop(session: AsyncSession, *, escalation_id: int, metrics: Sequence[SlaMetric], at: datetime) -> None:
    """The escalation ended without what these clocks wait for: they stop, unmet."""
    await session.execute(update(SlaClock).where(
        SlaClock.escalation_id == escalation_id, SlaClock.metric.in_(metrics), SlaClock.met_at.is_(None),
        SlaClock.stopped_at.is_(None),
    ).values(stopped_at=at).execution_options(synchronize_session=False))


# --- the monitor's steps ----------------------------------------------------------------------------


def _due_query() -> Any:
    return (select(SlaClock.id, SlaClock.metric, SlaClock.route, SlaClock.target_s, SlaClock.started_at,
                   SlaClock.deadline, SlaClock.escalation_id, Conversation.channel, Conversation.thread_ts,
                   Escalation.permalink)
            .join(Conversation, Conversation.id == SlaClock.conversation_id)
            .outerjoin(Escalation, Escalation.id == SlaClock.escalation_id))


async def due_warnings(session: AsyncSession, *, now: datetime, limit: int) -> list[DueClock]:
    """Running clocks past their warning time and not yet at their deadline, never warned."""
    rows = await session.execute(_due_query().where(
        SlaClock.warned_at.is_(None), SlaClock.breached_at.is_(None), SlaClock.met_at.is_(None),
        SlaClock.stopped_at.is_(None), SlaClock.warn_due_at <= now, SlaClock.deadline > now,
    ).order_by(SlaClock.deadline).limit(limit))
    return [DueClock(*row) for row in rows]


async def due_breaches(session: AsyncSession, *, now: datetime, limit: int) -> list[DueClock]:
    """Clocks past their deadline, not recorded as breached, that were not met (or stopped) in time."""
    rows = await session.execute(_due_query().where(
        SlaClock.breached_at.is_(None), SlaClock.deadline <= now,
        or_(SlaClock.met_at.is_(None), SlaClock.met_at > SlaClock.deadline),
        or_(SlaClock.stopped_at.is_(None), SlaClock.stopped_at > SlaClock.deadline),
    ).order_by(SlaClock.deadline).limit(limit))
    return [DueClock(*row) for row in rows]


async def claim_warning(session: AsyncSession, clock_id: int, *, now: datetime) -> bool:
    return await _changed(session, update(SlaClock).where(
        SlaClock.id == clock_id, SlaClock.warned_at.is_(None)).values(warned_at=now))


async def release_warning(session: AsyncSession, clock_id: int, *, claimed_at: datetime) -> None:
    """The warning could not be posted: the next pass (on any replica) tries again."""
    await session.execute(update(SlaClock).where(
        SlaClock.id == clock_id, SlaClock.warned_at == claimed_at).values(warned_at=None)
        .execution_options(synchronize_session=False))


async def claim_breach(session: AsyncSession, clock: DueClock) -> bool:
    return await _changed(session, update(SlaClock).where(
        SlaClock.id == clock.id, SlaClock.breached_at.is_(None)).values(breached_at=clock.deadline))


async def unmeasured(session: AsyncSession, *, limit: int) -> list[MetClock]:
    """Met clocks whose counted time is not written yet."""
    rows = await session.execute(
        select(SlaClock.id, SlaClock.metric, SlaClock.started_at, SlaClock.met_at)
        .where(SlaClock.met_at.is_not(None), SlaClock.elapsed_s.is_(None)).order_by(SlaClock.id).limit(limit))
    # The metric column holds only SlaMetric values (a CHECK constraint); met_at is not NULL by the query.
    return [MetClock(clock_id, cast(SlaMetric, metric), started_at, met_at)
            for clock_id, metric, started_at, met_at in rows if met_at is not None]


async def record_elapsed(session: AsyncSession, clock_id: int, *, elapsed_s: float) -> bool:
    return await _changed(session, update(SlaClock).where(
        SlaClock.id == clock_id, SlaClock.elapsed_s.is_(None)).values(elapsed_s=elapsed_s))


# --- reports -----------------------------------------------------------------------------------------


async def clocks_since(session: AsyncSession, since: datetime | None) -> list[SlaClock]:
    """Clocks started since `since` (all when None), oldest first."""
    statement = select(SlaClock).order_by(SlaClock.started_at, SlaClock.id)
    if since is not None:
        statement = statement.where(SlaClock.started_at >= since)
    return list((await session.execute(statement)).scalars())


async def running_near_deadline(session: AsyncSession, *, now: datetime, limit: int) -> list[tuple[SlaClock, str,
                                                                                                     str]]:
    """Running clocks with a target whose warning time has come (or that are already late), the nearest
    deadline first, with the thread's channel and ts."""
    rows = await session.execute(
        select(SlaClock, Conversation.channel, Conversation.thread_ts)
        .join(Conversation, Conversation.id == SlaClock.conversation_id)
        .where(SlaClock.met_at.is_(None), SlaClock.stopped_at.is_(None), SlaClock.warn_due_at <= now)
        .order_by(SlaClock.deadline).limit(limit))
    return [(clock, channel, thread_ts) for clock, channel, thread_ts in rows]


async def _changed(session: AsyncSession, statement: Any) -> bool:
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return getattr(result, "rowcount", 0) == 1


