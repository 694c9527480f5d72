"""Escalations for people reading them: `supportbot escalations` and `supportbot oncall`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from bot.escalation.roster import Roster
from storage import escalations as records


@dataclass(frozen=True)
class EscalationSummary:
    id: int
    created_at: datetime
    state: str
    level: int
    repages: int
    paged: bool
    pages: int
    trigger: str
    route: str | None
    confidence: float | None
    requester: str
    channel: str
    thread_ts: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    next_action_at: datetime | None
    permalink: str | None
    reason: str

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.created_at).total_seconds())

    def as_json(self, now: datetime) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "id": self.id, "created_at": iso(self.created_at), "age_s": round(self.age_s(now)), "state": self.state,
            "level": self.level, "repages": self.repages, "paged": self.paged, "pages": self.pages,
            "trigger": self.trigger, "route": self.route, "confidence": self.confidence,
            "requester": self.requester, "channel": self.channel, "thread_ts": self.thread_ts,
            "acknowledged_by": self.acknowledged_by, "acknowledged_at": iso(self.acknowledged_at),
            "resolved_by": self.resolved_by, "resolved_at": iso(self.resolved_at),
            "next_action_at": iso(self.next_action_at), "permalink": self.permalink, "reason": self.reason,
        }


async def list_escalations(
    session: AsyncSession, *, open_only: bool = False, limit: int = 50
) -> list[EscalationSummary]:
    """Newest first; `paged` is False while the current round is still to be posted."""
    return [
        EscalationSummary(
            id=e.id, created_at=e.created_at, state=e.state, level=e.level, repages=e.repage_count,
            paged=e.paged_rounds > e.repage_count, pages=pages, trigger=e.trigger, route=e.route,
            confidence=e.confidence, requester=e.requester, channel=channel, thread_ts=thread_ts,
            acknowledged_by=e.acknowledged_by, acknowledged_at=e.acknowledged_at, resolved_by=e.resolved_by,
            resolved_at=e.resolved_at, next_action_at=e.next_action_at, permalink=e.permalink, reason=e.reason,
        )
        for e, channel, thread_ts, pages in await records.listing(session, open_only=open_only, limit=limit)
    ]


def oncall_report(config: Config, now: datetime) -> dict[str, Any]:
    """Who is on call now and through this week, as `supportbot oncall --format json` prints it."""
    roster = Roster(config)
    users, basis = roster.who(now)
    escalation = config.escalation
    return {
        "now": now.astimezone(roster.timezone).isoformat(),
        "timezone": str(roster.timezone),
        "oncall": users,
        "source": basis.value,
        "usergroup": escalation.usergroup,
        "staff": list(config.bot.staff),
        "channel": escalation.channel,
        "fallback_channel": escalation.fallback_channel,
        "ack_timeout_s": escalation.ack_timeout_s,
        "repage_max": escalation.repage_max,
        "week": [{"start": c.start.isoformat(), "end": c.end.isoformat(), "users": list(c.users),
                  "source": c.basis.value} for c in roster.week(now)],
    }
