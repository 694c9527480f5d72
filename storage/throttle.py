"""Repository functions of the dashboard's token throttle: each takes the caller's session and never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AuthFailure
from storage.repositories import _insert


@dataclass(frozen=True)
class RecentFailures:
    """Wrong tokens since a moment: from one client (and when its oldest was), and from everybody."""

    client: int
    client_oldest: datetime | None
    total: int


async def recent_failures(session: AsyncSession, *, client: str, since: datetime) -> RecentFailures:
    recent = AuthFailure.failed_at >= since
    mine = select(func.count(), func.min(AuthFailure.failed_at)).where(AuthFailure.client == client, recent)
    count, oldest = (await session.execute(mine)).one()
    total = await session.scalar(select(func.count()).select_from(AuthFailure).where(recent))
    return RecentFailures(client=int(count), client_oldest=oldest, total=int(total or 0))


async def record_failure(session: AsyncSession, *, client: str, guess: str, at: datetime) -> bool:
    """Count a wrong token: True when it is new from this client; the same one again only moves its time."""
    inserted = await session.execute(_insert(session, AuthFailure).values(client=client, guess=guess, failed_at=at)
                                     .on_conflict_do_nothing(index_elements=["client", "guess"]))
    if inserted.rowcount:  # type: ignore[attr-defined]
        return True
    await session.execute(update(AuthFailure).where(AuthFailure.client == client, AuthFailure.guess == guess)
                          .values(failed_at=at))
    return False


async def forget_failures(session: AsyncSession, *, before: datetime) -> None:
    """Drop failures too old to count, so the table holds at most one window's worth."""
    await session.execute(delete(AuthFailure).where(AuthFailure.failed_at < before))
