"""Delivering pages: each round to its targets (a channel, or a DM each), recorded so none is lost or doubled.

While an escalation is paged it is delivered in *rounds*: round 1 is the first page, round n + 1 the n-th
re-page. A round is claimed first (storage.escalations.claim); `paged_rounds` records the rounds fully
posted, so a round that could not be posted (Slack down, a crash) is "unpaged" and posted by the next sweep.
Every page message is a row in `escalation_pages`, written before posting and completed with its ts after,
so a post whose outcome was lost is looked for before posting again, and every copy can be updated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bot.clock import Clock
from bot.config import EscalationSection
from bot.domain import Notice, PostedMessage
from bot.errors import TransportError
from bot.escalation.page import Page
from bot.escalation.roster import Roster
from bot.ports import ChatPort
from storage import escalations as records
from storage.engine import Database
from storage.models import EscalationPage

log = structlog.get_logger(__name__)

# A claimed round not posted within this time is taken over by the next sweep (any replica).
DELIVERY_LEASE_S = 120
# After a failed post (Slack down), the round is retried this much later.
PAGE_RETRY_S = 30
# Nobody to page at all (a config without channel, on-call or user group): retried, loudly, this often.
NOBODY_RETRY_S = 300


@dataclass(frozen=True)
class Target:
    """Where one page message goes: a channel, or a DM to one user."""

    key: str
    dm: bool


class Pager:
    """Posts, re-posts and updates the page messages of escalations; the caller holds the round's claim."""

    def __init__(self, settings: EscalationSection, db: Database, chat: ChatPort, clock: Clock, roster: Roster,
                 *, default_channel: str | None) -> None:
        self._settings = settings
        self._db = db
        self._chat = chat
        self._clock = clock
        self._roster = roster
        self._default_channel = default_channel

    @property
    def max_rounds(self) -> int:
        """Level 1: the page and repage_max re-pages; then level 2: as many again."""
        return 2 * (1 + self._settings.repage_max)

    def level_of(self, round_no: int) -> int:
        return 1 if round_no <= 1 + self._settings.repage_max else 2

    def expires_at(self, created_at: datetime) -> datetime:
        return created_at + timedelta(hours=self._settings.expire_after_h)

    def lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=DELIVERY_LEASE_S)

    def paging_problem(self) -> str | None:
        """Why pages cannot reach anyone with this config, or None when they can."""
        settings = self._settings
        if settings.channel or self._default_channel or settings.fallback_channel or self._roster.everyone():
            return None
        if settings.usergroup:
            if not self._roster.can_look_up_groups:
                return ("[escalation] names only a user group and no channel: DMs need the group's "
                        "members, which this transport cannot look up; set [escalation] channel")
            return None
        return ("[escalation] has no channel, oncall, usergroup or rotation: escalations are recorded "
                "but nobody can be paged (set [escalation] channel or oncall)")

    async def deliver_if_due(self, escalation_id: int) -> None:
        """After a retried escalate(): post the current round if it is unpaged and nobody else is on it."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            due = await records.due_unpaged(session, escalation_id, now=now)
        if due is not None and await self.claim(due, now):
            await self.deliver_round(due.id, round_no=due.current_round, level=due.level)

    async def claim(self, due: records.Due, now: datetime, *, until: datetime | None = None) -> bool:
        async with self._db.sessions.begin() as session:
            return await records.claim(session, due, until=until or self.lease_until(now), now=now)

    async def claim_repage(self, due: records.Due, now: datetime) -> int | None:
        """Open the next round (a re-page) if this replica wins it; returns its level."""
        level = self.level_of(due.current_round + 1)
        note = (f"re-page {due.repage_count + 1} (level {level}): nobody acknowledged within "
                f"{self._settings.ack_timeout_s}s")
        async with self._db.sessions.begin() as session:
            won = await records.claim(session, due, until=self.lease_until(now), now=now, repage_level=level,
                                      note=note)
        return level if won else None

    async def deliver_round(self, escalation_id: int, *, round_no: int, level: int) -> bool:
        """Post round `round_no` to every target not already holding it."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            escalation, conversation = await records.load(session, escalation_id)
            rows = await records.round_pages(session, escalation_id, round_no)
        if escalation.state != "paged":
            return False
        targets = await self._targets(level, now)
        if not targets:
            log.error("escalation_nobody_to_page", escalation_id=escalation_id, problem=self.paging_problem())
            await self._retry_round(escalation_id, round_no, now, NOBODY_RETRY_S)
            return False
        page = Page.of(escalation, conversation, self._roster.audience(now, level=level), round_no=round_no,
                       level=level, note="" if round_no == 1 else self._round_note(round_no, level))
        first: PostedMessage | None = None
        failed: list[str] = []
        for target in targets:
            row = rows.get(target.key)
            if row is not None and row.ts is not None and row.channel is not None:
                first = first or PostedMessage(row.channel, row.ts)
                continue
            try:
                posted = await self._post(page, target, row)
            except TransportError as exc:
                failed.append(target.key)
                log.warning("escalation_page_failed", escalation_id=escalation_id, round=round_no,
                            target=target.key, error=str(exc))
                continue
            first = first or posted
        if first is None:
            # Nobody got it: the round stays unpaged and the next sweep tries again.
            await self._retry_round(escalation_id, round_no, now, PAGE_RETRY_S)
            return False
        # Somebody has the page: the round counts (a deactivated user must not hold back re-pages);
        # whoever it missed gets the next round.
        await self._finish_round(escalation_id, round_no, level, first, len(targets) - len(failed), failed,
                                 created_at=escalation.created_at)
        return True

    async def _post(self, page: Page, target: Target, row: EscalationPage | None) -> PostedMessage:
        now = self._clock.now()
        channel = row.channel if row is not None and row.channel else (
            await self._chat.open_dm(target.key) if target.dm else target.key)
        if row is None:
            async with self._db.sessions.begin() as session:
                records.add_page(session, escalation_id=page.escalation_id, round_no=page.round, level=page.level,
                                 target=target.key, channel=channel, now=now)
        else:
            # A previous attempt may have posted before its outcome was lost: adopt that message.
            try:
                found = await self._chat.find_page(channel, page)
            except Exception as exc:  # cannot look: post again, a duplicate beats a missing page
                log.warning("escalation_page_lookup_failed", escalation_id=page.escalation_id, error=str(exc))
                found = None
            if found is not None:
                await self._record(page, target.key, found)
                return found
        posted = await self._chat.post_page(channel, page)
        await self._record(page, target.key, posted)
        return posted

    async def _record(self, page: Page, target: str, posted: PostedMessage) -> None:
        async with self._db.sessions.begin() as session:
            await records.record_page(session, escalation_id=page.escalation_id, round_no=page.round,
                                      target=target, channel=posted.channel, ts=posted.ts, now=self._clock.now())

    async def _finish_round(self, escalation_id: int, round_no: int, level: int, first: PostedMessage, count: int,
                            missed: Sequence[str], *, created_at: datetime) -> None:
        now = self._clock.now()
        next_at = (now + timedelta(seconds=self._settings.ack_timeout_s) if round_no < self.max_rounds
                   else self.expires_at(created_at))
        note = (f"page round {round_no} posted at level {level} ({count} message{'s' * (count != 1)})"
                + (f"; could not reach {', '.join(missed)}" if missed else ""))
        async with self._db.sessions.begin() as session:
            still_paged = await records.finish_round(session, escalation_id, round_no=round_no, channel=first.channel,
                                                     ts=first.ts, next_at=next_at, note=note, now=now)
        log.info("escalation_paged", escalation_id=escalation_id, round=round_no, level=level, messages=count)
        if not still_paged:
            # Acknowledged while this round was being posted: bring the new pages up to date.
            await self.refresh_pages(escalation_id)

    async def _retry_round(self, escalation_id: int, round_no: int, now: datetime, delay_s: int) -> None:
        async with self._db.sessions.begin() as session:
            await records.retry_round(session, escalation_id, round_no=round_no,
                                      at=now + timedelta(seconds=delay_s), now=now)

    async def _targets(self, level: int, now: datetime) -> list[Target]:
        channel = self._page_channel(level)
        if channel is not None:
            return [Target(channel, dm=False)]
        roster = self._roster
        if level > 1:
            users = roster.everyone() + sorted(await roster.usergroup_members())
        else:
            users = roster.oncall(now) or roster.everyone() or sorted(await roster.usergroup_members())
        return [Target(user, dm=True) for user in dict.fromkeys(users)]

    def _page_channel(self, level: int) -> str | None:
        if level > 1 and self._settings.fallback_channel:
            return self._settings.fallback_channel
        return self._settings.channel or self._default_channel

    def _round_note(self, round_no: int, level: int) -> str:
        minutes = self._settings.ack_timeout_s * (round_no - 1) / 60
        where = "the whole on-call group" if level > 1 else "on-call"
        return f"Re-page {round_no - 1}: nobody acknowledged for {minutes:g} min; paging {where}."

    async def refresh_pages(self, escalation_id: int) -> None:
        """Re-render every posted page of the escalation with its current state."""
        async with self._db.sessions() as session:
            escalation, conversation = await records.load(session, escalation_id)
            pages = await records.posted_pages(session, escalation_id)
        now = self._clock.now()
        for row in pages:
            assert row.channel is not None and row.ts is not None
            page = Page.of(escalation, conversation, self._roster.audience(now, level=row.level), round_no=row.round,
                           level=row.level)
            try:
                await self._chat.update_page(PostedMessage(row.channel, row.ts), page)
            except TransportError as exc:
                log.warning("escalation_page_update_failed", escalation_id=escalation_id, channel=row.channel,
                            ts=row.ts, error=str(exc))

    async def tell_thread(self, channel: str, thread_ts: str, notice: Notice) -> None:
        try:
            await self._chat.post_notice(channel, thread_ts, notice)
        except TransportError as exc:
            log.warning("escalation_thread_notice_failed", channel=channel, thread_ts=thread_ts, error=str(exc))
