"""Repositories on a real SQLite file and on the real PostgreSQL: same migrations, same behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from storage import repositories as repo
from storage import review
from storage.engine import Database, alembic_config, open_database, upgrade
from storage.models import DecisionRecord, RouteCorrection

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await upgrade(database_url)
    database = open_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def test_upgrade_is_idempotent(database_url: str) -> None:
    await upgrade(database_url)
    await upgrade(database_url)
    database = open_database(database_url)
    try:
        async with database.engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await database.dispose()
    heads = ScriptDirectory.from_config(alembic_config(database_url)).get_heads()
    assert versions == heads  # one row, at the newest revision


async def test_inbox_records_each_message_once_and_counts_duplicates(db: Database) -> None:
    async with db.sessions.begin() as session:
        first = await repo.insert_inbound(session, dedupe_key="T:C:1.0", event_id="Ev1", source="slack",
                                          payload={"text": "hi"}, now=NOW)
    async with db.sessions.begin() as session:
        again = await repo.insert_inbound(session, dedupe_key="T:C:1.0", event_id="Ev2", source="slack",
                                          payload={"text": "hi"}, now=NOW)
    assert first is not None and again is None
    async with db.sessions() as session:
        assert await repo.inbox_counts(session) == {"pending": 1}


async def test_concurrent_inserts_of_one_message_let_exactly_one_through(db: Database) -> None:
    async def insert(n: int) -> int | None:
        async with db.sessions.begin() as session:
            return await repo.insert_inbound(session, dedupe_key="T:C:2.0", event_id=f"Ev{n}", source="slack",
                                             payload={}, now=NOW)

    results = await asyncio.gather(*(insert(n) for n in range(8)))
    assert sum(r is not None for r in results) == 1


async def test_lease_lets_one_worker_claim_until_it_lapses(db: Database) -> None:
    async with db.sessions.begin() as session:
        inbox_id = await repo.insert_inbound(session, dedupe_key="k", event_id="e", source="slack",
                                             payload={}, now=NOW)
    assert inbox_id is not None
    lease = timedelta(minutes=3)
    async with db.sessions.begin() as session:
        claimed = await repo.claim_inbound(session, inbox_id, owner="a", now=NOW, lease=lease)
    async with db.sessions.begin() as session:
        stolen = await repo.claim_inbound(session, inbox_id, owner="b", now=NOW + timedelta(minutes=1), lease=lease)
    assert claimed is not None and claimed.lease_owner == "a" and claimed.attempts == 1
    assert stolen is None
    async with db.sessions() as session:
        assert await repo.claimable_inbound(session, now=NOW + timedelta(minutes=1)) == []
        assert await repo.claimable_inbound(session, now=NOW + timedelta(minutes=4)) == [inbox_id]
    async with db.sessions.begin() as session:
        recovered = await repo.claim_inbound(session, inbox_id, owner="b", now=NOW + timedelta(minutes=4), lease=lease)
    assert recovered is not None and recovered.lease_owner == "b" and recovered.attempts == 2
    async with db.sessions.begin() as session:
        # The first worker lost its lease: it may not finish the event any more.
        assert not await repo.finish_inbound(session, inbox_id, owner="a", outcome="replied", now=NOW)
        assert await repo.finish_inbound(session, inbox_id, owner="b", outcome="replied", now=NOW)
    async with db.sessions() as session:
        assert await repo.claimable_inbound(session, now=NOW + timedelta(days=1)) == []


async def test_conversation_is_created_once_and_datetimes_stay_utc(db: Database) -> None:
    async with db.sessions.begin() as session:
        first = await repo.open_conversation(
            session, source="slack", team="T", channel="C", thread_ts="1.0", user="U1", now=NOW, likely_new=True)
    for likely_new in (True, False):
        async with db.sessions.begin() as session:
            again = await repo.open_conversation(session, source="slack", team="T", channel="C", thread_ts="1.0",
                                                 user="U2", now=NOW, likely_new=likely_new)
        assert not again.created and again.id == first.id and again.state == "open"
    assert first.created
    async with db.sessions() as session:
        stored = await repo.find_conversation(session, team="T", channel="C", thread_ts="1.0")
    assert stored is not None and stored.user == "U1"
    assert stored.created_at == NOW and stored.created_at.tzinfo is not None


async def _decision(db: Database, *, text: str, route: str, decided_by: str, confidence: float,
                    channel: str = "C", when: datetime = NOW, escalated: bool = False) -> int:
    async with db.sessions.begin() as session:
        conversation = await repo.open_conversation(
            session, source="slack", team="T", channel=channel, thread_ts=str(when.timestamp()) + text[:3],
            user="U1", now=when, likely_new=True)
        message_id = await repo.add_message(session, conversation_id=conversation.id, role="user", text=text,
                                            now=when, user="U1", ts="1.0")
        decision_id = await repo.add_decision(session, DecisionRecord(
            conversation_id=conversation.id, message_id=message_id, route=route, confidence=confidence,
            decided_by=decided_by, reason="test", scores={}, router_mode="hybrid", created_at=when))
        await repo.finish_decision(session, decision_id, outcome="escalated" if escalated else "replied",
                                   reply_text=f"re: {text}", escalated=escalated, latency_ms=12.0)
        return decision_id


async def test_logs_filter_and_corrections(db: Database) -> None:
    billing = await _decision(db, text="charged twice", route="billing", decided_by="local", confidence=0.9)
    await _decision(db, text="sue you", route="escalate", decided_by="rules", confidence=0.95, escalated=True,
                    channel="C2")
    await _decision(db, text="hmm pricing?", route="general", decided_by="llm", confidence=0.4,
                    when=NOW - timedelta(days=3))
    async with db.sessions() as session:
        logs = review.query_logs
        assert [r.route for r in await logs(session, review.LogFilter())] == ["general", "escalate", "billing"]
        assert [r.text for r in await logs(session, review.LogFilter(route="billing"))] == ["charged twice"]
        assert [r.text for r in await logs(session, review.LogFilter(escalated=True))] == ["sue you"]
        assert [r.text for r in await logs(session, review.LogFilter(decided_by="llm"))] == ["hmm pricing?"]
        unsure = await review.query_logs(session, review.LogFilter(confidence_below=0.5))
        assert [r.text for r in unsure] == ["hmm pricing?"]
        assert [r.text for r in await review.query_logs(session, review.LogFilter(channel="C2"))] == ["sue you"]
        assert len(await review.query_logs(session, review.LogFilter(since=NOW - timedelta(days=1)))) == 2
        assert [r.text for r in await review.query_logs(session, review.LogFilter(text="TWICE"))] == ["charged twice"]
        assert await review.count_logs(session, review.LogFilter(until=NOW - timedelta(days=1))) == 1
    async with db.sessions.begin() as session:
        await repo.add_correction(session, RouteCorrection(decision_id=billing, old_route="billing",
                                                           new_route="technical", reviewer="UREV", created_at=NOW))
    async with db.sessions() as session:
        corrected = await review.query_logs(session, review.LogFilter(decided_by="correction"))
        assert [(r.route, r.original_route, r.decided_by) for r in corrected] == [
            ("technical", "billing", "correction")]
        assert await review.query_logs(session, review.LogFilter(route="billing")) == []
        assert await repo.corrections_for_training(session) == [("charged twice", "technical")]
        row = corrected[0].as_json()
    for key in ("created_at", "channel", "thread_ts", "user", "text", "route", "confidence", "decided_by",
                "escalated", "voted", "vote_agreement", "reply", "latency_ms"):
        assert key in row
