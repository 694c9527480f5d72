"""Repository functions: each takes the caller's session and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    Conversation,
    DecisionRecord,
    InboundEvent,
    LLMCall,
    Message,
    RouteCorrection,
    Vote,
    VoteSampleRow,
)


def _insert(session: AsyncSession, model: Any) -> Any:
    """INSERT ... ON CONFLICT support for the dialect in use."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


# The hot path (every message) runs prebuilt Core statements on the tables, with its values passed at
# execution: building an ORM-enabled statement per call, with a bound parameter per value, cost more CPU
# than running it (about 0.3 ms a statement). An UPDATE without .values() sets the columns named in the
# parameters; the WHERE clause's parameters are prefixed with b_ so they never clash with a column.
def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


INBOUND, CONVERSATIONS, MESSAGES = _table(InboundEvent), _table(Conversation), _table(Message)
DECISIONS, LLM_CALLS = _table(DecisionRecord), _table(LLMCall)


def _claimable(now: Any) -> Any:
    """Pending and due (a release sets a retry time), or processing with a lapsed lease."""
    return or_(
        and_(INBOUND.c.status == "pending",
             or_(INBOUND.c.lease_expires_at.is_(None), INBOUND.c.lease_expires_at <= now)),
        and_(INBOUND.c.status == "processing", INBOUND.c.lease_expires_at < now),
    )


_INBOUND_BY_ID_AND_OWNER = INBOUND.update().where(
    INBOUND.c.id == bindparam("b_id"), INBOUND.c.lease_owner == bindparam("b_owner"))
_INBOUND_BY_ID = INBOUND.update().where(INBOUND.c.id == bindparam("b_id"))
_CLAIM = (
    INBOUND.update()
    .where(INBOUND.c.id == bindparam("b_id"), _claimable(bindparam("b_now")))
    .values(status="processing", attempts=INBOUND.c.attempts + 1)
    .returning(*INBOUND.c)
)
_CONVERSATION_BY_ID = CONVERSATIONS.update().where(CONVERSATIONS.c.id == bindparam("b_id"))
_CONVERSATION_BY_THREAD = select(CONVERSATIONS.c.id, CONVERSATIONS.c.state).where(
    CONVERSATIONS.c.team == bindparam("b_team"), CONVERSATIONS.c.channel == bindparam("b_channel"),
    CONVERSATIONS.c.thread_ts == bindparam("b_thread_ts"))
_INSERT_MESSAGE = MESSAGES.insert().returning(MESSAGES.c.id)
_INSERT_DECISION = DECISIONS.insert().returning(DECISIONS.c.id)
_DECISION_BY_ID = DECISIONS.update().where(DECISIONS.c.id == bindparam("b_id"))
_INSERT_LLM_CALLS = LLM_CALLS.insert().returning(LLM_CALLS.c.id, sort_by_parameter_order=True)
# Per dialect: INSERT ... ON CONFLICT DO NOTHING RETURNING, for the inbox and new conversations.
_INSERT_INBOUND: dict[str, Any] = {}
_INSERT_CONVERSATION: dict[str, Any] = {}


