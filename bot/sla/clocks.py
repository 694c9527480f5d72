"""Starting a thread's clocks with the targets that apply to it (the pipeline and escalations call these), and
the hook for resolutions by the bot."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.sla.policy import SlaPolicy
from bot.vocabulary import SlaMetric
from storage import sla as clocks


async def start_clock(
    session: AsyncSession, policy: SlaPolicy, metric: SlaMetric, *, conversation_id: int,
    escalation_id: int | None, route: str | None, channel: str, started_at: datetime,
) -> None:
    schedule = policy.schedule(metric, started_at, route=route, channel=channel)
    await clocks.start(session, clocks.ClockStart(
        metric=metric, conversation_id=conversation_id, escalation_id=escalation_id, route=route,
        started_at=started_at, target_s=schedule.target_s, warn_due_at=schedule.warn_at,
        deadline=schedule.deadline))


async def start_escalation_clocks(
    session: AsyncSession, policy: SlaPolicy, *, escalation_id: int, conversation_id: int, route: str | None,
    channel: str, paged_at: datetime,
) -> None:
    """A page went out: the first human response is due after it, the resolution after the customer's first
    message (about this matter: a thread escalated again counts from its first message since the last close)."""
    await start_clock(session, policy, "first_human_response", conversation_id=conversation_id,
                      escalation_id=escalation_id, route=route, channel=channel, started_at=paged_at)
    await start_clock(session, policy, "resolution", conversation_id=conversation_id, escalation_id=escalation_id,
                      route=route, channel=channel,
                      started_at=await clocks.resolution_started_at(session, conversation_id,
                                                                    escalation_id=escalation_id))


async def record_bot_resolution(
    session: AsyncSession, policy: SlaPolicy, *, conversation_id: int, route: str | None, channel: str,
    at: datetime,
) -> None:
    """The hook for threads the bot resolves without a person (feedback, a resolution state): the thread's
    time to resolution, from the customer's first message, against the route's target (the first resolution
    of a thread counts). Call it in the transaction that records the resolution."""
    await start_clock(session, policy, "resolution", conversation_id=conversation_id, escalation_id=None,
                      route=route, channel=channel,
                      started_at=await clocks.resolution_started_at(session, conversation_id))
    await clocks.record_resolution(session, conversation_id, at=at)
