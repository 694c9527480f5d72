"""Escalation to on-call humans: who is on call, page with buttons, acknowledge, resolve, re-page, expire.

State machine (stored in `escalations`, every change in `escalation_events`):

    paged ──ack──▶ acknowledged ──resolve──▶ resolved
      │  └──────────────resolve────────────────▲
      └──expire (nobody acknowledged within expire_after_h)──▶ expired

While `paged`, an escalation is delivered in *rounds*: round 1 is the first page, round n + 1 the n-th
re-page. A round is claimed with a conditional UPDATE (the replica whose UPDATE still sees the old
`next_action_at` wins), then posted; `paged_rounds` records the rounds fully posted, so a round that
could not be posted (Slack down, a crash) is "unpaged" and is posted again by the next sweep. Every
page message is a row in `escalation_pages`, written before posting and completed with its ts after,
so acknowledging or resolving updates every copy (one per DM'd person, one per round).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.config import Config, RotationConfig
from bot.domain import InboundMessage, PostedMessage
from bot.errors import TransportError
from bot.mrkdwn import escape
from bot.ports import ChatTransport
from storage import repositories as repo
from storage.engine import Database
from storage.models import Conversation, Escalation, EscalationEvent, EscalationPage, Message, RouteDecision

log = structlog.get_logger(__name__)

ACK_ACTION = "escalation_ack"
RESOLVE_ACTION = "escalation_resolve"
REQUEST_ACTION = "escalation_request"
OPEN_STATES = ("paged", "acknowledged")
STATES = ("paged", "acknowledged", "resolved", "expired")
# In local mode with no roster configured, the playground acts as this on-call person.
LOCAL_ONCALL_USER = "ULOCALONCALL"
# block_id of a page's actions block: "<prefix>:<escalation id>:<round>", findable after a crash.
PAGE_BLOCK_PREFIX = "supportbot-escalation"

# A claimed round not posted within this time is taken over by the next sweep (any replica).
DELIVERY_LEASE_S = 120
# After a failed post (Slack down), the round is retried this much later.
PAGE_RETRY_S = 30
# Nobody to page at all (a config without channel, on-call or user group): retried, loudly, this often.
NOBODY_RETRY_S = 300
# Members of the on-call user group are looked up again after this long (or on an unknown presser).
USERGROUP_TTL_S = 300
USERGROUP_MISS_REFRESH_S = 30
SWEEP_BATCH = 50

ActionResult = Literal["done", "already", "refused", "not_found"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TRIGGER_LABELS = {
    "route": "routed to the escalation persona",
    "rule": "an escalation rule matched",
    "vote": "voting: no confident answer",
    "llm_failure": "the AI model failed",
    "user_request": "the customer asked for a person",
    "button": "the customer asked for a person",
    "failure": "internal error while answering",
}
REQUEST_NOTICE = ("I've asked a person from the support team to join; they will reply in this thread. "
                  "I'll stay quiet here in the meantime.")
ACK_NOTICE = "<@{user}> from the support team is on it and will reply here."
RESOLVE_NOTICE = "<@{user}> from the support team marked this as resolved."
EXPIRED_NOTICE = ("I'm sorry: nobody from the support team could pick this up in time. I'll answer here "
                  "again; if you still need a person, ask for one and I'll page the team once more.")


# --- optional transport capabilities ----------------------------------------------------------


@runtime_checkable
class UsergroupDirectory(Protocol):
    """Resolves a Slack user group to its members (usergroups.users.list), for button authorization
    and for DMs when only a user group is configured. A transport may implement it."""

    async def usergroup_members(self, usergroup: str) -> list[str]: ...


@runtime_checkable
class PageFinder(Protocol):
    """Finds a message the bot posted in `channel` whose blocks include `block_id`; lets a page whose
    post outcome is unknown (crash, timeout) be adopted instead of posted twice. A transport may
    implement it; without it such a page is posted again (at least once beats never)."""

    async def find_message_with_block(self, channel: str, block_id: str) -> PostedMessage | None: ...


# --- requests -----------------------------------------------------------------------------------


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


# --- who is on call -----------------------------------------------------------------------------


class Source(enum.StrEnum):
    """Why these people are on call at a given moment."""

    shift = "shift"
    rotation = "rotation"
    oncall = "oncall"
    usergroup = "usergroup"
    local = "local"
    nobody = "nobody"


@dataclass(frozen=True)
class Coverage:
    """Who is on call from `start` to `end` (both aware datetimes), and by which rule."""

    start: datetime
    end: datetime
    users: tuple[str, ...]
    source: Source


class Roster:
    """Who is on call: a shift covering the moment, else the weekly rotation's turn, else the fixed
    `oncall` list, else the user group. On-call people (anyone in the roster or the user group) and
    staff may press page buttons."""

    def __init__(
        self, config: Config, *, directory: UsergroupDirectory | None = None, clock: Clock | None = None,
        local_oncall: str | None = None,
    ) -> None:
        self._escalation = config.escalation
        self._staff = frozenset(config.bot.staff)
        self._directory = directory
        self._clock = clock
        # A stand-in on-call person when nobody is configured (local mode's playground).
        self.local_oncall = local_oncall if not self.configured else None
        self._groups: dict[str, tuple[frozenset[str], float]] = {}

    @property
    def rotation(self) -> RotationConfig | None:
        return self._escalation.rotation

    @property
    def usergroup(self) -> str | None:
        return self._escalation.usergroup

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.rotation.timezone if self.rotation is not None else "UTC")

    @property
    def can_look_up_groups(self) -> bool:
        return self._directory is not None

    @property
    def configured(self) -> bool:
        """True when the config names anyone (users, rotation or user group)."""
        return bool(self.everyone() or self.usergroup)

    def who(self, now: datetime) -> tuple[list[str], Source]:
        rotation = self.rotation
        if rotation is not None:
            local = now.astimezone(ZoneInfo(rotation.timezone))
            on_shift = [shift.user for shift in rotation.shifts if _shift_covers(shift, local)]
            if on_shift:
                return list(dict.fromkeys(on_shift)), Source.shift
            if rotation.users:
                return [rotation.users[_rotation_turn(rotation, local)]], Source.rotation
        if self._escalation.oncall:
            return list(self._escalation.oncall), Source.oncall
        if self.usergroup:
            return [], Source.usergroup
        if self.local_oncall:
            return [self.local_oncall], Source.local
        return [], Source.nobody

    def oncall(self, now: datetime) -> list[str]:
        """The individual users on call at `now` (empty when only a user group is configured)."""
        return self.who(now)[0]

    def everyone(self) -> list[str]:
        """Every user the config names: the on-call list, the rotation and its shifts."""
        users = list(self._escalation.oncall)
        if self.rotation is not None:
            users += self.rotation.users
            users += [shift.user for shift in self.rotation.shifts]
        return list(dict.fromkeys(users))

    async def usergroup_members(self, *, max_age_s: float = USERGROUP_TTL_S) -> frozenset[str]:
        """Members of the configured user group, cached; stale or empty when the lookup fails."""
        group = self.usergroup
        if group is None or self._directory is None:
            return frozenset()
        cached = self._groups.get(group)
        now = self._clock.monotonic() if self._clock is not None else 0.0
        if cached is not None and now - cached[1] < max_age_s:
            return cached[0]
        try:
            members = frozenset(await self._directory.usergroup_members(group))
        except Exception as exc:  # a lookup failure must not block paging or buttons
            log.warning("usergroup_lookup_failed", usergroup=group, error=str(exc))
            return cached[0] if cached is not None else frozenset()
        self._groups[group] = (members, now)
        return members

    def may_act(self, user: str) -> bool:
        """On-call (roster, rotation, user group as last looked up), staff, or the local stand-in.

        No I/O: safe before a Slack ack (e.g. to tell a staff takeover from a customer reply)."""
        if self._named(user):
            return True
        cached = self._groups.get(self.usergroup) if self.usergroup else None
        return cached is not None and user in cached[0]

    async def authorize(self, user: str) -> bool:
        """Who may press page buttons: may_act with the user group looked up (cached five minutes)."""
        if self._named(user):
            return True
        if self.usergroup is None:
            return False
        if user in await self.usergroup_members():
            return True
        # Someone just added to the group: look again, at most every USERGROUP_MISS_REFRESH_S.
        return user in await self.usergroup_members(max_age_s=USERGROUP_MISS_REFRESH_S)

    def _named(self, user: str) -> bool:
        return user in self._staff or user in self.everyone() or (self.local_oncall is not None
                                                                   and user == self.local_oncall)

    def mention(self, now: datetime, *, level: int = 1) -> str:
        """Level 1 mentions whoever is on call now; level 2 the whole group."""
        users = (self.everyone() or self.oncall(now)) if level > 1 else self.oncall(now)
        parts = [f"<@{user}>" for user in users]
        if self.usergroup and (level > 1 or not parts):
            parts.insert(0, f"<!subteam^{self.usergroup}>")
        return " ".join(parts) or "(nobody is on call: set [escalation] oncall, usergroup or rotation)"

    def week(self, now: datetime) -> list[Coverage]:
        """Who is on call through the week (Monday 00:00 to Monday 00:00 in the rotation's zone)."""
        zone = self.timezone
        local_now = now.astimezone(zone)
        monday = (local_now - timedelta(days=local_now.weekday())).date()
        wall_times = {datetime.combine(monday + timedelta(days=day), time()) for day in range(8)}
        rotation = self.rotation
        if rotation is not None:
            for shift in rotation.shifts:
                for day in range(7):
                    midnight = datetime.combine(monday + timedelta(days=day), time())
                    for minute in (_minutes(shift.start), _minutes(shift.end)):
                        wall_times.add(midnight + timedelta(minutes=minute))
            if rotation.users:
                handoff_day, handoff_minute = _handoff(rotation)
                wall_times.add(datetime.combine(monday + timedelta(days=handoff_day), time())
                               + timedelta(minutes=handoff_minute))
        end_of_week = datetime.combine(monday + timedelta(days=7), time())
        moments = sorted(t for t in wall_times if t <= end_of_week)
        coverage: list[Coverage] = []
        for start, end in zip(moments, moments[1:], strict=False):
            if start == end:
                continue
            users, source = self.who(start.replace(tzinfo=zone).astimezone(UTC))
            begin = start.replace(tzinfo=zone)
            if coverage and coverage[-1].users == tuple(users) and coverage[-1].source is source:
                coverage[-1] = Coverage(coverage[-1].start, end.replace(tzinfo=zone), tuple(users), source)
            else:
                coverage.append(Coverage(begin, end.replace(tzinfo=zone), tuple(users), source))
        return coverage


def _minutes(hh_mm: str) -> int:
    hours, minutes = hh_mm.split(":")
    return int(hours) * 60 + int(minutes)


def _shift_covers(shift: Any, local: datetime) -> bool:
    day = _DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    start, end = _minutes(shift.start), _minutes(shift.end)
    if start < end:
        return day in shift.days and start <= minute < end
    # Runs past midnight: the evening of a listed day and the early hours of the day after it.
    yesterday = _DAYS[(local.weekday() - 1) % 7]
    return (day in shift.days and minute >= start) or (yesterday in shift.days and minute < end)


def _handoff(rotation: RotationConfig) -> tuple[int, int]:
    day, clock_time = rotation.handoff.split()
    return _DAYS.index(day), _minutes(clock_time)


def _rotation_turn(rotation: RotationConfig, local: datetime) -> int:
    """Index into rotation.users of the person whose week contains `local` (wall-clock, so DST-proof)."""
    day, minute = _handoff(rotation)
    start_monday = rotation.start - timedelta(days=rotation.start.weekday())
    anchor = datetime.combine(start_monday + timedelta(days=day), time()) + timedelta(minutes=minute)
    weeks = (local.replace(tzinfo=None) - anchor) // timedelta(days=7)
    return weeks % len(rotation.users)


# --- the service --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """Where one page message goes: a channel, or a DM to one user."""

    key: str
    dm: bool


class _Due(NamedTuple):
    id: int
    next_action_at: datetime | None
    repage_count: int
    paged_rounds: int
    level: int
    created_at: datetime
    conversation_state: str
    taken_over_by: str | None


class EscalationService:
    """Opens, pages, re-pages, acknowledges, resolves and expires escalations; safe on several replicas.

    API for the rest of the bot:
      escalate(EscalationRequest) -> id          the pipeline (route, rule, vote, LLM failure, failure)
      request_human(team, channel, thread_ts, user) -> ActionResult   the "Get a human" button
      acknowledge(id, user) / resolve(id, user) -> ActionResult       the page buttons
      sweep() -> int                             periodic: unpaged rounds, re-pages, expiry
      roster                                     who is on call (Roster)
    """

    def __init__(
        self, config: Config, db: Database, chat: ChatTransport, clock: Clock, *,
        default_channel: str | None = None, directory: UsergroupDirectory | None = None,
    ) -> None:
        """`default_channel` is local mode's page channel (the playground shows it): pages go there when
        the config names no channel, and with nobody configured LOCAL_ONCALL_USER may press the buttons.
        The user group directory defaults to the transport when it implements UsergroupDirectory."""
        self._default_channel = default_channel
        self._config = config
        self._escalation = config.escalation
        self._db = db
        self._chat = chat
        self._clock = clock
        lookups = _lookups_for(chat)
        if directory is None and isinstance(lookups, UsergroupDirectory):
            directory = lookups
        self._finder = lookups if isinstance(lookups, PageFinder) else None
        self.roster = Roster(config, directory=directory, clock=clock,
                             local_oncall=LOCAL_ONCALL_USER if default_channel is not None else None)
        problem = self.paging_problem()
        if problem is not None:
            log.error("escalation_nobody_to_page", problem=problem)

    @property
    def local_oncall_user(self) -> str | None:
        """Who the local playground acts as when it answers a page (None outside local mode)."""
        if self._default_channel is None:
            return None
        candidates = [self.roster.local_oncall, *self.roster.oncall(self._clock.now()), *self.roster.everyone()]
        return next((user for user in candidates if user), None)

    def paging_problem(self) -> str | None:
        """Why pages cannot reach anyone with this config, or None when they can."""
        escalation = self._escalation
        if escalation.channel or self._default_channel or escalation.fallback_channel:
            return None
        if self.roster.everyone():
            return None
        if escalation.usergroup:
            if not self.roster.can_look_up_groups:
                return ("[escalation] names only a user group and no channel: DMs need the group's "
                        "members, which this transport cannot look up; set [escalation] channel")
            return None
        return ("[escalation] has no channel, oncall, usergroup or rotation: escalations are recorded "
                "but nobody can be paged (set [escalation] channel or oncall)")

    # --- opening ----------------------------------------------------------------------------

    async def escalate(self, request: EscalationRequest) -> int:
        """Open (once per triggering message, at most one open per thread) and page; returns the id.

        A page that cannot be posted now (Slack down) is left unpaged for the sweeper; never raises
        TransportError, so the pipeline goes on to tell the user."""
        msg = request.msg
        permalink = await self._permalink(msg.channel, msg.ts)
        now = self._clock.now()
        escalation = Escalation(
            conversation_id=request.conversation_id, decision_id=request.decision_id,
            dedupe_key=msg.dedupe_key, trigger=request.trigger, reason=request.reason[:2000],
            requester=msg.user, summary=msg.text[:4000], route=request.route, confidence=request.confidence,
            drafts=[str(draft)[:4000] for draft in request.drafts[:5]], permalink=permalink,
        )
        escalation_id, created = await self._open(escalation, now)
        if created:
            await self._deliver_round(escalation_id, round_no=1, level=1)
        else:
            await self._deliver_if_due(escalation_id)
        return escalation_id

    async def request_human(self, team: str, channel: str, thread_ts: str, user: str) -> ActionResult:
        """The "Get a human" button: open an escalation for the thread, page, tell the thread.

        "done" when opened, "already" when the thread has an open escalation (nothing changes)."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            existing = await repo.find_conversation(session, team=team, channel=channel, thread_ts=thread_ts)
            if existing is not None and await _open_for(session, existing.id) is not None:
                return "already"
        permalink = await self._permalink(channel, thread_ts)
        async with self._db.sessions.begin() as session:
            conversation_id = (await repo.open_conversation(
                session, source=self._source, team=team, channel=channel, thread_ts=thread_ts, user=user, now=now,
                likely_new=False)).id
            last_text = (await session.execute(
                select(Message.text).where(Message.conversation_id == conversation_id, Message.role == "user")
                .order_by(Message.id.desc()).limit(1))).scalar_one_or_none()
            decision = (await session.execute(
                select(RouteDecision).where(RouteDecision.conversation_id == conversation_id)
                .order_by(RouteDecision.id.desc()).limit(1))).scalar_one_or_none()
            earlier = (await session.execute(
                select(func.count()).select_from(Escalation)
                .where(Escalation.conversation_id == conversation_id))).scalar_one()
        escalation = Escalation(
            conversation_id=conversation_id, decision_id=decision.id if decision else None,
            dedupe_key=f"request:{team}:{channel}:{thread_ts}:{earlier + 1}", trigger="user_request",
            reason="pressed the “Get a human” button",
            requester=user, summary=(last_text or "(asked for a person)")[:4000],
            route=decision.route if decision else None, confidence=decision.confidence if decision else None,
            drafts=[], permalink=permalink,
        )
        escalation_id, created = await self._open(escalation, now)
        if not created:
            return "already"
        await self._deliver_round(escalation_id, round_no=1, level=1)
        await self._tell_thread(channel, thread_ts, REQUEST_NOTICE)
        return "done"

    async def _open(self, escalation: Escalation, now: datetime) -> tuple[int, bool]:
        """Insert the escalation, claimed for immediate delivery; or find the one that already exists."""
        escalation.state = "paged"
        escalation.level = 1
        escalation.repage_count = 0
        escalation.paged_rounds = 0
        escalation.next_action_at = now + timedelta(seconds=DELIVERY_LEASE_S)
        escalation.created_at = escalation.updated_at = now
        try:
            async with self._db.sessions.begin() as session:
                existing = await _existing(session, escalation.dedupe_key, escalation.conversation_id)
                if existing is not None:
                    return existing, False
                session.add(escalation)
                await session.flush()
                session.add(EscalationEvent(
                    escalation_id=escalation.id, from_state=None, to_state="paged", actor=escalation.requester,
                    note=f"{escalation.trigger}: {escalation.reason}"[:2000], at=now))
                await repo.set_conversation_state(session, escalation.conversation_id, "escalated", now=now)
        except IntegrityError:
            # Another replica (or a double click) opened it a moment ago.
            async with self._db.sessions() as session:
                existing = await _existing(session, escalation.dedupe_key, escalation.conversation_id)
            if existing is None:
                raise
            return existing, False
        log.info("escalation_opened", escalation_id=escalation.id, trigger=escalation.trigger)
        return escalation.id, True

    # --- buttons ----------------------------------------------------------------------------

    async def acknowledge(self, escalation_id: int | str, user: str) -> ActionResult:
        """`escalation_ack`: "done", "already" (double click, replay, or not paged any more),
        "refused" (not on call or staff: nothing changes), "not_found"."""
        return await self._transition(escalation_id, user, "acknowledged", from_states=("paged",))

    async def resolve(self, escalation_id: int | str, user: str) -> ActionResult:
        """`escalation_resolve`: same answers as acknowledge; resolving lets the bot answer the thread again."""
        return await self._transition(escalation_id, user, "resolved", from_states=OPEN_STATES)

    async def _transition(
        self, raw_id: int | str, user: str, to_state: str, *, from_states: Sequence[str], note: str = "",
        tell_thread: bool = True,
    ) -> ActionResult:
        escalation_id = _parse_id(raw_id)
        if not await self.roster.authorize(user):
            log.info("escalation_action_refused", escalation_id=raw_id, user=user, to_state=to_state)
            return "refused"
        if escalation_id is None:
            return "not_found"
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
            # Conditional update: a double click or a replayed request changes nothing.
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state.in_(from_states))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                return "already"
            previous = escalation.state
            session.add(EscalationEvent(escalation_id=escalation_id, from_state=previous, to_state=to_state,
                                        actor=user, note=note, at=now))
            conversation = await session.get(Conversation, escalation.conversation_id)
            assert conversation is not None
            if to_state == "resolved":
                await repo.set_conversation_state(session, conversation.id, "resolved", now=now)
            channel, thread_ts = conversation.channel, conversation.thread_ts
        log.info("escalation_transition", escalation_id=escalation_id, from_state=previous, state=to_state,
                 actor=user)
        await self._refresh_pages(escalation_id)
        if tell_thread:
            template = ACK_NOTICE if to_state == "acknowledged" else RESOLVE_NOTICE
            await self._tell_thread(channel, thread_ts, template.format(user=user))
        return "done"

    # --- paging -------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Post unpaged rounds, re-page unacknowledged escalations whose time is up, expire old ones.

        Safe on every replica at once: each step claims its row with a conditional UPDATE first.
        Returns how many page rounds it posted plus how many escalations it closed (expired, or
        acknowledged because a staff member answered in the thread)."""
        now = self._clock.now()
        await self.roster.usergroup_members()  # keeps the cache Roster.may_act reads warm
        async with self._db.sessions() as session:
            rows = (await session.execute(
                select(Escalation.id, Escalation.next_action_at, Escalation.repage_count, Escalation.paged_rounds,
                       Escalation.level, Escalation.created_at, Conversation.state, Conversation.taken_over_by)
                .join(Conversation, Conversation.id == Escalation.conversation_id)
                .where(Escalation.state == "paged", Escalation.next_action_at <= now)
                .order_by(Escalation.next_action_at).limit(SWEEP_BATCH)
            )).all()
        acted = 0
        for row in rows:
            due = _Due(*row)
            try:
                acted += await self._sweep_one(due, now)
            except Exception:
                log.exception("escalation_sweep_failed", escalation_id=due.id)
        return acted

    async def _sweep_one(self, due: _Due, now: datetime) -> int:
        if now >= due.created_at + timedelta(hours=self._escalation.expire_after_h):
            return int(await self._expire(due, now))
        if due.conversation_state == "taken_over" and due.taken_over_by:
            # A staff member already answered in the thread: they have it, stop paging.
            result = await self._transition(due.id, due.taken_over_by, "acknowledged", from_states=("paged",),
                                            note="replied in the thread", tell_thread=False)
            if result == "done":
                return 1
        current_round = due.repage_count + 1
        if due.paged_rounds < current_round:
            # Unpaged: the round could not be posted (Slack down, crash); post it now.
            if await self._claim(due, now, repage=False):
                return int(await self._deliver_round(due.id, round_no=current_round, level=due.level))
            return 0
        if current_round >= self._max_rounds:
            # Every re-page is spent: wait for an acknowledgement until the escalation expires.
            await self._claim(due, now, repage=False, until=self._expires_at(due.created_at))
            return 0
        next_round = current_round + 1
        if await self._claim(due, now, repage=True, level=self._level_of(next_round)):
            return int(await self._deliver_round(due.id, round_no=next_round, level=self._level_of(next_round)))
        return 0

    async def _deliver_if_due(self, escalation_id: int) -> None:
        """After a retried escalate(): post the current round if it is unpaged and nobody else is on it."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            row = (await session.execute(
                select(Escalation.id, Escalation.next_action_at, Escalation.repage_count, Escalation.paged_rounds,
                       Escalation.level, Escalation.created_at, Conversation.state, Conversation.taken_over_by)
                .join(Conversation, Conversation.id == Escalation.conversation_id)
                .where(Escalation.id == escalation_id, Escalation.state == "paged",
                       Escalation.next_action_at <= now, Escalation.paged_rounds <= Escalation.repage_count)
            )).one_or_none()
        if row is None:
            return
        due = _Due(*row)
        if await self._claim(due, now, repage=False):
            await self._deliver_round(due.id, round_no=due.repage_count + 1, level=due.level)

    async def _claim(self, due: _Due, now: datetime, *, repage: bool, level: int | None = None,
                     until: datetime | None = None) -> bool:
        """Optimistic claim: only the replica whose UPDATE still sees the old due time goes on."""
        values: dict[str, Any] = {
            "next_action_at": until or now + timedelta(seconds=DELIVERY_LEASE_S), "updated_at": now}
        if repage:
            values.update(repage_count=Escalation.repage_count + 1, level=level or due.level)
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == due.id, Escalation.state == "paged",
                       Escalation.next_action_at == due.next_action_at,
                       Escalation.repage_count == due.repage_count)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            claimed = getattr(result, "rowcount", 0) == 1
            if claimed and repage:
                session.add(EscalationEvent(
                    escalation_id=due.id, from_state="paged", to_state="paged", actor=None, at=now,
                    note=f"re-page {due.repage_count + 1} (level {level}): nobody acknowledged within "
                         f"{self._escalation.ack_timeout_s}s"))
        return claimed

    async def _deliver_round(self, escalation_id: int, *, round_no: int, level: int) -> bool:
        """Post round `round_no` to every target not already holding it; the caller holds the claim."""
        now = self._clock.now()
        async with self._db.sessions() as session:
            escalation = await session.get(Escalation, escalation_id)
            assert escalation is not None
            conversation = await session.get(Conversation, escalation.conversation_id)
            assert conversation is not None
            posted_rows = {page.target: page for page in (await session.execute(
                select(EscalationPage).where(EscalationPage.escalation_id == escalation_id,
                                             EscalationPage.round == round_no))).scalars()}
        if escalation.state != "paged":
            return False
        targets = await self._targets(level, now)
        if not targets:
            log.error("escalation_nobody_to_page", escalation_id=escalation_id, problem=self.paging_problem())
            await self._retry_round(escalation_id, round_no, now, NOBODY_RETRY_S)
            return False
        mention = self.roster.mention(now, level=level)
        note = "" if round_no == 1 else self._round_note(round_no, level)
        text = page_text(escalation, mention, conversation.channel)
        blocks = page_blocks(escalation, mention, channel=conversation.channel, thread_ts=conversation.thread_ts,
                             round_no=round_no, level=level, note=note)
        first: PostedMessage | None = None
        failed: list[str] = []
        for target in targets:
            row = posted_rows.get(target.key)
            if row is not None and row.ts is not None and row.channel is not None:
                first = first or PostedMessage(row.channel, row.ts)
                continue
            try:
                posted = await self._post_page(escalation_id, round_no, level, target, row, text, blocks)
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
        await self._finish_round(escalation_id, round_no, level, first, len(targets) - len(failed), failed)
        return True

    async def _post_page(
        self, escalation_id: int, round_no: int, level: int, target: _Target, row: EscalationPage | None,
        text: str, blocks: list[dict[str, Any]],
    ) -> PostedMessage:
        now = self._clock.now()
        channel = row.channel if row is not None and row.channel else (
            await self._chat.open_dm(target.key) if target.dm else target.key)
        if row is None:
            async with self._db.sessions.begin() as session:
                session.add(EscalationPage(escalation_id=escalation_id, round=round_no, level=level,
                                           target=target.key, channel=channel, ts=None, created_at=now))
        elif self._finder is not None:
            # A previous attempt may have posted before its outcome was lost: adopt that message.
            try:
                found = await self._finder.find_message_with_block(channel, page_block_id(escalation_id, round_no))
            except Exception as exc:  # cannot look: post again, a duplicate beats a missing page
                log.warning("escalation_page_lookup_failed", escalation_id=escalation_id, error=str(exc))
                found = None
            if found is not None:
                await self._record_page(escalation_id, round_no, target.key, found)
                return found
        posted = await self._chat.post_message(channel, text, blocks=blocks)
        await self._record_page(escalation_id, round_no, target.key, posted)
        return posted

    async def _record_page(self, escalation_id: int, round_no: int, target: str, posted: PostedMessage) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(EscalationPage)
                .where(EscalationPage.escalation_id == escalation_id, EscalationPage.round == round_no,
                       EscalationPage.target == target)
                .values(channel=posted.channel, ts=posted.ts, posted_at=self._clock.now())
                .execution_options(synchronize_session=False)
            )

    async def _finish_round(self, escalation_id: int, round_no: int, level: int, first: PostedMessage,
                            count: int, missed: Sequence[str] = ()) -> None:
        now = self._clock.now()
        async with self._db.sessions.begin() as session:
            escalation = await session.get(Escalation, escalation_id)
            assert escalation is not None
            await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.paged_rounds < round_no)
                .values(paged_rounds=round_no, page_channel=first.channel, page_ts=first.ts, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            next_at = (now + timedelta(seconds=self._escalation.ack_timeout_s) if round_no < self._max_rounds
                       else self._expires_at(escalation.created_at))
            await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state == "paged",
                       Escalation.repage_count == round_no - 1)
                .values(next_action_at=next_at)
                .execution_options(synchronize_session=False)
            )
            session.add(EscalationEvent(
                escalation_id=escalation_id, from_state="paged", to_state="paged", actor=None, at=now,
                note=f"page round {round_no} posted at level {level} ({count} message{'s' * (count != 1)})"
                     + (f"; could not reach {', '.join(missed)}" if missed else "")))
            still_paged = escalation.state == "paged"
        log.info("escalation_paged", escalation_id=escalation_id, round=round_no, level=level, messages=count)
        if not still_paged:
            # Acknowledged while this round was being posted: bring the new pages up to date.
            await self._refresh_pages(escalation_id)

    async def _retry_round(self, escalation_id: int, round_no: int, now: datetime, delay_s: int) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Escalation)
                .where(Escalation.id == escalation_id, Escalation.state == "paged",
                       Escalation.paged_rounds < round_no)
                .values(next_action_at=now + timedelta(seconds=delay_s), updated_at=now)
                .execution_options(synchronize_session=False)
            )

    async def _targets(self, level: int, now: datetime) -> list[_Target]:
        channel = self._page_channel(level)
        if channel is not None:
            return [_Target(channel, dm=False)]
        if level > 1:
            users = self.roster.everyone() + sorted(await self.roster.usergroup_members())
        else:
            users = self.roster.oncall(now) or self.roster.everyone() or sorted(await self.roster.usergroup_members())
        return [_Target(user, dm=True) for user in dict.fromkeys(users)]

    def _page_channel(self, level: int) -> str | None:
        if level > 1 and self._escalation.fallback_channel:
            return self._escalation.fallback_channel
        return self._escalation.channel or self._default_channel

    @property
    def _max_rounds(self) -> int:
        """Level 1: the page and repage_max re-pages; then level 2: as many again."""
        return 2 * (1 + self._escalation.repage_max)

    def _level_of(self, round_no: int) -> int:
        return 1 if round_no <= 1 + self._escalation.repage_max else 2

    def _expires_at(self, created_at: datetime) -> datetime:
        return created_at + timedelta(hours=self._escalation.expire_after_h)

    def _round_note(self, round_no: int, level: int) -> str:
        minutes = self._escalation.ack_timeout_s * (round_no - 1) / 60
        where = "the whole on-call group" if level > 1 else "on-call"
        return f"Re-page {round_no - 1}: nobody acknowledged for {minutes:g} min; paging {where}."

    # --- expiry and page updates -------------------------------------------------------------

    async def _expire(self, due: _Due, now: datetime) -> bool:
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(Escalation)
                .where(Escalation.id == due.id, Escalation.state == "paged",
                       Escalation.next_action_at == due.next_action_at)
                .values(state="expired", next_action_at=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                return False
            session.add(EscalationEvent(escalation_id=due.id, from_state="paged", to_state="expired", actor=None,
                                        note=f"nobody acknowledged within {self._escalation.expire_after_h}h",
                                        at=now))
            escalation = await session.get(Escalation, due.id)
            assert escalation is not None
            conversation = await session.get(Conversation, escalation.conversation_id)
            assert conversation is not None
            reopen = conversation.state == "escalated"
            if reopen:
                # Nobody came: the bot answers this thread again rather than leave it silent.
                await repo.set_conversation_state(session, conversation.id, "open", now=now)
            channel, thread_ts = conversation.channel, conversation.thread_ts
        log.warning("escalation_expired", escalation_id=due.id)
        await self._refresh_pages(due.id)
        if reopen:
            await self._tell_thread(channel, thread_ts, EXPIRED_NOTICE)
        return True

    async def _refresh_pages(self, escalation_id: int) -> None:
        """Re-render every posted page of the escalation with its current state (chat.update)."""
        async with self._db.sessions() as session:
            escalation = await session.get(Escalation, escalation_id, populate_existing=True)
            assert escalation is not None
            conversation = await session.get(Conversation, escalation.conversation_id)
            assert conversation is not None
            pages = (await session.execute(
                select(EscalationPage).where(EscalationPage.escalation_id == escalation_id,
                                             EscalationPage.ts.is_not(None))
                .order_by(EscalationPage.id))).scalars().all()
        now = self._clock.now()
        for page in pages:
            assert page.channel is not None and page.ts is not None
            mention = self.roster.mention(now, level=page.level)
            try:
                await self._chat.update_message(
                    page.channel, page.ts, page_text(escalation, mention, conversation.channel),
                    blocks=page_blocks(escalation, mention, channel=conversation.channel,
                                       thread_ts=conversation.thread_ts, round_no=page.round, level=page.level))
            except TransportError as exc:
                log.warning("escalation_page_update_failed", escalation_id=escalation_id, channel=page.channel,
                            ts=page.ts, error=str(exc))

    async def _tell_thread(self, channel: str, thread_ts: str, text: str) -> None:
        try:
            await self._chat.post_message(channel, text, thread_ts=thread_ts)
        except TransportError as exc:
            log.warning("escalation_thread_notice_failed", channel=channel, thread_ts=thread_ts, error=str(exc))

    async def _permalink(self, channel: str, ts: str) -> str | None:
        try:
            return await self._chat.permalink(channel, ts)
        except Exception as exc:  # the page is more useful without a link than not at all
            log.warning("permalink_unavailable", channel=channel, ts=ts, error=str(exc))
            return None

    @property
    def _source(self) -> str:
        name = getattr(self._chat, "name", "slack")
        return name if name in ("slack", "local", "cli") else "slack"


def _lookups_for(chat: ChatTransport) -> object | None:
    """The transport itself when it implements the optional lookups, else ones over its Slack Web API
    client when it has one (bot.slack.transport.SlackChat.client), else None (local mode)."""
    if isinstance(chat, UsergroupDirectory | PageFinder):
        return chat
    from bot.escalation_slack import SlackEscalationLookups

    return SlackEscalationLookups.for_transport(chat)


async def _existing(session: AsyncSession, dedupe_key: str, conversation_id: int) -> int | None:
    """The escalation for this triggering message, or else the thread's open escalation."""
    by_key = (await session.execute(
        select(Escalation.id).where(Escalation.dedupe_key == dedupe_key))).scalar_one_or_none()
    return by_key if by_key is not None else await _open_for(session, conversation_id)


async def _open_for(session: AsyncSession, conversation_id: int) -> int | None:
    return (await session.execute(
        select(Escalation.id).where(Escalation.conversation_id == conversation_id,
                                    Escalation.state.in_(OPEN_STATES)))).scalar_one_or_none()


def _parse_id(raw: int | str) -> int | None:
    try:
        value = int(str(raw).strip())
    except ValueError:
        return None
    return value if value > 0 else None


# --- the page -----------------------------------------------------------------------------------


def page_block_id(escalation_id: int, round_no: int) -> str:
    return f"{PAGE_BLOCK_PREFIX}:{escalation_id}:{round_no}"


def _slack_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def page_text(escalation: Escalation, mention: str, channel: str) -> str:
    """The notification text (what a phone shows); the blocks carry the details."""
    if escalation.state == "paged":
        return (f"{mention} Escalation #{escalation.id}: <@{escalation.requester}> in <#{channel}> needs a person "
                f"({TRIGGER_LABELS.get(escalation.trigger, escalation.trigger)})")
    return f"Escalation #{escalation.id} ({escalation.state}) from <@{escalation.requester}> in <#{channel}>"


def page_blocks(
    escalation: Escalation, mention: str, *, channel: str, thread_ts: str, round_no: int = 1, level: int = 1,
    note: str = "",
) -> list[dict[str, Any]]:
    """The Block Kit page: who, what, route, confidence, reason, drafts, permalink, and the buttons."""
    state = escalation.state
    titles = {"paged": "needs a person", "acknowledged": "acknowledged", "resolved": "resolved",
              "expired": "expired, nobody acknowledged"}
    confidence = "n/a" if escalation.confidence is None else f"{escalation.confidence:.2f}"
    level_text = " · *level 2* (whole group)" if level > 1 else ""
    fields = [
        f"*From*\n<@{escalation.requester}> in <#{channel}>",
        f"*Route*\n{escalation.route or 'n/a'} (confidence {confidence})",
        f"*Why*\n{TRIGGER_LABELS.get(escalation.trigger, escalation.trigger)}",
        f"*State*\n{state}{level_text}",
    ]
    quoted = ">" + escape(escalation.summary[:1500]).replace("\n", "\n>")
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": f"Escalation #{escalation.id}: {titles[state]}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"{mention} a customer needs a person from the team."}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Message*\n{quoted}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Reason*\n" + escape(escalation.reason[:1500])}},
    ]
    for index, draft in enumerate(escalation.drafts[:3]):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*Draft {index + 1} (from voting)*\n"
                                                           + escape(str(draft)[:1500])}})
    if escalation.permalink:
        link = f"<{escalation.permalink}|Open the thread>"
    else:
        link = f"Thread {thread_ts} in <#{channel}>"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    status = []
    if note:
        status.append(escape(note))
    if escalation.acknowledged_by:
        status.append(f"Acknowledged by <@{escalation.acknowledged_by}> {_slack_time(escalation.acknowledged_at)}")
    if escalation.resolved_by:
        status.append(f"Resolved by <@{escalation.resolved_by}> {_slack_time(escalation.resolved_at)}")
    if state == "expired":
        status.append("Expired: nobody acknowledged in time; the bot answers the thread again.")
    if status:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line} for line in status]})
    buttons: list[dict[str, Any]] = []
    if state == "paged":
        buttons.append({"type": "button", "action_id": ACK_ACTION, "style": "primary",
                        "text": {"type": "plain_text", "text": "Acknowledge"}, "value": str(escalation.id)})
    if state in OPEN_STATES:
        buttons.append({"type": "button", "action_id": RESOLVE_ACTION,
                        "text": {"type": "plain_text", "text": "Resolve"}, "value": str(escalation.id)})
    block_id = page_block_id(escalation.id, round_no)
    if buttons:
        blocks.append({"type": "actions", "block_id": block_id, "elements": buttons})
    else:
        # Keep the block id, so a lost post can still be found after the buttons are gone.
        blocks.append({"type": "context", "block_id": block_id,
                       "elements": [{"type": "mrkdwn", "text": f"Closed: {state}"}]})
    return blocks