def _on_conflict_insert(session: AsyncSession, cache: dict[str, Any], table: Table, keys: list[str],
                        returning: tuple[Any, ...]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in cache:
        cache[dialect] = _insert(session, table).on_conflict_do_nothing(index_elements=keys).returning(*returning)
    return cache[dialect]


# --- inbox / dedupe ---------------------------------------------------------------------------


async def insert_inbound(
    session: AsyncSession, *, dedupe_key: str, event_id: str, source: str, payload: dict[str, Any],
    now: datetime,
) -> int | None:
    """Record a newly received message; None when it was seen before (the duplicate is counted)."""
    [inserted] = await insert_inbound_many(
        session, [{"dedupe_key": dedupe_key, "event_id": event_id, "source": source, "payload": payload}], now=now)
    return inserted


async def insert_inbound_many(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, now: datetime
) -> list[int | None]:
    """`insert_inbound` for messages received together, in one statement. `rows` hold dedupe_key,
    event_id, source and payload; the answer is in their order, None for each one seen before."""
    first: dict[str, int] = {}
    for index, row in enumerate(rows):
        first.setdefault(row["dedupe_key"], index)
    # Rows go in key order, and so do the updates below: two replicas writing overlapping batches (a
    # message on one, its retry on the other) then wait for each other's keys in the same order instead
    # of deadlocking, which on PostgreSQL aborted one batch and answered its acks with 500.
    statement = _on_conflict_insert(session, _INSERT_INBOUND, INBOUND, ["dedupe_key"],
                                    (INBOUND.c.id, INBOUND.c.dedupe_key))
    values = [{**rows[index], "status": "pending", "attempts": 0, "duplicates": 0, "received_at": now}
              for key, index in sorted(first.items())]
    inserted = {key: inbox_id for inbox_id, key in (await session.execute(statement, values)).all()}
    ids = [inserted.get(row["dedupe_key"]) if first[row["dedupe_key"]] == index else None
           for index, row in enumerate(rows)]
    repeats: dict[str, int] = {}
    for row, inbox_id in zip(rows, ids, strict=True):
        if inbox_id is None:
            repeats[row["dedupe_key"]] = repeats.get(row["dedupe_key"], 0) + 1
    for key, count in sorted(repeats.items()):
        await session.execute(
            update(InboundEvent).where(InboundEvent.dedupe_key == key)
            .values(duplicates=InboundEvent.duplicates + count)
        )
    return ids


async def claim_inbound(
    session: AsyncSession, inbox_id: int, *, owner: str, now: datetime, lease: timedelta
) -> InboundEvent | None:
    """Take the lease on a pending event (or one whose lease ran out); None if another holds it."""
    row = (await session.execute(
        _CLAIM, {"b_id": inbox_id, "b_now": now, "lease_owner": owner, "lease_expires_at": now + lease}
    )).one_or_none()
    # A plain object holding the row: the caller reads it after the transaction, never through the session.
    return None if row is None else InboundEvent(**row._mapping)


async def renew_lease(session: AsyncSession, inbox_id: int, *, owner: str, until: datetime) -> bool:
    result = await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id == inbox_id, InboundEvent.lease_owner == owner, InboundEvent.status == "processing")
        .values(lease_expires_at=until)
    )
    return getattr(result, "rowcount", 0) == 1


