"""Who is on call: the fixed list, the weekly rotation and its shifts in a time zone, the user group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.config import parse_config
from bot.errors import ConfigError
from bot.escalation import Audience, OnCallBasis, Roster
from tests.conftest import config_with

ROTATION_TOML = """
[bot]
staff = ["U0STAFF"]
[escalation]
oncall = ["U0FALLBACK"]
usergroup = "S0ONCALL"
[escalation.rotation]
timezone = "Europe/Paris"
users = ["U0BOB", "U0CAROL"]
handoff = "mon 09:00"
start = 2026-01-05
[[escalation.rotation.shifts]]
user = "U0NIGHT"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "22:00"
end = "06:00"
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("moment", "expected", "source"), [
    ("2026-01-05T07:59", ["U0CAROL"], OnCallBasis.ROTATION),  # 08:59 in Paris: last week's turn until 09:00
    ("2026-01-05T08:00", ["U0BOB"], OnCallBasis.ROTATION),    # 09:00 in Paris: hand-over
    ("2026-01-07T22:30", ["U0NIGHT"], OnCallBasis.SHIFT),     # Wednesday 23:30
    ("2026-01-08T04:30", ["U0NIGHT"], OnCallBasis.SHIFT),     # Thursday 05:30, the Wednesday night shift
    ("2026-01-10T04:30", ["U0NIGHT"], OnCallBasis.SHIFT),     # Saturday 05:30, Friday's night shift
    ("2026-01-11T04:30", ["U0BOB"], OnCallBasis.ROTATION),    # Sunday 05:30: no Saturday night shift
    ("2026-01-12T08:00", ["U0CAROL"], OnCallBasis.ROTATION),  # next Monday 09:00
    ("2026-03-30T06:59", ["U0CAROL"], OnCallBasis.ROTATION),  # after the switch to summer time: 08:59 CEST
    ("2026-03-30T07:00", ["U0BOB"], OnCallBasis.ROTATION),    # 09:00 CEST, twelve weeks after the start
])
def test_who_is_on_call_follows_the_rotation_in_its_time_zone(moment: str, expected: list[str],
                                                              source: OnCallBasis) -> None:
    assert Roster(config_with(ROTATION_TOML)).who(utc(moment)) == (expected, source)


def test_without_a_rotation_the_list_then_the_group_then_nobody() -> None:
    now = utc("2026-01-05T12:00")
    listed = Roster(config_with('[escalation]\noncall = ["U0A1", "U0A2"]'))
    assert listed.who(now) == (["U0A1", "U0A2"], OnCallBasis.ONCALL)
    assert listed.audience(now) == Audience(("U0A1", "U0A2"), None)
    group_only = Roster(config_with('[escalation]\nusergroup = "S0ONCALL"'))
    assert group_only.who(now) == ([], OnCallBasis.USERGROUP)
    assert group_only.audience(now) == Audience((), "S0ONCALL")  # nobody else to call on: the group
    assert Roster(config_with("[escalation]")).who(now) == ([], OnCallBasis.NOBODY)
    assert Roster(config_with("[escalation]"), local_oncall="ULOCALONCALL").who(now) == (
        ["ULOCALONCALL"], OnCallBasis.LOCAL)


def test_level_two_mentions_the_group_and_everyone_in_the_rotation() -> None:
    roster = Roster(config_with(ROTATION_TOML))
    now = utc("2026-01-06T12:00")
    assert roster.audience(now) == Audience(("U0BOB",), None)
    assert roster.audience(now, level=2) == Audience(("U0FALLBACK", "U0BOB", "U0CAROL", "U0NIGHT"), "S0ONCALL")


def test_the_week_is_covered_from_monday_to_monday_in_the_rotation_zone() -> None:
    week = Roster(config_with(ROTATION_TOML)).week(utc("2026-01-07T12:00"))
    assert week[0].start.isoformat() == "2026-01-05T00:00:00+01:00"
    assert week[-1].end.isoformat() == "2026-01-12T00:00:00+01:00"
    assert all(a.end == b.start for a, b in zip(week, week[1:], strict=False))
    assert [(slot.start.strftime("%a %H:%M"), slot.users) for slot in week[:4]] == [
        ("Mon 00:00", ("U0CAROL",)), ("Mon 09:00", ("U0BOB",)), ("Mon 22:00", ("U0NIGHT",)), ("Tue 06:00", ("U0BOB",))]
    assert (week[-1].start.strftime("%a %H:%M"), week[-1].users) == ("Sat 06:00", ("U0BOB",))


class CountingDirectory:
    """Plays usergroups.users.list for one group and counts the lookups."""

    def __init__(self, members: list[str]) -> None:
        self.members = members
        self.lookups = 0

    async def usergroup_members(self, usergroup: str) -> list[str]:
        assert usergroup == "S0ONCALL"
        self.lookups += 1
        return list(self.members)


async def test_user_group_members_may_act_and_the_lookup_is_cached() -> None:
    clock = ManualClock()
    directory = CountingDirectory(["U0G1"])
    roster = Roster(config_with('[bot]\nstaff = ["U0STAFF"]\n[escalation]\nusergroup = "S0ONCALL"'),
                    members=directory.usergroup_members, clock=clock)
    assert not roster.may_act("U0G1")  # nothing looked up yet, and may_act never calls Slack
    assert await roster.authorize("U0STAFF") and directory.lookups == 0
    assert await roster.authorize("U0G1") and directory.lookups == 1
    assert roster.may_act("U0G1")
    assert not await roster.authorize("U0OTHER") and directory.lookups == 1  # looked up a moment ago

    directory.members.append("U0NEW")
    clock.advance(31)  # someone unknown presses: the group is looked up again, at most every 30 s
    assert await roster.authorize("U0NEW") and directory.lookups == 2
    clock.advance(timedelta(minutes=6).total_seconds())
    assert await roster.authorize("U0G1") and directory.lookups == 3  # the cache lasts five minutes


@pytest.mark.parametrize(("toml", "key", "reason"), [
    ('[escalation]\nusergroup = "oncall-team"', "escalation.usergroup", "not a Slack user group id"),
    ('[escalation.rotation]\nusers = ["bob"]', "escalation.rotation.users", "not a Slack user id"),
    ('[escalation.rotation]\nhandoff = "monday 9am"', "escalation.rotation.handoff", "weekday and time"),
    ('[[escalation.rotation.shifts]]\nuser = "U0A1"\nstart = "25:00"', "escalation.rotation.shifts.0.start",
     "time of day"),
])
def test_bad_on_call_config_is_refused_with_the_key(toml: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(toml, source=None)
    assert caught.value.key == key and reason in caught.value.reason


def test_the_user_group_may_be_given_as_the_mention_slack_shows() -> None:
    config = parse_config('[escalation]\nusergroup = "<!subteam^S0123ONCALL|@oncall>"', source=None)
    assert config.escalation.usergroup == "S0123ONCALL"
