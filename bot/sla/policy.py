"""Which target applies to a thread, and when its warning and deadline fall on the configured calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.config import SlaSection, SlaTargets
from bot.sla.hours import AlwaysOpen, BusinessHours, Calendar
from bot.vocabulary import SlaMetric

# The config key of each metric's target, and its unit in seconds.
TARGET_KEYS: dict[SlaMetric, tuple[str, int]] = {
    "first_response": ("first_response_s", 1),
    "first_human_response": ("first_human_response_min", 60),
    "resolution": ("resolution_h", 3600),
}


@dataclass(frozen=True)
class Schedule:
    """A clock's target (None: measured only) and the moments its warning and its deadline fall due."""

    target_s: float | None
    warn_at: datetime | None
    deadline: datetime | None


class SlaPolicy:
    """[sla] read for use: targets by channel, route or default, and the calendar each metric counts on."""

    def __init__(self, section: SlaSection) -> None:
        self.section = section
        hours = section.business_hours
        self._business: Calendar = (AlwaysOpen() if hours is None
                                    else BusinessHours.from_config(hours, section.zone))

    def calendar(self, metric: SlaMetric) -> Calendar:
        """The bot answers at any hour; people only count their business hours (24/7 when none are set)."""
        return AlwaysOpen() if metric == "first_response" else self._business

    def target_s(self, metric: SlaMetric, *, route: str | None, channel: str | None) -> float | None:
        key, unit = TARGET_KEYS[metric]
        layers: list[SlaTargets] = [self.section]
        if route is not None and route in self.section.routes:
            layers.append(self.section.routes[route])
        if channel is not None and channel in self.section.channels:
            layers.append(self.section.channels[channel])
        value: float | None = None
        for layer in layers:
            if key in layer.model_fields_set or layer is self.section:
                value = getattr(layer, key)
        return None if value is None else value * unit

    def schedule(self, metric: SlaMetric, started_at: datetime, *, route: str | None,
                 channel: str | None) -> Schedule:
        target = self.target_s(metric, route=route, channel=channel)
        if target is None:
            return Schedule(None, None, None)
        calendar = self.calendar(metric)
        return Schedule(target, calendar.add(started_at, target * self.section.warn_at),
                        calendar.add(started_at, target))

    def elapsed_s(self, metric: SlaMetric, started_at: datetime, ended_at: datetime) -> float:
        return self.calendar(metric).between(started_at, ended_at)
