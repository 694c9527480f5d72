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
# "feedback": the asker rated an answer 👎 and pressed "Get a human" on the offer that followed.
Trigger = Literal["route", "rule", "vote", "llm_failure", "user_request", "failure", "no_docs", "feedback"]
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
# What a response-time clock measures (sla_clocks.metric): the customer's first message to the bot's first
# post; a page to a person's first message in the thread; the customer's first message to resolution.
SlaMetric = Literal["first_response", "first_human_response", "resolution"]

# A person's rating of one bot answer (👍 / 👎).
FeedbackValue = Literal["good", "bad"]
# What became of a thread (conversations.resolution); NULL while it is open:
#   resolved_by_bot    the asker confirmed (👍, or a thanks such as "thanks, that worked"), or the bot's answer
#                      was the last word and the asker did not come back within [resolution] assume_resolved_after_h
#   escalated          an escalation is open (a person was paged) and not resolved yet
#   resolved_by_human  an escalation was resolved, or staff took the thread over and it went quiet
#   abandoned          the thread went quiet without a resolution: the asker's latest rating of the last answer
#                      was 👎, or the last word was not an answer (a question nobody answered, a notice), or an
#                      escalation expired without anyone acknowledging it
Resolution = Literal["resolved_by_bot", "escalated", "resolved_by_human", "abandoned"]
# Why a thread got its resolution: the asker's 👍 or 👎, a thanks message, no follow-up within the window,
# an escalation opened, resolved or expired, or a staff member's answer.
ResolutionBasis = Literal["feedback", "thanks", "no_follow_up", "escalation_opened", "escalation_resolved",
                          "escalation_expired", "staff_answer"]
SETTLED: tuple[Resolution, ...] = ("resolved_by_bot", "resolved_by_human", "abandoned")

DECIDED_BY: tuple[DecidedBy, ...] = get_args(DecidedBy)
SLA_METRICS: tuple[SlaMetric, ...] = get_args(SlaMetric)


def values(kind: object) -> tuple[str, ...]:
    """Every value of an enum or a Literal of this module."""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(str(member.value) for member in kind)
    return tuple(str(value) for value in get_args(kind))


def sql_in(column: str, kind: object) -> str:
    """`column IN ('a', 'b', …)` for a CHECK constraint over the values of `kind`."""
    return f"{column} IN ({', '.join(repr(value) for value in values(kind))})"
