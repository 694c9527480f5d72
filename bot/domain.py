"""Typed values that flow through the pipeline, independent of Slack and of the database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from bot.vocabulary import (
    CitationKind,
    ConversationState,
    DecidedBy,
    FeedbackValue,
    Origin,
    Outcome,
    Role,
    SlaMetric,
    Trigger,
    Verdict,
)

# "reply": the bot's own answer (it offers a person); "notice": a status note (a person is coming, …).
ReplyKind = Literal["reply", "notice"]


@dataclass(frozen=True)
class InboundMessage:
    """A human message that reached the bot, already stripped of transport details."""

    source: Origin
    team: str
    channel: str
    user: str
    text: str
    ts: str
    event_id: str
    thread_ts: str | None = None
    channel_type: str = "channel"
    is_mention: bool = False
    # Set by the adapter for Slack Assistant threads, which show a status instead of a reaction.
    assistant_thread: bool = False

    @classmethod
    def from_record(cls, payload: Mapping[str, Any]) -> InboundMessage:
        """The message as the inbox stored it; fields an older version stored and this one dropped are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in known})

    @property
    def root_ts(self) -> str:
        """The ts of the thread this message belongs to; a top-level message starts its own."""
        return self.thread_ts or self.ts

    @property
    def dedupe_key(self) -> str:
        # The same message can arrive as `message` and as `app_mention` with different event ids.
        return f"{self.team}:{self.channel}:{self.ts}"


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str
    user: str | None = None


@dataclass(frozen=True)
class ThreadState:
    conversation_id: int
    history: tuple[Turn, ...]
    state: ConversationState


@dataclass(frozen=True)
class PostedMessage:
    channel: str
    ts: str


TEAM_ANSWER_LABEL = "An answer the team gave before"


@dataclass(frozen=True)
class Citation:
    """A document an answer was grounded in: its title and where it lives (a file path or a URL); a team answer
    is a reviewed answer a person gave in an earlier thread (its source links to that thread)."""

    title: str
    source: str
    kind: CitationKind = "docs"

    @property
    def url(self) -> str | None:
        return self.source if self.source.startswith(("https://", "http://")) else None

    @property
    def label(self) -> str:
        """The title as shown under an answer: a team answer says it is one."""
        return f"{TEAM_ANSWER_LABEL}: {self.title}" if self.kind == "team_answer" else self.title


@dataclass(frozen=True)
class Document:
    """A passage of the team's docs given to the model: untrusted text, quoted, cited by `source`."""

    title: str
    heading: str
    source: str
    text: str
    score: float
    kind: CitationKind = "docs"


@dataclass(frozen=True)
class Grounding:
    """What the docs say about a question: passages, best first, or nothing relevant (`missing`)."""

    documents: tuple[Document, ...] = ()

    @property
    def missing(self) -> bool:
        return not self.documents

    @property
    def citations(self) -> tuple[Citation, ...]:
        """One citation per page, in rank order."""
        seen: dict[str, Citation] = {}
        for document in self.documents:
            seen.setdefault(document.source, Citation(document.title, document.source, document.kind))
        return tuple(seen.values())

    def as_record(self) -> list[dict[str, object]]:
        """The passages as stored with the route decision (and shown by `logs` and the dashboard)."""
        return [{"title": d.title, "source": d.source, "heading": d.heading, "score": round(d.score, 4),
                 "kind": d.kind} for d in self.documents]


@dataclass(frozen=True)
class Answer:
    """What the bot says in a thread, in Markdown; each chat adapter renders it its own way."""

    text: str
    kind: ReplyKind = "reply"
    citations: tuple[Citation, ...] = ()
    # The bot's own answers ask to be rated (👍 / 👎, action `reply_feedback`); notices never do.
    asks_feedback: bool = False

    @property
    def offers_human(self) -> bool:
        """The bot's own answers carry a way to ask for a person; status notes do not."""
        return self.kind == "reply"


@dataclass(frozen=True)
class Notice:
    """A status note for a thread (someone is on it, resolved, …): Markdown in which `{user}` stands for a
    mention of `user`, which each adapter writes its own way."""

    template: str
    user: str | None = None
    # With a trigger, the notice carries a "Get a human" button that opens an escalation with it.
    human_trigger: Trigger | None = None


@dataclass(frozen=True)
class FeedbackPress:
    """A person rated a bot answer: the thread, the answer's message, who, and 👍 ("good") or 👎 ("bad")."""

    team: str
    channel: str
    thread_ts: str
    answer_ts: str
    user: str
    value: FeedbackValue


SLA_METRIC_NAMES: dict[SlaMetric, str] = {
    "first_response": "first response",
    "first_human_response": "first human response",
    "resolution": "resolution",
}


def duration_text(seconds: float) -> str:
    """A target or a wait as people say it: 45 s, 30 min, 1.5 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


@dataclass(frozen=True)
class SlaWarning:
    """A thread about to miss a response-time target, for the escalation channel."""

    metric: SlaMetric
    channel: str
    thread_ts: str
    route: str | None
    target_s: float
    deadline: datetime
    escalation_id: int | None = None
    permalink: str | None = None

    @property
    def title(self) -> str:
        target = duration_text(self.target_s)
        return f"SLA warning: {SLA_METRIC_NAMES[self.metric]} target ({target}) about to be missed"

    @property
    def key(self) -> str:
        """Names the warning in the post, so one already posted can be recognised."""
        return f"sla-warning:{self.metric}:{self.channel}:{self.thread_ts}"


@dataclass(frozen=True)
class Draft:
    text: str
    model: str
    offline: bool = False


@dataclass(frozen=True)
class VoteSample:
    index: int
    verdict: Verdict
    draft: str
    reason: str = ""
    llm_call_id: int | None = None


@dataclass(frozen=True)
class VoteResult:
    samples: tuple[VoteSample, ...]
    majority: Verdict
    agreement: float
    chosen: str | None
    strategy: str
    escalate: bool
    reason: str


@dataclass(frozen=True)
class ProcessResult:
    """What happened to one inbound message, for callers such as the terminal chat and tests."""

    outcome: Outcome
    route: str | None = None
    confidence: float | None = None
    decided_by: DecidedBy | None = None
    reason: str | None = None
    reply: str | None = None
    escalation_id: int | None = None
    vote: VoteResult | None = None
    # The pages of the team's docs the reply was grounded in.
    citations: tuple[Citation, ...] = ()
    duplicate: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
