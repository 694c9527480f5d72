"""Times as reviewers type them — '24h', '30m', '7d', '2w' ago, or an ISO date — for the CLI and the dashboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

RELATIVE = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# More digits than any span back to year 1 needs (some 63 billion seconds); int() of a longer string is slow.
_MAX_DIGITS = 12


def parse_when(value: str, now: datetime) -> datetime:
    """'24h', '30m', '7d', '2w' ago, or an ISO date/time (UTC when no zone is given); ValueError otherwise."""
    match = RELATIVE.fullmatch(value)
    if match:
        try:
            if len(match[1]) > _MAX_DIGITS:
                raise OverflowError
            return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
        except OverflowError:
            raise ValueError(f"{value.strip()[:40]!r} reaches back before year 1: use a smaller number") from None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"cannot read {value[:40]!r} as a time: use 24h, 30m, 7d or a date like 2026-01-31") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
