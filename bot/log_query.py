"""Which routing decisions to show: one model for `supportbot logs` and the dashboard, same names, same syntax.

Both read what a person typed (options, a query string) through `LogQuery.read`, which keeps the fields that
make sense and says what is wrong with the others; `LogQuery.filter` is what the log query runs with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bot.vocabulary import DECIDED_BY, DecidedBy, FeedbackValue, Resolution
from bot.vocabulary import values as allowed
from bot.when import parse_when
from storage.review import LogFilter

FIELDS = ("route", "decided_by", "escalated", "voted", "confidence_below", "channel", "user", "since", "until",
          "search", "feedback", "resolution")
# A thread still open has no resolution; the filter names that "open".
ResolutionFilter = Resolution | Literal["open"]
MAX_TEXT = 500


def _yes_no(value: object) -> object:
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise ValueError("use yes or no")


def _blank_is_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


YesNo = Annotated[bool | None, BeforeValidator(_yes_no)]
Text = Annotated[str | None, Field(max_length=MAX_TEXT)]


class LogQuery(BaseModel):
    """The filter fields of the routing log, as people give them: "24h", "yes", "0.5", a route name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Text = None
    decided_by: DecidedBy | None = None
    escalated: YesNo = None
    voted: YesNo = None
    confidence_below: float | None = None
    channel: Text = None
    user: Text = None
    since: datetime | None = None
    until: datetime | None = None
    search: Text = None
    feedback: FeedbackValue | None = None
    resolution: ResolutionFilter | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank(cls, value: object) -> object:
        return _blank_is_none(value)

    @field_validator("route")
    @classmethod
    def _configured(cls, route: str | None, info: ValidationInfo) -> str | None:
        routes = (info.context or {}).get("routes")
        if route is not None and routes is not None and route not in routes:
            raise ValueError(f"{route!r} is not a configured route ({', '.join(routes)})")
        return route

    @field_validator("confidence_below", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        try:
            number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if value is not None and (number is None or not math.isfinite(number)):
            raise ValueError("use a number between 0 and 1")
        return number

    @field_validator("since", "until", mode="before")
    @classmethod
    def _when(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str) or value == "all":
            return None if value == "all" else value
        return parse_when(value, (info.context or {})["now"])

    @classmethod
    def read(cls, values: Mapping[str, Any], *, routes: list[str], now: datetime) -> tuple[LogQuery, list[str]]:
        """The query from what was typed, and one "field: what to do" line for each value left out."""
        given = {name: values.get(name) for name in FIELDS if values.get(name) not in (None, "")}
        context = {"routes": routes, "now": now}
        errors: list[str] = []
        for _ in FIELDS:
            try:
                return cls.model_validate(given, context=context), errors
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    name = str(error["loc"][0]) if error["loc"] else "query"
                    message = str(error["msg"]).removeprefix("Value error, ")
                    if name == "decided_by":
                        message = f"use one of {', '.join(DECIDED_BY)}"
                    elif name == "feedback":
                        message = f"use one of {', '.join(allowed(FeedbackValue))}"
                    elif name == "resolution":
                        message = f"use one of {', '.join(allowed(Resolution))} or open"
                    errors.append(f"{name}: {message}")
                    given.pop(name, None)
        return cls(), errors

    def filter(self, *, limit: int, offset: int = 0) -> LogFilter:
        return LogFilter(route=self.route, decided_by=self.decided_by, escalated=self.escalated, voted=self.voted,
                         confidence_below=self.confidence_below, channel=self.channel, user=self.user,
                         since=self.since, until=self.until, text=self.search, feedback=self.feedback,
                         resolution=self.resolution, limit=limit, offset=offset)
