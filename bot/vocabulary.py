"""The words the bot's records use, in one place: states, tiers, outcomes, roles and purposes.

The two state machines (a conversation, an escalation) are enums; the plain labels are Literals. The
database holds the same values, each column guarded by a CHECK constraint built from these (`sql_in`).
"""

from __future__ import annotations

import enum
from typing import Literal, get_args


class ConversationState(enum.StrEnum):
    """open -> escalated (a person was paged) | taken_over (a person answered) -> resolved."""

    OPEN = "open"
    ESCALATED = "escalated"
    TAKEN_OVER = "taken_over"
    RESOLVED = "resolved"

    @property
    def person_has_it(self) -> bool:
        """The bot stays quiet in the thread."""
        return self in (ConversationState.ESCALATED, ConversationState.TAKEN_OVER)


class EscalationState(enum.StrEnum):
    """paged -> acknowledged -> resolved, paged -> resolved, paged -> expired (nobody came)."""

    PAGED = "paged"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in OPEN_ESCALATION_STATES


OPEN_ESCALATION_STATES: tuple[EscalationState, ...] = (EscalationState.PAGED, EscalationState.ACKNOWLEDGED)

# Why an escalation was opened ("no_docs": the team's docs do not cover the question, [knowledge] on_missing).
Trigger = Literal["route", "rule", "vote", "llm_failure", "user_request", "failure", "no_docs"]
# What the knowledge base gave an answer: relevant passages, or nothing relevant (for a route that has docs).
Grounding = Literal["documents", "missing"]
# A reviewer's verdict on an answer a person gave in a resolved escalation, proposed as knowledge.
ProposalStatus = Literal["proposed", "approved", "rejected"]
# The knowledge source that holds the approved answers; its passages are cited as answers the team gave before.
TEAM_ANSWERS_SOURCE = "answers"
# What a cited document is: a page of the team's docs, or an answer the team gave before.
CitationKind = Literal["docs", "team_answer"]
# Which tier decided a route; a reviewer's correction shows as "correction".
DecidedBy = Literal["rules", "local", "llm", "hybrid", "correction"]
RouterMode = Literal["rules", "local", "llm", "hybrid"]
# What became of one inbound message.
Outcome = Literal["replied", "escalated", "quiet", "ignored", "failed"]
InboxStatus = Literal["pending", "processing", "done", "failed"]
Role = Literal["user", "assistant", "staff"]
# Which front end a conversation came through.
Origin = Literal["slack", "local", "cli", "triage"]
Verdict = Literal["reply", "needs_human", "error"]
# What an LLM call was for (llm_calls.purpose, metrics labels).
Purpose = Literal["route", "reply", "vote", "judge", "triage"]

DECIDED_BY: tuple[DecidedBy, ...] = get_args(DecidedBy)


def values(kind: object) -> tuple[str, ...]:
    """Every value of an enum or a Literal of this module."""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(str(member.value) for member in kind)
    return tuple(str(value) for value in get_args(kind))


def sql_in(column: str, kind: object) -> str:
    """`column IN ('a', 'b', …)` for a CHECK constraint over the values of `kind`."""
    return f"{column} IN ({', '.join(repr(value) for value in values(kind))})"
