"""Repository functions: each takes the caller's session and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from storage.models import (
    Conversation,
    Escalation,
    InboundEvent,
    LLMCall,
    Message,
    RouteCorrection,
    RouteDecision,
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
DECISIONS, LLM_CALLS = _table(RouteDecision), _table(LLMCall)


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


async def decision_for_message(session: AsyncSession, message_id: int) -> RouteDecision | None:
    statement = select(RouteDecision).where(RouteDecision.message_id == message_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def add_decision(session: AsyncSession, decision: RouteDecision) -> int:
    """Insert a decision built as a model object (unset columns take their defaults); returns its id."""
    values = {column.key: getattr(decision, column.key) for column in DECISIONS.columns
              if getattr(decision, column.key) is not None}
    decision_id: int = (await session.execute(_INSERT_DECISION, values)).scalar_one()
    return decision_id


async def finish_decision(
    session: AsyncSession, decision_id: int, *, outcome: str, reply_text: str | None,
    escalated: bool, latency_ms: float | None,
) -> None:
    await session.execute(_DECISION_BY_ID, {
        "b_id": decision_id, "outcome": outcome, "reply_text": reply_text, "escalated": escalated,
        "latency_ms": latency_ms})


async def set_grounding(session: AsyncSession, decision_id: int, *, grounding: str,
                        sources: list[dict[str, object]]) -> None:
    """What the docs gave this decision's answer, recorded before the answer is drafted."""
    await session.execute(_DECISION_BY_ID, {"b_id": decision_id, "grounding": grounding, "sources": sources})


async def add_vote(session: AsyncSession, vote: Vote, samples: Sequence[VoteSampleRow]) -> Vote:
    vote.samples = list(samples)
    session.add(vote)
    await session.flush()
    await session.execute(
        update(RouteDecision)
        .where(RouteDecision.id == vote.decision_id)
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
        .join(RouteDecision, RouteDecision.id == RouteCorrection.decision_id)
        .join(Message, Message.id == RouteDecision.message_id)
        .order_by(RouteCorrection.id)
    )
    latest: dict[int, tuple[str, str]] = {}
    for text, route, decision_id in (await session.execute(statement)):
        latest[decision_id] = (text, route)
    return list(latest.values())


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
        }


def _latest_correction() -> Any:
    return (
        select(RouteCorrection.new_route)
        .where(RouteCorrection.decision_id == RouteDecision.id)
        .order_by(RouteCorrection.id.desc())
        .limit(1)
        .correlate(RouteDecision)
        .scalar_subquery()
    )


def _log_query(filters: LogFilter) -> Select[Any]:
    corrected = _latest_correction()
    effective_route = func.coalesce(corrected, RouteDecision.route)
    statement = (
        select(RouteDecision, Conversation, Message, corrected.label("corrected_route"))
        .join(Conversation, Conversation.id == RouteDecision.conversation_id)
        .join(Message, Message.id == RouteDecision.message_id)
    )
    if filters.route:
        statement = statement.where(effective_route == filters.route)
    if filters.decided_by == "correction":
        statement = statement.where(corrected.is_not(None))
    elif filters.decided_by:
        statement = statement.where(RouteDecision.decided_by == filters.decided_by, corrected.is_(None))
    if filters.escalated is not None:
        statement = statement.where(RouteDecision.escalated.is_(filters.escalated))
    if filters.voted is not None:
        statement = statement.where(RouteDecision.voted.is_(filters.voted))
    if filters.confidence_below is not None:
        # The confidence a reviewer sees: a corrected decision is certain (1.0), as the rows show it.
        effective_confidence = case((corrected.is_not(None), 1.0), else_=RouteDecision.confidence)
        statement = statement.where(effective_confidence < filters.confidence_below)
    if filters.channel:
        statement = statement.where(Conversation.channel == filters.channel)
    if filters.user:
        statement = statement.where(Message.user == filters.user)
    if filters.since:
        statement = statement.where(RouteDecision.created_at >= filters.since)
    if filters.until:
        statement = statement.where(RouteDecision.created_at < filters.until)
    if filters.text:
        # The search is literal: % and _ typed by a reviewer match themselves.
        literal = filters.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        statement = statement.where(
            or_(func.lower(Message.text).like(pattern, escape="\\"),
                func.lower(RouteDecision.reply_text).like(pattern, escape="\\"))
        )
    if filters.after_id is not None:
        statement = statement.where(RouteDecision.id > filters.after_id)
    return statement


async def query_logs(session: AsyncSession, filters: LogFilter, *, oldest_first: bool = False) -> list[LogRow]:
    order = RouteDecision.id.asc() if oldest_first else RouteDecision.id.desc()
    statement = _log_query(filters).order_by(order).limit(filters.limit).offset(filters.offset)
    rows = []
    for decision, conversation, message, corrected_route in (await session.execute(statement)):
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


async def decision_facts(session: AsyncSession, filters: LogFilter, *, limit: int = 50_000) -> list[DecisionFact]:
    """Chart data for every decision `filters` selects (its page and limit aside), newest `limit` first."""
    corrected = _latest_correction()
    statement = (
        _log_query(filters)
        .with_only_columns(
            RouteDecision.created_at, func.coalesce(corrected, RouteDecision.route),
            case((corrected.is_not(None), "correction"), else_=RouteDecision.decided_by),
            RouteDecision.escalated, RouteDecision.voted, RouteDecision.vote_agreement, RouteDecision.latency_ms,
        )
        .order_by(RouteDecision.id.desc())
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
    decisions: list[RouteDecision]
    votes: list[Vote]
    llm_calls: list[LLMCall]
    escalations: list[Escalation]


async def conversation_review(session: AsyncSession, conversation_id: int) -> ConversationReview | None:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    messages = (await session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id))).scalars()
    decisions = (await session.execute(
        select(RouteDecision).where(RouteDecision.conversation_id == conversation_id)
        .options(selectinload(RouteDecision.corrections)).order_by(RouteDecision.id))).scalars()
    votes = (await session.execute(
        select(Vote).join(RouteDecision, RouteDecision.id == Vote.decision_id)
        .where(RouteDecision.conversation_id == conversation_id)
        .options(selectinload(Vote.samples)).order_by(Vote.id))).scalars()
    calls = (await session.execute(
        select(LLMCall).where(LLMCall.conversation_id == conversation_id).order_by(LLMCall.id))).scalars()
    escalations = (await session.execute(
        select(Escalation).where(Escalation.conversation_id == conversation_id)
        .options(selectinload(Escalation.events)).order_by(Escalation.id))).scalars()
    return ConversationReview(conversation, list(messages), list(decisions), list(votes), list(calls),
                              list(escalations))


async def current_route(session: AsyncSession, decision_id: int) -> str | None:
    """The route of a decision after its latest correction; None when there is no such decision."""
    statement = select(func.coalesce(_latest_correction(), RouteDecision.route)).where(RouteDecision.id == decision_id)
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