async def release_own_leases(session: AsyncSession, *, owner: str, now: datetime) -> int:
    """At start-up: what this instance id held before a crash is nobody's now; make it claimable."""
    result = await session.execute(
        update(InboundEvent)
        .where(InboundEvent.lease_owner == owner, InboundEvent.status == "processing")
        .values(lease_expires_at=now - timedelta(seconds=1))
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def claimable_inbound(session: AsyncSession, *, now: datetime, limit: int = 50) -> list[int]:
    """Events a crashed or slow worker left behind: pending and due, or processing past the lease."""
    statement = (
        select(InboundEvent.id)
        .where(_claimable(now))
        .order_by(InboundEvent.id)
        .limit(limit)
    )
    return list((await session.execute(statement)).scalars())


async def release_inbound(
    session: AsyncSession, inbox_id: int, *, owner: str, retry_at: datetime, error: str
) -> None:
    """Give the event back for a later retry (e.g. Slack was unreachable)."""
    await session.execute(
        update(InboundEvent)
        .where(InboundEvent.id == inbox_id, InboundEvent.lease_owner == owner)
        .values(status="pending", lease_expires_at=retry_at, error=error)
    )


async def finish_inbound(
    session: AsyncSession, inbox_id: int, *, owner: str, outcome: str, now: datetime,
    status: str = "done", error: str | None = None,
) -> bool:
    result = await session.execute(_INBOUND_BY_ID_AND_OWNER, {
        "b_id": inbox_id, "b_owner": owner, "status": status, "outcome": outcome, "finished_at": now,
        "error": error, "lease_expires_at": None})
    return getattr(result, "rowcount", 0) == 1


async def set_reply_intent(session: AsyncSession, inbox_id: int, text: str, *, outcome: str) -> None:
    await session.execute(_INBOUND_BY_ID, {"b_id": inbox_id, "reply_intent": text, "outcome": outcome})


async def set_stream(session: AsyncSession, inbox_id: int, *, owner: str, ts: str) -> None:
    """A streamed answer started at `ts`: recorded before anything else, so recovery finds it."""
    await session.execute(_INBOUND_BY_ID_AND_OWNER, {"b_id": inbox_id, "b_owner": owner, "stream_ts": ts})


async def complete_inbound(
    session: AsyncSession, inbox_id: int, *, owner: str, reply_ts: str, outcome: str, now: datetime,
    error: str | None = None,
) -> None:
    """The reply is out: record where, and finish the event, in the caller's transaction."""
    await session.execute(_INBOUND_BY_ID_AND_OWNER, {
        "b_id": inbox_id, "b_owner": owner, "reply_ts": reply_ts, "status": "done", "outcome": outcome,
        "finished_at": now, "lease_expires_at": None, "error": error[:2000] if error else None})


async def inbox_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(InboundEvent.status, func.count()).group_by(InboundEvent.status))
    return {status: count for status, count in rows}


# --- conversations and messages ---------------------------------------------------------------


@dataclass(frozen=True)
class ConversationRef:
    id: int
    state: str
    created: bool


async def open_conversation(
    session: AsyncSession, *, source: str, team: str, channel: str, thread_ts: str, user: str, now: datetime,
    likely_new: bool,
) -> ConversationRef:
    """The thread's conversation, created on first sight, in one statement in the common case:
    a top-level message (`likely_new`) tries the insert first, a thread reply looks it up first."""

    async def insert() -> int | None:
        statement = _on_conflict_insert(session, _INSERT_CONVERSATION, CONVERSATIONS,
                                        ["team", "channel", "thread_ts"], (CONVERSATIONS.c.id,))
        return (await session.execute(statement, {
            "source": source, "team": team, "channel": channel, "thread_ts": thread_ts, "user": user,
            "state": "open", "created_at": now, "updated_at": now})).scalar_one_or_none()

    async def lookup() -> ConversationRef | None:
        row = (await session.execute(
            _CONVERSATION_BY_THREAD, {"b_team": team, "b_channel": channel, "b_thread_ts": thread_ts}
        )).one_or_none()
        return None if row is None else ConversationRef(row[0], row[1], created=False)

    if not likely_new:
        found = await lookup()
        if found is not None:
            return found
    created_id = await insert()
    if created_id is not None:
        return ConversationRef(created_id, "open", created=True)
    found = await lookup()
    assert found is not None, "conversation vanished between insert and select"
    return found


async def find_conversation(
    session: AsyncSession, *, team: str, channel: str, thread_ts: str
) -> Conversation | None:
    statement = select(Conversation).where(
        Conversation.team == team, Conversation.channel == channel, Conversation.thread_ts == thread_ts
    )
    return (await session.execute(statement.execution_options(populate_existing=True))).scalar_one_or_none()


async def set_conversation_state(
    session: AsyncSession, conversation_id: int, state: str, *, now: datetime, by: str | None = None
) -> None:
    values: dict[str, Any] = {"state": state, "updated_at": now}
    if state == "taken_over":
        values.update(taken_over_by=by, taken_over_at=now)
    await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(**values))


async def find_message(session: AsyncSession, conversation_id: int, ts: str) -> Message | None:
    statement = select(Message).where(Message.conversation_id == conversation_id, Message.ts == ts)
    return (await session.execute(statement.limit(1))).scalar_one_or_none()


