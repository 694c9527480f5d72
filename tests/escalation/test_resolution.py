"""What became of a thread when people took it: escalations opened, resolved or expired, staff answers."""

from __future__ import annotations

from sqlalchemy import select

from bot.clock import ManualClock
from bot.runtime import Runtime
from storage.models import Conversation
from tests.escalation.conftest import BASE_TOML, Factory, customer_message, escalation_config


async def resolution(runtime: Runtime, conversation_id: int) -> tuple[str | None, str | None]:
    async with runtime.db.sessions() as session:
        conversation = (await session.execute(
            select(Conversation).where(Conversation.id == conversation_id))).scalar_one()
        return conversation.resolution, conversation.resolution_basis


async def only_conversation(runtime: Runtime) -> int:
    async with runtime.db.sessions() as session:
        [conversation_id] = (await session.execute(select(Conversation.id))).scalars().all()
        return int(conversation_id)


async def test_an_escalation_nobody_acknowledged_leaves_the_thread_abandoned(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    runtime = await make_runtime(escalation_config(BASE_TOML + "expire_after_h = 1\n"))
    result = await runtime.pipeline.handle(customer_message())
    conversation_id = await only_conversation(runtime)
    assert result.outcome == "escalated"
    assert await resolution(runtime, conversation_id) == ("escalated", "escalation_opened")

    for _ in range(8):  # re-pages, then expiry after an hour
        clock.advance(600)
        await runtime.escalations.sweep()
    assert await resolution(runtime, conversation_id) == ("abandoned", "escalation_expired")
    # The window does not settle it again.
    clock.advance(25 * 3600)
    assert await runtime.feedback.settle() == 0


async def test_a_thread_staff_took_over_settles_as_resolved_by_a_human(
    make_runtime: Factory, clock: ManualClock,
) -> None:
    runtime = await make_runtime()
    msg = customer_message("how do I change the email address on my account?")
    assert (await runtime.pipeline.handle(msg)).outcome == "replied"
    assert await runtime.pipeline.record_staff_message(
        team=msg.team, channel=msg.channel, thread_ts=msg.ts, user="U0STAFF", text="I've changed it for you",
        ts="1700000999.000001")
    conversation_id = await only_conversation(runtime)
    clock.advance(24 * 3600 + 1)
    assert await runtime.feedback.settle() == 1
    assert await resolution(runtime, conversation_id) == ("resolved_by_human", "staff_answer")