# --- reviewing: `supportbot escalations` and `supportbot oncall` --------------------------------


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
    page_count = (select(func.count()).select_from(EscalationPage)
                  .where(EscalationPage.escalation_id == Escalation.id, EscalationPage.ts.is_not(None))
                  .scalar_subquery())
    statement = (
        select(Escalation, Conversation.channel, Conversation.thread_ts, page_count)
        .join(Conversation, Conversation.id == Escalation.conversation_id)
        .order_by(Escalation.created_at.desc(), Escalation.id.desc()).limit(limit)
    )
    if open_only:
        statement = statement.where(Escalation.state.in_(OPEN_STATES))
    rows = (await session.execute(statement)).all()
    return [
        EscalationSummary(
            id=e.id, created_at=e.created_at, state=e.state, level=e.level, repages=e.repage_count,
            paged=e.paged_rounds > e.repage_count, pages=int(pages), trigger=e.trigger, route=e.route,
            confidence=e.confidence, requester=e.requester, channel=channel, thread_ts=thread_ts,
            acknowledged_by=e.acknowledged_by, acknowledged_at=e.acknowledged_at, resolved_by=e.resolved_by,
            resolved_at=e.resolved_at, next_action_at=e.next_action_at, permalink=e.permalink, reason=e.reason,
        )
        for e, channel, thread_ts, pages in rows
    ]


def oncall_report(config: Config, now: datetime) -> dict[str, Any]:
    """Who is on call now and through this week, as `supportbot oncall --format json` prints it."""
    roster = Roster(config)
    users, source = roster.who(now)
    escalation = config.escalation
    return {
        "now": now.astimezone(roster.timezone).isoformat(),
        "timezone": str(roster.timezone),
        "oncall": users,
        "source": source.value,
        "usergroup": escalation.usergroup,
        "staff": list(config.bot.staff),
        "channel": escalation.channel,
        "fallback_channel": escalation.fallback_channel,
        "ack_timeout_s": escalation.ack_timeout_s,
        "repage_max": escalation.repage_max,
        "week": [{"start": c.start.isoformat(), "end": c.end.isoformat(), "users": list(c.users),
                  "source": c.source.value} for c in roster.week(now)],
    }


__all__ = [
    "ACK_ACTION", "LOCAL_ONCALL_USER", "OPEN_STATES", "REQUEST_ACTION", "RESOLVE_ACTION", "ActionResult",
    "Coverage", "EscalationRequest", "EscalationService", "EscalationSummary", "PageFinder", "Roster", "Source",
    "UsergroupDirectory", "list_escalations", "oncall_report", "page_blocks", "page_text",
]
