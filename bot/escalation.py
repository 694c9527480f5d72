"""Escalation to on-call humans: page with buttons, acknowledge, resolve, re-page when nobody answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import Config
from bot.domain import InboundMessage
from bot.mrkdwn import escape
from bot.ports import ChatTransport
from storage import repositories as repo
from storage.engine import Database
from storage.models import Escalation, EscalationEvent

log = structlog.get_logger(__name__)

ACK_ACTION = "escalation_ack"
RESOLVE_ACTION = "escalation_resolve"
REQUEST_ACTION = "escalation_request"
OPEN_STATES = ("paged", "acknowledged")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

ActionResult = Literal["done", "already", "refused", "not_found", "invalid"]


@dataclass(frozen=True)
class EscalationRequest:
    msg: InboundMessage
    conversation_id: int
    trigger: str
    reason: str
    decision_id: int | None = None
    route: str | None = None
    confidence: float | None = None
    drafts: tuple[str, ...] = ()


class Roster:
    """Who is on call now: the rotation's shift if one covers this moment, else the fixed list."""

    def __init__(self, config: Config) -> None:
        self._escalation = config.escalation
        self._staff = frozenset(config.bot.staff)

    def oncall(self, now: datetime) -> list[str]:
        rotation = self._escalation.rotation
        if rotation is not None and rotation.shifts:
            local = now.astimezone(ZoneInfo(rotation.timezone))
            day = _DAYS[local.weekday()]
            minute = local.hour * 60 + local.minute
            on_shift = [
                shift.user for shift in rotation.shifts
                if day in shift.days and _minutes(shift.start) <= minute < _minutes(shift.end)
            ]
            if on_shift:
                return list(dict.fromkeys(on_shift))
        return list(self._escalation.oncall)

    def everyone(self) -> list[str]:
        users = list(self._escalation.oncall)
        if self._escalation.rotation is not None:
            users += [shift.user for shift in self._escalation.rotation.shifts]
        return list(dict.fromkeys(users))

    def may_act(self, user: str) -> bool:
        """On-call (anyone in the roster or rotation) and staff may press page buttons and take over."""
        return user in self._staff or user in self.everyone()

    def mention(self, now: datetime, *, everyone: bool = False) -> str:
        users = self.everyone() if everyone else self.oncall(now)
        parts = [f"<@{user}>" for user in users]
        if self._escalation.usergroup and (everyone or not parts):
            parts.insert(0, f"<!subteam^{self._escalation.usergroup}>")
        return " ".join(parts) or "(no on-call configured: set [escalation] oncall or usergroup)"


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


