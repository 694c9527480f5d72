"""The dashboard's query string <-> the routing-log filter, with the same names and syntax as `supportbot logs`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from bot.log_query import FIELDS, LogQuery
from storage.review import LogFilter

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Far past any real log, and small enough that the row offset fits the database's integers.
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class FilterForm:
    """The filter as typed (to refill the form and build links), the parsed filter, and what was wrong."""

    values: dict[str, str]
    filters: LogFilter
    page: int = 1
    page_size: int = PAGE_SIZE
    errors: list[str] = field(default_factory=list)

    def query(self, **changes: object) -> str:
        """This filter's query string with some values changed (None removes one)."""
        merged: dict[str, object] = {**self.values}
        if self.page != 1:
            merged["page"] = self.page
        if self.page_size != PAGE_SIZE:
            merged["limit"] = self.page_size
        merged.update(changes)
        return urlencode({k: v for k, v in merged.items() if v not in (None, "")})

    @property
    def active(self) -> bool:
        return any(self.values.values())


def parse_filters(query: Mapping[str, str], *, routes: list[str], now: datetime,
                  default_since: str | None = None) -> FilterForm:
    """Read the filter fields of a query string; bad values are reported, not fatal, and left out."""
    values = {name: query.get(name, "").strip() for name in FIELDS}
    if default_since is not None and "since" not in query:
        values["since"] = default_since
    read, errors = LogQuery.read(values, routes=routes, now=now)
    page = _positive_int(query.get("page"), 1, errors, "page", maximum=MAX_PAGE)
    page_size = _positive_int(query.get("limit"), PAGE_SIZE, errors, "limit", maximum=MAX_PAGE_SIZE, clamp=True)
    return FilterForm(values=values, filters=read.filter(limit=page_size, offset=(page - 1) * page_size),
                      page=page, page_size=page_size, errors=errors)


def _positive_int(raw: str | None, default: int, errors: list[str], name: str, *, maximum: int,
                  clamp: bool = False) -> int:
    """A whole number from 1 to `maximum` (a larger one is cut to it with `clamp`), else `default` and an error."""
    text = (raw or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        errors.append(f"{name}: use a whole number")
        return default
    # Compared as text first: int() of thousands of digits is refused (or slow), and no such page exists.
    value = int(text) if len(text) <= len(str(maximum)) else maximum + 1
    if value < 1:
        errors.append(f"{name}: use a number of at least 1")
        return default
    if value > maximum:
        if clamp:
            return maximum
        errors.append(f"{name}: use a number up to {maximum}")
        return default
    return value
