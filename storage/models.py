"""SQLAlchemy 2.0 typed models: conversations, messages, inbox, routing, votes, escalations, LLM calls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.vocabulary import (
    ConversationState,
    EscalationState,
    FeedbackValue,
    Grounding,
    InboxStatus,
    Origin,
    Outcome,
    ProposalStatus,
    Purpose,
    Resolution,
    ResolutionBasis,
    Role,
    SlaMetric,
    Trigger,
    Verdict,
    sql_in,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


OPEN_ESCALATION_SQL = "state IN ('paged', 'acknowledged')"
# The tiers a route decision is stored with; a reviewer's correction lives in route_corrections.
DECISION_TIERS = ("rules", "local", "llm", "hybrid")


def check(column: str, kind: object, table: str) -> CheckConstraint:
    """The column holds only values of `kind` (a bot.vocabulary enum or Literal); NULL stays allowed."""
    return CheckConstraint(sql_in(column, kind), name=f"ck_{table}_{column}")


class Base(AsyncAttrs, DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Conversation(Base):
    """One Slack thread (or playground/CLI thread) the bot takes part in."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("team", "channel", "thread_ts", name="uq_conversation_thread"),
        check("state", ConversationState, "conversations"),
        check("source", Origin, "conversations"),
        check("resolution", Resolution, "conversations"),
        check("resolution_basis", ResolutionBasis, "conversations"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    team: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
    thread_ts: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(64))
    # open -> escalated (a human was paged) | taken_over (a human answered) -> resolved
    state: Mapped[str] = mapped_column(String(16), default="open")
    taken_over_by: Mapped[str | None] = mapped_column(String(64))
    taken_over_at: Mapped[datetime | None]
    # What became of the thread (bot.vocabulary.Resolution), why, and when; NULL while it is open.
    resolution: Mapped[str | None] = mapped_column(String(24))
    resolution_basis: Mapped[str | None] = mapped_column(String(24))
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.id", cascade="all, delete-orphan"
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (check("role", Role, "messages"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    # user | assistant | staff
    role: Mapped[str] = mapped_column(String(16))
    user: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class InboundEvent(Base):
    """The inbox and dedupe record: written before the ack, leased by one worker, finished once."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        Index("ix_inbound_status_lease", "status", "lease_expires_at"),
        check("status", InboxStatus, "inbound_events"),
        check("outcome", Outcome, "inbound_events"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # team:channel:ts — one message, however many events and retries announce it.
    dedupe_key: Mapped[str] = mapped_column(String(160), unique=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    # pending -> processing -> done | failed (gave up after retries)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    # Set just before a reply is posted and cleared with its ts after, so a crash in between
    # is detected on recovery and checked against the thread instead of posting twice.
    reply_intent: Mapped[str | None] = mapped_column(Text)
    # A streamed answer's message, set when its stream starts: a retry after a crash ends or replaces
    # that message instead of posting a second answer.
    stream_ts: Mapped[str | None] = mapped_column(String(32))
    reply_ts: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class DecisionRecord(Base):
    """How one user message was routed and what came of it; the row `supportbot logs` shows."""

    __tablename__ = "route_decisions"
    __table_args__ = (
        Index("ix_route_decisions_created", "created_at"),
        CheckConstraint(f"decided_by IN {DECISION_TIERS!r}", name="ck_route_decisions_decided_by"),
        check("outcome", Outcome, "route_decisions"),
        check("grounding", Grounding, "route_decisions"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    route: Mapped[str] = mapped_column(String(64), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    # rules | local | llm | hybrid; a reviewer's correction is stored beside, never over it.
    decided_by: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    router_mode: Mapped[str] = mapped_column(String(16))
    router_latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    # replied | escalated | quiet | failed, filled when the message is finished.
    outcome: Mapped[str | None] = mapped_column(String(16))
    reply_text: Mapped[str | None] = mapped_column(Text)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    voted: Mapped[bool] = mapped_column(Boolean, default=False)
    vote_agreement: Mapped[float | None] = mapped_column(Float)
    # The knowledge the answer was grounded in: "documents" (the passages in `sources` were given to the
    # model), "missing" (the route has docs, none were relevant), None (the route has no docs).
    grounding: Mapped[str | None] = mapped_column(String(16))
    # [{"title", "source", "score"}] of each passage given to the model, best first.
    sources: Mapped[list[Any]] = mapped_column(default=list)
    # Receipt of the message to the reply or escalation being posted.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # The ts of the message that answered it: feedback pressed on that message is feedback on this decision.
    reply_ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]

    conversation: Mapped[Conversation] = relationship()
    message: Mapped[Message] = relationship()
    corrections: Mapped[list[RouteCorrection]] = relationship(
        back_populates="decision", order_by="RouteCorrection.id", cascade="all, delete-orphan"
    )


class AnswerFeedback(Base):
    """One person's 👍 or 👎 on one bot answer; pressing again changes it (the latest press wins)."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("decision_id", "user", name="uq_feedback_decision_user"),
        check("value", FeedbackValue, "feedback"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("route_decisions.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    user: Mapped[str] = mapped_column(String(64))
    # The person who asked the question the answer replied to (otherwise: staff or on-call rating it).
    from_asker: Mapped[bool] = mapped_column(Boolean)
    # good | bad
    value: Mapped[str] = mapped_column(String(8))
    # What was wrong, in the asker's words: their next message in the thread after a 👎.
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        check("majority", Verdict, "votes"),
        CheckConstraint("strategy IN ('majority', 'judge')", name="ck_votes_strategy"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("route_decisions.id", ondelete="CASCADE"), index=True)
    strategy: Mapped[str] = mapped_column(String(16))
    samples_requested: Mapped[int] = mapped_column(Integer)
    # reply | needs_human | error
    majority: Mapped[str] = mapped_column(String(16))
    agreement: Mapped[float] = mapped_column(Float)
    escalated: Mapped[bool] = mapped_column(Boolean)
    chosen: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]

    samples: Mapped[list[VoteSampleRow]] = relationship(
        back_populates="vote", order_by="VoteSampleRow.index", cascade="all, delete-orphan"
    )


class VoteSampleRow(Base):
    __tablename__ = "vote_samples"
    __table_args__ = (check("verdict", Verdict, "vote_samples"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    vote_id: Mapped[int] = mapped_column(ForeignKey("votes.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    draft: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")
    llm_call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id", ondelete="SET NULL"))

    vote: Mapped[Vote] = relationship(back_populates="samples")


class Escalation(Base):
    """A page to on-call humans: paged -> acknowledged -> resolved, or expired."""

    __tablename__ = "escalations"
    __table_args__ = (
        Index("ix_escalations_state_next", "state", "next_action_at"),
        # At most one open escalation per thread, even when two replicas open one at once.
        Index("uq_escalations_open_conversation", "conversation_id", unique=True,
              sqlite_where=text(OPEN_ESCALATION_SQL), postgresql_where=text(OPEN_ESCALATION_SQL)),
        check("state", EscalationState, "escalations"),
        check("trigger", Trigger, "escalations"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("route_decisions.id", ondelete="SET NULL"))
    # One escalation per triggering message, however often it is retried.
    dedupe_key: Mapped[str] = mapped_column(String(160), unique=True)
    # route | rule | vote | llm_failure | user_request | button | failure
    trigger: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    route: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    drafts: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[str] = mapped_column(String(16), default="paged")
    level: Mapped[int] = mapped_column(Integer, default=1)
    # The first page message of the latest round; every page message is in escalation_pages.
    page_channel: Mapped[str | None] = mapped_column(String(64))
    page_ts: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(Text)
    # Re-pages decided so far; round repage_count + 1 is the current one.
    repage_count: Mapped[int] = mapped_column(Integer, default=0)
    # Rounds fully posted; below repage_count + 1 the current round is still to be (re)posted.
    paged_rounds: Mapped[int] = mapped_column(Integer, default=0)
    next_action_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    conversation: Mapped[Conversation] = relationship()
    events: Mapped[list[EscalationEvent]] = relationship(
        back_populates="escalation", order_by="EscalationEvent.id", cascade="all, delete-orphan"
    )
    pages: Mapped[list[EscalationPage]] = relationship(
        back_populates="escalation", order_by="EscalationPage.id", cascade="all, delete-orphan"
    )


class EscalationPage(Base):
    """One page message (a channel post or a DM to one person); written before posting, ts filled after."""

    __tablename__ = "escalation_pages"
    __table_args__ = (UniqueConstraint("escalation_id", "round", "target", name="uq_escalation_page_target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    escalation_id: Mapped[int] = mapped_column(ForeignKey("escalations.id", ondelete="CASCADE"), index=True)
    # 1 for the first page, n + 1 for the n-th re-page.
    round: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    # A channel id, or the user id of a DM.
    target: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    # None while posting (or after a post whose outcome is unknown): checked before posting again.
    ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    posted_at: Mapped[datetime | None]

    escalation: Mapped[Escalation] = relationship(back_populates="pages")


class EscalationEvent(Base):
    """Every transition of an escalation, with who and when."""

    __tablename__ = "escalation_events"
    __table_args__ = (
        check("from_state", EscalationState, "escalation_events"),
        check("to_state", EscalationState, "escalation_events"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    escalation_id: Mapped[int] = mapped_column(ForeignKey("escalations.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]

    escalation: Mapped[Escalation] = relationship(back_populates="events")


class SlaClock(Base):
    """One response-time clock of a thread: started, warned (once), breached (once), met or stopped.

    first_response: one per conversation; first_human_response and resolution: one per escalation.
    `elapsed_s` is the counted time (business hours where they apply), written once the clock is met."""

    __tablename__ = "sla_clocks"
    __table_args__ = (
        Index("ix_sla_clocks_deadline", "deadline"),
        check("metric", SlaMetric, "sla_clocks"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # "<metric>:c<conversation id>" or "<metric>:e<escalation id>": a clock is started once, by any replica.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    escalation_id: Mapped[int | None] = mapped_column(ForeignKey("escalations.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(32))
    route: Mapped[str | None] = mapped_column(String(64))
    # None: measured without a target (no warning, no breach).
    target_s: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime]
    warn_due_at: Mapped[datetime | None]
    deadline: Mapped[datetime | None]
    warned_at: Mapped[datetime | None]
    # When the target was missed (the deadline), recorded once.
    breached_at: Mapped[datetime | None]
    met_at: Mapped[datetime | None]
    # The clock ended without what it waits for (the escalation expired, or was resolved without a reply).
    stopped_at: Mapped[datetime | None]
    elapsed_s: Mapped[float | None] = mapped_column(Float)


class LLMCall(Base):
    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_created", "created_at"), check("purpose", Purpose, "llm_calls"))

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    # route | reply | vote | judge | triage
    purpose: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    route: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_creation_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class RouteCorrection(Base):
    """A reviewer's verdict that a message should have gone to another route."""

    __tablename__ = "route_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("route_decisions.id", ondelete="CASCADE"), index=True)
    old_route: Mapped[str] = mapped_column(String(64))
    new_route: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]

    decision: Mapped[DecisionRecord] = relationship(back_populates="corrections")


class KnowledgeSource(Base):
    """A named set of documents (files, folders, web pages, a sitemap, or texts given directly)."""

    __tablename__ = "knowledge_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # files | web | mixed | direct
    kind: Mapped[str] = mapped_column(String(16))
    # Paths and URLs as given to `kb add`; empty for a direct source.
    locations: Mapped[list[Any]] = mapped_column(default=list)
    # Routes that may use the source; empty = every route.
    routes: Mapped[list[Any]] = mapped_column(default=list)
    # Bumped whenever a sync changes a document, so every process knows its cached vectors are stale.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Documents that could not be indexed at the last sync: [{"location": ..., "error": ...}].
    errors: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime]
    last_sync_at: Mapped[datetime | None]

    documents: Mapped[list[KnowledgeDocument]] = relationship(
        back_populates="source", order_by="KnowledgeDocument.id", cascade="all, delete-orphan", passive_deletes=True
    )


class KnowledgeDocument(Base):
    """One file or page of a source, as last fetched; its passages are replaced when its content changes."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (UniqueConstraint("source_id", "location", name="uq_knowledge_document_location"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("knowledge_sources.id", ondelete="CASCADE"), index=True)
    # The file path or URL the document is cited by.
    location: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(Text)
    # sha256 of the fetched bytes: an unchanged document is not parsed or indexed again.
    content_hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    fetched_at: Mapped[datetime]

    source: Mapped[KnowledgeSource] = relationship(back_populates="documents")


class KnowledgePassage(Base):
    """A section of a document (under one heading), the unit that is searched, quoted and cited.

    The full-text index over passages lives beside this table: the FTS5 table `knowledge_fts` on SQLite,
    the `search_vector` tsvector column (GIN-indexed) on PostgreSQL; both made by migration 0002 and
    written by storage/knowledge.py, not by the ORM.
    """

    __tablename__ = "knowledge_passages"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("knowledge_documents.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("knowledge_sources.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    heading: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    # The normalised terms of title, heading and body, one field a line: what both engines index, and what
    # search loads to rank passages in memory.
    terms: Mapped[str] = mapped_column(Text, default="")
    # float16 unit vector of the passage in the static embedding space (bot/knowledge/embed.py).
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)


class KnowledgeProposal(Base):
    """An answer a person gave in an escalated thread, proposed as knowledge when the escalation was resolved.

    Nothing of it is indexed until a reviewer approves it; the approved text (the reviewer's edit, when there is
    one) is then a document of the source `answers`, cited by `permalink`."""

    __tablename__ = "knowledge_proposals"
    __table_args__ = (check("status", ProposalStatus, "knowledge_proposals"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    # One proposal per resolved escalation, however often the resolve is replayed.
    escalation_id: Mapped[int] = mapped_column(ForeignKey("escalations.id", ondelete="CASCADE"), unique=True)
    route: Mapped[str | None] = mapped_column(String(64))
    # The customer's messages before the page, and what the team wrote in the thread after it.
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    # The person's answer in the chat (the thread when the answer's own link is unknown).
    permalink: Mapped[str | None] = mapped_column(Text)
    # proposed -> approved | rejected (an approved one can be edited again or rejected, leaving the index)
    status: Mapped[str] = mapped_column(String(16), default="proposed", index=True)
    reviewer: Mapped[str | None] = mapped_column(String(64))
    # The reviewer's version of the answer (personal data taken out, …): what gets indexed instead of `answer`.
    edited_answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]

    @property
    def indexed_answer(self) -> str:
        """The text that is (or would be) indexed: the reviewer's edit, else the person's answer."""
        return self.edited_answer if self.edited_answer is not None else self.answer


class AuthFailure(Base):
    """A wrong dashboard token from one client, kept while it counts against that client's throttle.

    One row per different wrong token (a script repeating its stale token is one failure, not hundreds),
    shared by every replica through the database."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_failed_at", "failed_at"),)

    # The client's address (the first untrusted hop of X-Forwarded-For behind a trusted proxy).
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    # HMAC of the wrong token under a key derived from the real one: nothing here helps to guess it.
    guess: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_at: Mapped[datetime]


# Every id column is an INTEGER: 32 bits on PostgreSQL. A larger number cannot name a row, and binding one
# fails the whole statement, so ids from outside (URLs, button values) are checked against this first.
MAX_ROW_ID = 2**31 - 1


def parse_row_id(text: str) -> int | None:
    """`text` as a row id, or None when it is not a plain decimal number that fits an id column."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ROW_ID)):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ROW_ID else None
