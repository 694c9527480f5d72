"""Typed values that flow through the pipeline, independent of Slack and of the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Source = Literal["slack", "local", "cli", "triage"]
Role = Literal["user", "assistant", "staff"]
Outcome = Literal["replied", "escalated", "quiet", "ignored", "failed"]


@dataclass(frozen=True)
class InboundMessage:
    """A human message that reached the bot, already stripped of transport details."""

    source: Source
    team: str
    channel: str
    user: str
    text: str
    ts: str
    event_id: str
    thread_ts: str | None = None
    channel_type: str = "channel"
    user_name: str | None = None
    is_mention: bool = False
    # Set by the adapter for Slack Assistant threads, which show a status instead of a reaction.
    assistant_thread: bool = False

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
    # "open", "escalated" (a human was paged) or "taken_over" (a human answered).
    state: str


@dataclass(frozen=True)
class PostedMessage:
    channel: str
    ts: str


@dataclass(frozen=True)
class Draft:
    text: str
    model: str
    offline: bool = False


@dataclass(frozen=True)
class VoteSample:
    index: int
    verdict: Literal["reply", "needs_human", "error"]
    draft: str
    reason: str = ""
    llm_call_id: int | None = None


@dataclass(frozen=True)
class VoteResult:
    samples: tuple[VoteSample, ...]
    majority: Literal["reply", "needs_human", "error"]
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
    decided_by: str | None = None
    reason: str | None = None
    reply: str | None = None
    escalation_id: int | None = None
    vote: VoteResult | None = None
    duplicate: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    started_at: datetime | None = None
