"""Clock arithmetic for targets: seconds counted 24/7, or only within weekly business hours in a time zone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.config import BusinessHoursConfig


class Calendar(Protocol):
    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of counted time after `start`."""
        ...

    def between(self, start: datetime, end: datetime) -> float:
        """Counted seconds from `start` to `end` (0 when `end` is not later)."""
        ...


class AlwaysOpen:
    """Every second counts."""

    def add(self, start: datetime, seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    def between(self, start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds())


class BusinessHours:
    """Only seconds inside the weekly opening hours count. Hours are wall-clock in `zone`, so a DST change
    moves them with the local clock (a 09:00-17:00 day stays 8 hours; a night shift over the change is
    one hour shorter or longer, as the people working it see it)."""

    def __init__(self, days: frozenset[int], start_minute: int, end_minute: int, zone: ZoneInfo) -> None:
        if not days or start_minute == end_minute:
            raise ValueError("business hours need at least one day and an end different from the start")
        self.days = days
        self.start_minute = start_minute
        self.end_minute = end_minute
        self.zone = zone

    @classmethod
    def from_config(cls, hours: BusinessHoursConfig, zone: ZoneInfo) -> BusinessHours:
        return cls(hours.days, hours.start, hours.end, zone)

    def windows(self, after: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening windows (UTC open, UTC close), in order, from the one that contains or follows `after`."""
        day = after.astimezone(self.zone).date() - timedelta(days=1)  # yesterday's night may still run
        overnight = self.end_minute < self.start_minute
        while True:
            if day.weekday() in self.days:
                midnight = datetime.combine(day, time())
                opens = self._utc(midnight + timedelta(minutes=self.start_minute))
                closes = self._utc(midnight + timedelta(days=int(overnight), minutes=self.end_minute))
                if closes > after:
                    yield opens, closes
            day += timedelta(days=1)

    def _utc(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self.zone).astimezone(UTC)

    def add(self, start: datetime, seconds: float) -> datetime:
        remaining = timedelta(seconds=max(0.0, seconds))
        for opens, closes in self.windows(start):
            begin = max(opens, start)
            if remaining <= closes - begin:
                return begin + remaining
            remaining -= closes - begin
        raise AssertionError("unreachable: windows() never ends")

    def between(self, start: datetime, end: datetime) -> float:
        counted = 0.0
        for opens, closes in self.windows(start):
            if opens >= end:
                break
            counted += max(0.0, (min(closes, end) - max(opens, start)).total_seconds())
        return counted