class EscalationService:
    def __init__(
        self, config: Config, db: Database, chat: ChatTransport, clock: Clock, *,
        default_channel: str | None = None,
    ) -> None:
        """`default_channel` receives pages when the config names neither a channel nor on-call users
        (local mode's playground shows it); with Slack such a config is refused at start."""
        self._default_channel = default_channel
        self._config = config
        self._escalation = config.escalation
        self._db = db
        self._chat = chat
        self._clock = clock
        self.roster = Roster(config)

    # --- opening ----------------------------------------------------------------------------

    async def escalate(self, request: EscalationRequest) -> int:
        """Open (once per triggering message) and page; returns the escalation id.

        Raises TransportError when the page could not be posted; a retry pages the same escalation.
        """
        now = self._clock.now()
        async with self._db.sessions.begin() as session:
            escalation = await self._open(session, request, now)
            await repo.set_conversation_state(session, request.conversation_id, "escalated", now=now)
        if escalation.page_ts is None:
            await self._page(escalation.id, level=1)
        return escalation.id

    async def _open(self, session: AsyncSession, request: EscalationRequest, now: datetime) -> Escalation:
        existing = await _by_key(session, request.msg.dedupe_key)
        if existing is not None:
            return existing
        permalink = await self._chat.permalink(request.msg.channel, request.msg.ts)
        escalation = Escalation(
            conversation_id=request.conversation_id,
            decision_id=request.decision_id,
            dedupe_key=request.msg.dedupe_key,
            trigger=request.trigger,
            reason=request.reason[:2000],
            requester=request.msg.user,
            summary=request.msg.text[:4000],
            route=request.route,
            confidence=request.confidence,
            drafts=list(request.drafts),
            state="paged",
            level=1,
            permalink=permalink,
            next_action_at=now + timedelta(seconds=self._escalation.ack_timeout_s),
            created_at=now,
            updated_at=now,
        )
        session.add(escalation)
        await session.flush()
        session.add(EscalationEvent(escalation_id=escalation.id, from_state=None, to_state="paged",
                                    actor=None, note=f"{request.trigger}: {request.reason}"[:2000], at=now))
        log.info("escalation_opened", escalation_id=escalation.id, trigger=request.trigger)
        return escalation

    async def _page(self, escalation_id: int, *, level: int, note: str = "") -> None:
        async with self._db.sessions() as session:
            escalation = await session.get(Escalation, escalation_id)
            assert escalation is not None
        now = self._clock.now()
        mention = self.roster.mention(now, everyone=level > 1)
        channel = self._page_channel(level)
        if channel is None:
            # No channel configured: DM each on-call person; the first DM carries the buttons.
            targets = self.roster.oncall(now) or self.roster.everyone()
            if not targets:
                log.error("escalation_nobody_to_page", escalation_id=escalation_id)
                return
            posted = None
            for user in targets:
                dm = await self._chat.open_dm(user)
                result = await self._chat.post_message(
                    dm, page_text(escalation, mention), blocks=page_blocks(escalation, mention, note))
                posted = posted or result
        else:
            posted = await self._chat.post_message(
                channel, page_text(escalation, mention), blocks=page_blocks(escalation, mention, note))
        assert posted is not None
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Escalation).where(Escalation.id == escalation_id)
                .values(page_channel=posted.channel, page_ts=posted.ts, level=level, updated_at=now)
            )

    def _page_channel(self, level: int) -> str | None:
        if level > 1 and self._escalation.fallback_channel:
            return self._escalation.fallback_channel
        if self._escalation.channel is None and not self.roster.everyone():
            return self._default_channel
        return self._escalation.channel

    # --- buttons ----------------------------------------------------------------------------

    async def acknowledge(self, escalation_id: int, user: str) -> ActionResult:
        return await self._transition(escalation_id, user, "acknowledged", from_states=("paged",))

    async def resolve(self, escalation_id: int, user: str) -> ActionResult:
        return await self._transition(escalation_id, user, "resolved", from_states=OPEN_STATES)

    async def _transition(
        self, escalation_id: int, user: str, to_state: str, *, from_states: Sequence[str]
    ) -> ActionResult:
        if not self.roster.may_act(user):
            return "refused"
        now = self._clock.now()
        values: dict[str, Any] = {"state": to_state, "updated_at": now, "next_action_at": None}
        if to_state == "acknowledged":
            values.update(acknowledged_by=user, acknowledged_at=now)
        else:
            values.update(resolved_by=user, resolved_at=now)
        async with self._db.sessions.begin() as session:
            escalation = await session.get(Escalation, escalation_id)
            if escalation is None:
                return "not_found"
            previous = escalation.state
            # Conditional update: a double click or a replayed request changes nothing.
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state.in_(from_states))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                return "already"
            session.add(EscalationEvent(escalation_id=escalation_id, from_state=previous, to_state=to_state,
                                        actor=user, note="", at=now))
            if to_state == "resolved":
                await repo.set_conversation_state(session, escalation.conversation_id, "resolved", now=now)
        await self._after_transition(escalation_id, to_state, user)
        return "done"

    async def _after_transition(self, escalation_id: int, to_state: str, user: str) -> None:
        async with self._db.sessions() as session:
            escalation = await session.get(Escalation, escalation_id)
            assert escalation is not None
            conversation = await escalation.awaitable_attrs.conversation
        if escalation.page_channel and escalation.page_ts:
            mention = self.roster.mention(self._clock.now())
            await self._chat.update_message(
                escalation.page_channel, escalation.page_ts, page_text(escalation, mention),
                blocks=page_blocks(escalation, mention))
        verb = "is on it" if to_state == "acknowledged" else "marked this as resolved"
        await self._chat.post_message(conversation.channel, f"<@{user}> from the support team {verb}.",
                                      thread_ts=conversation.thread_ts)
        log.info("escalation_transition", escalation_id=escalation_id, state=to_state, actor=user)

    # --- re-pages -----------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Re-page unacknowledged escalations whose time is up; safe to run on every replica."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            due = (await session.execute(
                select(Escalation.id, Escalation.next_action_at, Escalation.repage_count, Escalation.level,
                       Escalation.created_at)
                .where(Escalation.state == "paged", Escalation.next_action_at <= now)
                .order_by(Escalation.next_action_at).limit(50)
            )).all()
        done = 0
        for escalation_id, due_at, repages, level, created_at in due:
            if now - created_at >= timedelta(hours=self._escalation.expire_after_h):
                await self._expire(escalation_id, due_at, now)
                continue
            # After repage_max unanswered re-pages, go to the next level (whole group, fallback channel)
            # and keep reminding there at the same pace until it expires.
            next_level = 2 if repages >= self._escalation.repage_max else level
            claimed = await self._claim_repage(escalation_id, due_at, now)
            if not claimed:
                continue
            note = f"Re-page {repages + 1}: nobody acknowledged within {self._escalation.ack_timeout_s}s."
            await self._page(escalation_id, level=next_level, note=note)
            done += 1
        return done

    async def _claim_repage(self, escalation_id: int, due_at: datetime, now: datetime) -> bool:
        """Optimistic claim: only the replica whose UPDATE still sees the old due time re-pages."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state == "paged",
                       Escalation.next_action_at == due_at)
                .values(next_action_at=now + timedelta(seconds=self._escalation.ack_timeout_s),
                        repage_count=Escalation.repage_count + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                return False
            session.add(EscalationEvent(escalation_id=escalation_id, from_state="paged", to_state="paged",
                                        actor=None, note="re-paged", at=now))
            return True

    async def _expire(self, escalation_id: int, due_at: datetime, now: datetime) -> None:
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state == "paged",
                       Escalation.next_action_at == due_at)
                .values(state="expired", next_action_at=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) == 1:
                session.add(EscalationEvent(escalation_id=escalation_id, from_state="paged",
                                            to_state="expired", actor=None, note="nobody acknowledged",
                                            at=now))


async def _by_key(session: AsyncSession, dedupe_key: str) -> Escalation | None:
    statement = select(Escalation).where(Escalation.dedupe_key == dedupe_key)
    return (await session.execute(statement)).scalar_one_or_none()


def page_text(escalation: Escalation, mention: str) -> str:
    return f"{mention} escalation #{escalation.id} ({escalation.state}) from <@{escalation.requester}>"


def page_blocks(escalation: Escalation, mention: str, note: str = "") -> list[dict[str, Any]]:
    """The Block Kit page: who, what, route, confidence, reason, drafts, permalink, and buttons."""
    confidence = "n/a" if escalation.confidence is None else f"{escalation.confidence:.2f}"
    fields = [
        f"*Who*\n<@{escalation.requester}>",
        f"*State*\n{escalation.state}",
        f"*Route*\n{escalation.route or 'n/a'} ({confidence})",
        f"*Trigger*\n{escalation.trigger}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Escalation #{escalation.id}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{mention} a customer needs a person."}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": "*Message*\n>" + escape(escalation.summary[:1500]).replace("\n", "\n>")}},
        {"type": "context", "elements": [{"type": "mrkdwn",
                                          "text": "*Reason:* " + escape(escalation.reason[:500])}]},
    ]
    for index, draft in enumerate(escalation.drafts[:3]):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*Draft {index + 1}*\n" + escape(str(draft)[:800])}})
    if escalation.permalink:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"<{escalation.permalink}|Open the thread>"}})
    if note:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(note)}]})
    buttons: list[dict[str, Any]] = []
    if escalation.state == "paged":
        buttons.append({"type": "button", "action_id": ACK_ACTION, "style": "primary",
                        "text": {"type": "plain_text", "text": "Acknowledge"}, "value": str(escalation.id)})
    if escalation.state in OPEN_STATES:
        buttons.append({"type": "button", "action_id": RESOLVE_ACTION,
                        "text": {"type": "plain_text", "text": "Resolve"}, "value": str(escalation.id)})
    if buttons:
        blocks.append({"type": "actions", "block_id": f"escalation-{escalation.id}", "elements": buttons})
    else:
        who = escalation.resolved_by or escalation.acknowledged_by
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                        "text": f"{escalation.state} by <@{who}>" if who
                                                        else escalation.state}]})
    return blocks
