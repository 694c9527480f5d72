"""[sla] config: targets by default, route and channel, business hours and time zone, and refused bad values;
the business-hours arithmetic the deadlines are computed with (weekends, overnight hours, DST)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import load_config
from bot.errors import ConfigError
from bot.sla.hours import BusinessHours
from bot.sla.policy import SlaPolicy
from tests.conftest import config_with

PARIS = ZoneInfo("Europe/Paris")
NINE_TO_FIVE = BusinessHours(frozenset(range(5)), 9 * 60, 17 * 60, PARIS)


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


def test_targets_come_from_the_channel_then_the_route_then_the_defaults() -> None:
    config = config_with("""
[sla]
first_response_s = 60
first_human_response_min = 30
resolution_h = 8
timezone = "Europe/Paris"
[sla.business_hours]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:30"
[sla.routes.billing]
first_human_response_min = 15
[sla.channels.C0VIP]
first_human_response_min = 5
resolution_h = 2
""")
    policy = SlaPolicy(config.sla)
    assert config.sla.business_hours is not None and config.sla.business_hours.end == 17 * 60 + 30
    assert config.sla.zone == PARIS and config.sla.warn_at == 0.8
    assert policy.target_s("first_human_response", route="general", channel="C0X") == 30 * 60
    assert policy.target_s("first_human_response", route="billing", channel="C0X") == 15 * 60
    assert policy.target_s("first_human_response", route="billing", channel="C0VIP") == 5 * 60
    # A channel that sets only some targets keeps the others from the route or the defaults.
    assert policy.target_s("first_response", route="billing", channel="C0VIP") == 60
    assert policy.target_s("resolution", route=None, channel="C0VIP") == 2 * 3600


def test_without_sla_section_times_are_measured_without_targets() -> None:
    policy = SlaPolicy(config_with('[router]\nmode = "rules"\n').sla)
    assert policy.schedule("resolution", datetime(2026, 1, 5, tzinfo=UTC), route="billing", channel="C").deadline \
        is None


def test_the_built_in_config_has_targets_around_the_clock() -> None:
    sla = load_config().sla
    assert (sla.first_response_s, sla.first_human_response_min, sla.resolution_h) == (60, 30, 24)
    assert sla.business_hours is None


def test_clocks_run_24_7_without_business_hours() -> None:
    policy = SlaPolicy(config_with("[sla]\nfirst_human_response_min = 10\nwarn_at = 0.5\n").sla)
    saturday_night = datetime(2026, 1, 10, 23, 0, tzinfo=UTC)
    schedule = policy.schedule("first_human_response", saturday_night, route=None, channel=None)
    assert schedule.warn_at == saturday_night + timedelta(minutes=5)
    assert schedule.deadline == saturday_night + timedelta(minutes=10)


def test_the_first_response_clock_ignores_business_hours() -> None:
    policy = SlaPolicy(config_with('[sla]\nfirst_response_s = 60\nfirst_human_response_min = 60\n'
                                   '[sla.business_hours]\nstart = "09:00"\nend = "17:00"\n').sla)
    friday_evening = datetime(2026, 1, 9, 18, 0, tzinfo=UTC)
    assert policy.schedule("first_response", friday_evening, route=None, channel=None).deadline == \
        friday_evening + timedelta(seconds=60)
    assert policy.schedule("first_human_response", friday_evening, route=None, channel=None).deadline == \
        datetime(2026, 1, 12, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[sla]\ntimezone = "Mars/Base"', "sla.timezone", "unknown time zone"),
        ("[sla]\nwarn_at = 1.2", "sla.warn_at", "less than 1"),
        ("[sla]\nwarn_at = 0", "sla.warn_at", "greater than 0"),
        ("[sla]\nfirst_response_s = -5", "sla.first_response_s", "greater than 0"),
        ('[sla]\nresolution_h = "soon"', "sla.resolution_h", "valid number"),
        ("[sla]\nfirst_reponse_s = 60", "sla.first_reponse_s", "unknown key"),
        ('[sla.business_hours]\nstart = "9am"', "sla.business_hours.start", "HH:MM"),
        ('[sla.business_hours]\nend = "25:00"', "sla.business_hours.end", "HH:MM"),
        ('[sla.business_hours]\ndays = ["monday"]', "sla.business_hours.days", "not a weekday"),
        ("[sla.business_hours]\ndays = []", "sla.business_hours.days", "at least one day"),
        ('[sla.business_hours]\nstart = "09:00"\nend = "09:00"', "sla.business_hours.end", "must differ"),
        ("[sla.routes.refunds]\nresolution_h = 4", "sla.routes.refunds", "'refunds' is not a defined route"),
        ("[sla.channels.C0X]\nresolution_m = 4", "sla.channels.C0X.resolution_m", "unknown key"),
    ],
)
def test_bad_sla_config_is_refused_with_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "supportbot.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.key, caught.value.file) == (key, str(path))
    assert reason in caught.value.reason


# --- business-hours arithmetic -------------------------------------------------------------------------------


def test_time_before_opening_starts_counting_at_opening() -> None:
    assert NINE_TO_FIVE.add(paris(2026, 1, 5, 7, 0), 1800) == paris(2026, 1, 5, 9, 30)


def test_a_target_longer_than_the_day_carries_over_to_the_next_morning() -> None:
    assert NINE_TO_FIVE.add(paris(2026, 1, 5, 16, 0), 2 * 3600) == paris(2026, 1, 6, 10, 0)


def test_friday_afternoon_carries_over_the_weekend() -> None:
    friday = paris(2026, 1, 9, 16, 30)
    monday = paris(2026, 1, 12, 9, 30)
    assert NINE_TO_FIVE.add(friday, 3600) == monday
    assert NINE_TO_FIVE.between(friday, monday) == 3600
    # A message on Saturday waits for Monday 09:00.
    assert NINE_TO_FIVE.add(paris(2026, 1, 10, 12, 0), 0) == paris(2026, 1, 12, 9, 0)
    assert NINE_TO_FIVE.between(paris(2026, 1, 10, 12, 0), paris(2026, 1, 11, 12, 0)) == 0


def test_a_closing_time_is_exact() -> None:
    assert NINE_TO_FIVE.add(paris(2026, 1, 5, 9, 0), 8 * 3600) == paris(2026, 1, 5, 17, 0)
    assert NINE_TO_FIVE.between(paris(2026, 1, 5, 8, 0), paris(2026, 1, 6, 8, 0)) == 8 * 3600


def test_overnight_hours_run_past_midnight_into_the_next_day() -> None:
    nights = BusinessHours(frozenset({4}), 22 * 60, 6 * 60, ZoneInfo("UTC"))  # Friday 22:00 to Saturday 06:00
    friday = datetime(2026, 1, 9, 23, 0, tzinfo=UTC)
    assert nights.add(friday, 3 * 3600) == datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    # Saturday 05:00 + 2 h: one hour left on this night, the next hour on the next Friday night.
    assert nights.add(datetime(2026, 1, 10, 5, 0, tzinfo=UTC), 7200) == datetime(2026, 1, 16, 23, 0, tzinfo=UTC)
    assert nights.between(datetime(2026, 1, 9, 12, 0, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)) == 8 * 3600


def test_hours_follow_the_local_clock_across_dst() -> None:
    # Paris moves from UTC+1 to UTC+2 on Sunday 29 March 2026: 09:00 is 08:00 UTC before, 07:00 UTC after.
    friday = paris(2026, 3, 27, 16, 0)
    deadline = NINE_TO_FIVE.add(friday, 2 * 3600)
    assert deadline == paris(2026, 3, 30, 10, 0)
    assert deadline.astimezone(UTC) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    assert NINE_TO_FIVE.between(friday, deadline) == 2 * 3600


def test_a_night_shift_over_the_dst_change_is_an_hour_shorter() -> None:
    nights = BusinessHours(frozenset({5}), 22 * 60, 6 * 60, PARIS)  # Saturday 22:00 to Sunday 06:00
    assert nights.between(paris(2026, 3, 28, 21, 0), paris(2026, 3, 29, 7, 0)) == 7 * 3600
    assert nights.between(paris(2026, 10, 24, 21, 0), paris(2026, 10, 25, 7, 0)) == 9 * 3600


def test_whole_days_are_00_00_to_24_00() -> None:
    weekend = BusinessHours(frozenset({5, 6}), 0, 24 * 60, ZoneInfo("UTC"))
    saturday = datetime(2026, 1, 10, 23, 0, tzinfo=UTC)
    assert weekend.add(saturday, 2 * 3600) == datetime(2026, 1, 11, 1, 0, tzinfo=UTC)
    assert weekend.add(datetime(2026, 1, 11, 23, 0, tzinfo=UTC), 2 * 3600) == datetime(2026, 1, 17, 1, 0, tzinfo=UTC)
