"""The clock port: wall time, monotonic time and sleeping, with a manual clock for tests and replays."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time moves only when `advance` is called; sleepers wake when their deadline passes."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._offset = 0.0
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._offset

    async def sleep(self, seconds: float) -> None:
        deadline = self._offset + seconds
        while self._offset < deadline:
            self._changed.clear()
            await self._changed.wait()

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._offset += seconds
        self._changed.set()
