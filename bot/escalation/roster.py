"""Who is on call at a moment: a shift, the weekly rotation's turn, the fixed list, or the user group."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import structlog

from bot.clock import Clock
from bot.config import Config, RotationConfig, RotationShift
from bot.escalation.page import Audience

log = structlog.get_logger(__name__)

# Members of the on-call user group are looked up again after this long (or on an unknown presser).
USERGROUP_TTL_S = 300
USERGROUP_MISS_REFRESH_S = 30

# Looks up the members of a user group (the chat port's usergroup_members).
MemberLookup = Callable[[str], Awaitable[list[str]]]


class OnCallBasis(enum.StrEnum):
    """Why these people are on call at a given moment."""

    SHIFT = "shift"
    ROTATION = "rotation"
    ONCALL = "oncall"
    USERGROUP = "usergroup"
    LOCAL = "local"
    NOBODY = "nobody"


@dataclass(frozen=True)
class Coverage:
    """Who is on call from `start` to `end` (both aware datetimes), and by which rule."""

    start: datetime
    end: datetime
    users: tuple[str, ...]
    basis: OnCallBasis


class Roster:
    """Who is on call: a shift covering the moment, else the weekly rotation's turn, else the fixed
    `oncall` list, else the user group. On-call people (anyone in the roster or the user group) and
    staff may press page buttons."""

    def __init__(
        self, config: Config, *, members: MemberLookup | None = None, clock: Clock | None = None,
        local_oncall: str | None = None,
    ) -> None:
        self._escalation = config.escalation
        self._staff = frozenset(config.bot.staff)
        self._members = members
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
        return self.rotation.zone if self.rotation is not None else ZoneInfo("UTC")

    @property
    def can_look_up_groups(self) -> bool:
        return self._members is not None

    @property
    def configured(self) -> bool:
        """True when the config names anyone (users, rotation or user group)."""
        return bool(self.everyone() or self.usergroup)

    def who(self, now: datetime) -> tuple[list[str], OnCallBasis]:
        rotation = self.rotation
        if rotation is not None:
            local = now.astimezone(rotation.zone)
            on_shift = [shift.user for shift in rotation.shifts if _shift_covers(shift, local)]
            if on_shift:
                return list(dict.fromkeys(on_shift)), OnCallBasis.SHIFT
            if rotation.users:
                return [rotation.users[_rotation_turn(rotation, local)]], OnCallBasis.ROTATION
        if self._escalation.oncall:
            return list(self._escalation.oncall), OnCallBasis.ONCALL
        if self.usergroup:
            return [], OnCallBasis.USERGROUP
        if self.local_oncall:
            return [self.local_oncall], OnCallBasis.LOCAL
        return [], OnCallBasis.NOBODY

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

    def audience(self, now: datetime, *, level: int = 1) -> Audience:
        """Whom a page calls on: level 1 whoever is on call now; level 2 everyone and the whole group. The
        user group is named at level 1 too when nobody else is."""
        users = tuple((self.everyone() or self.oncall(now)) if level > 1 else self.oncall(now))
        group = self.usergroup if self.usergroup and (level > 1 or not users) else None
        return Audience(users, group)

    async def usergroup_members(self, *, max_age_s: float = USERGROUP_TTL_S) -> frozenset[str]:
        """Members of the configured user group, cached; stale or empty when the lookup fails."""
        group = self.usergroup
        if group is None or self._members is None:
            return frozenset()
        cached = self._groups.get(group)
        now = self._clock.monotonic() if self._clock is not None else 0.0
        if cached is not None and now - cached[1] < max_age_s:
            return cached[0]
        try:
            members = frozenset(await self._members(group))
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
                    for minute in (shift.start, shift.end):
                        wall_times.add(midnight + timedelta(minutes=minute))
            if rotation.users:
                handoff = rotation.handoff
                wall_times.add(datetime.combine(monday + timedelta(days=handoff.weekday), time())
                               + timedelta(minutes=handoff.minute))
        end_of_week = datetime.combine(monday + timedelta(days=7), time())
        moments = sorted(t for t in wall_times if t <= end_of_week)
        coverage: list[Coverage] = []
        for start, end in zip(moments, moments[1:], strict=False):
            if start == end:
                continue
            users, basis = self.who(start.replace(tzinfo=zone).astimezone(UTC))
            begin = start.replace(tzinfo=zone)
            if coverage and coverage[-1].users == tuple(users) and coverage[-1].basis is basis:
                coverage[-1] = Coverage(coverage[-1].start, end.replace(tzinfo=zone), tuple(users), basis)
            else:
                coverage.append(Coverage(begin, end.replace(tzinfo=zone), tuple(users), basis))
        return coverage


def _shift_covers(shift: RotationShift, local: datetime) -> bool:
    weekday = local.weekday()
    minute = local.hour * 60 + local.minute
    if shift.start < shift.end:
        return weekday in shift.days and shift.start <= minute < shift.end
    # Runs past midnight: the evening of a listed day and the early hours of the day after it.
    return (weekday in shift.days and minute >= shift.start) or (
        (weekday - 1) % 7 in shift.days and minute < shift.end)


def _rotation_turn(rotation: RotationConfig, local: datetime) -> int:
    """Index into rotation.users of the person whose week contains `local` (wall-clock, so DST-proof)."""
    start_monday = rotation.start - timedelta(days=rotation.start.weekday())
    anchor = (datetime.combine(start_monday + timedelta(days=rotation.handoff.weekday), time())
              + timedelta(minutes=rotation.handoff.minute))
    weeks = (local.replace(tzinfo=None) - anchor) // timedelta(days=7)
    return weeks % len(rotation.users)