async def add_message(
    session: AsyncSession, *, conversation_id: int, role: str, text: str, now: datetime,
    user: str | None = None, ts: str | None = None, event_id: str | None = None, touch: bool = True,
) -> int:
    """Store a message and return its id; `touch` bumps the conversation's updated_at (skip it when the
    caller just did)."""
    message_id: int = (await session.execute(_INSERT_MESSAGE, {
        "conversation_id": conversation_id, "role": role, "user": user, "ts": ts, "text": text,
        "event_id": event_id, "created_at": now})).scalar_one()
    if touch:
        await session.execute(_CONVERSATION_BY_ID, {"b_id": conversation_id, "updated_at": now})
    return message_id


async def thread_messages(
    session: AsyncSession, conversation_id: int, *, before_id: int | None = None, limit: int = 100
) -> list[Message]:
    """The newest `limit` messages of a conversation, oldest first."""
    statement = select(Message).where(Message.conversation_id == conversation_id)
    if before_id is not None:
        statement = statement.where(Message.id < before_id)
    rows = (await session.execute(statement.order_by(Message.id.desc()).limit(limit))).scalars()
    return list(reversed(list(rows)))


# --- routing, votes, LLM calls ----------------------------------------------------------------


async def decision_for_message(session: AsyncSession, message_id: int) -> DecisionRecord | None:
    statement = select(DecisionRecord).where(DecisionRecord.message_id == message_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def add_decision(session: AsyncSession, decision: DecisionRecord) -> int:
    """Insert a decision built as a model object (unset columns take their defaults); returns its id."""
    values = {column.key: getattr(decision, column.key) for column in DECISIONS.columns
              if getattr(decision, column.key) is not None}
    decision_id: int = (await session.execute(_INSERT_DECISION, values)).scalar_one()
    return decision_id


async def finish_decision(
    session: AsyncSession, decision_id: int, *, outcome: str, reply_text: str | None,
    escalated: bool, latency_ms: float | None, reply_ts: str | None = None,
) -> None:
    await session.execute(_DECISION_BY_ID, {
        "b_id": decision_id, "outcome": outcome, "reply_text": reply_text, "escalated": escalated,
        "latency_ms": latency_ms, "reply_ts": reply_ts})


async def set_grounding(session: AsyncSession, decision_id: int, *, grounding: str,
                        sources: list[dict[str, object]]) -> None:
    """What the docs gave this decision's answer, recorded before the answer is drafted."""
    await session.execute(_DECISION_BY_ID, {"b_id": decision_id, "grounding": grounding, "sources": sources})


async def add_vote(session: AsyncSession, vote: Vote, samples: Sequence[VoteSampleRow]) -> Vote:
    vote.samples = list(samples)
    session.add(vote)
    await session.flush()
    await session.execute(
        update(DecisionRecord)
        .where(DecisionRecord.id == vote.decision_id)
        .values(voted=True, vote_agreement=vote.agreement)
    )
    return vote


async def add_llm_calls(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `llm_calls` rows (column values), in one statement; their ids in the rows' order."""
    return list((await session.execute(_INSERT_LLM_CALLS, list(rows))).scalars())


async def add_correction(session: AsyncSession, correction: RouteCorrection) -> RouteCorrection:
    session.add(correction)
    await session.flush()
    return correction


async def corrections_for_training(session: AsyncSession) -> list[tuple[str, str]]:
    """(text, corrected route) of every corrected decision; the newest correction wins."""
    statement = (
        select(Message.text, RouteCorrection.new_route, RouteCorrection.decision_id)
        .join(DecisionRecord, DecisionRecord.id == RouteCorrection.decision_id)
        .join(Message, Message.id == DecisionRecord.message_id)
        .order_by(RouteCorrection.id)
    )
    latest: dict[int, tuple[str, str]] = {}
    for text, route, decision_id in (await session.execute(statement)):
        latest[decision_id] = (text, route)
    return list(latest.values())
