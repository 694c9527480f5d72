"""What a page says, as a value: who asked, what, why, the drafts, the state and the actions on offer.

Each chat adapter renders a `Page` its own way (Slack: Block Kit with buttons; the playground: its web page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.vocabulary import EscalationState
from storage.models import Conversation, Escalation

ACK_ACTION = "escalation_ack"
RESOLVE_ACTION = "escalation_resolve"
# The "Get a human" button under the bot's answers.
REQUEST_ACTION = "escalation_request"
# A page's key, "<prefix>:<escalation id>:<round>", is put on its post so a lost post can be found again.
PAGE_KEY_PREFIX = "supportbot-escalation"

# Keyed by bot.vocabulary.Trigger.
TRIGGER_LABELS: dict[str, str] = {
    "route": "routed to the escalation persona",
    "rule": "an escalation rule matched",
    "vote": "voting: no confident answer",
    "llm_failure": "the AI model failed",
    "user_request": "the customer asked for a person",
    "failure": "internal error while answering",
}
STATE_TITLES: dict[EscalationState, str] = {
    EscalationState.PAGED: "needs a person",
    EscalationState.ACKNOWLEDGED: "acknowledged",
    EscalationState.RESOLVED: "resolved",
    EscalationState.EXPIRED: "expired, nobody acknowledged",
}
NOBODY_ON_CALL = "(nobody is on call: set [escalation] oncall, usergroup or rotation)"
EXPIRED_STATUS = "Expired: nobody acknowledged in time; the bot answers the thread again."


@dataclass(frozen=True)
class Audience:
    """Whom a page calls on: people by user id, and a user group."""

    users: tuple[str, ...] = ()
    usergroup: str | None = None

    @property
    def empty(self) -> bool:
        return not self.users and self.usergroup is None


def page_key(escalation_id: int, round_no: int) -> str:
    return f"{PAGE_KEY_PREFIX}:{escalation_id}:{round_no}"


@dataclass(frozen=True)
class Page:
    """One page message of one round of an escalation, as it stands now."""

    escalation_id: int
    round: int
    level: int
    state: EscalationState
    audience: Audience
    requester: str
    channel: str
    thread_ts: str
    permalink: str | None
    # The customer's message: untrusted text, to be escaped by whoever renders it.
    message: str
    route: str | None
    confidence: float | None
    trigger: str
    reason: str
    drafts: tuple[str, ...] = ()
    # Why this round was sent ("Re-page 1: nobody acknowledged for 10 min…"); empty for the first page.
    note: str = ""
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None

    @classmethod
    def of(cls, escalation: Escalation, conversation: Conversation, audience: Audience, *, round_no: int,
           level: int, note: str = "") -> Page:
        return cls(
            escalation_id=escalation.id, round=round_no, level=level, state=EscalationState(escalation.state),
            audience=audience, requester=escalation.requester, channel=conversation.channel,
            thread_ts=conversation.thread_ts, permalink=escalation.permalink, message=escalation.summary,
            route=escalation.route, confidence=escalation.confidence, trigger=escalation.trigger,
            reason=escalation.reason, drafts=tuple(str(draft) for draft in escalation.drafts[:3]), note=note,
            acknowledged_by=escalation.acknowledged_by, acknowledged_at=escalation.acknowledged_at,
            resolved_by=escalation.resolved_by, resolved_at=escalation.resolved_at,
        )

    @property
    def key(self) -> str:
        """Stable id of this round's post, for an adapter to find a post whose outcome was lost."""
        return page_key(self.escalation_id, self.round)

    @property
    def title(self) -> str:
        return f"Escalation #{self.escalation_id}: {STATE_TITLES[self.state]}"

    @property
    def why(self) -> str:
        return TRIGGER_LABELS.get(self.trigger, self.trigger)

    @property
    def actions(self) -> tuple[str, ...]:
        """The buttons on offer: acknowledge while paged, resolve while open."""
        return ((ACK_ACTION,) if self.state is EscalationState.PAGED else ()) + (
            (RESOLVE_ACTION,) if self.state.is_open else ())
