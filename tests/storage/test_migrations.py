"""The Alembic migrations build exactly the schema the models describe, keep existing rows, and enforce the
vocabulary with CHECK constraints — on a real SQLite file and on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from storage.engine import open_database, upgrade
from storage.knowledge import FULL_TEXT_OBJECTS
from storage.models import Base

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_the_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    await upgrade(database_url)
    db = open_database(database_url)
    try:
        async with db.engine.connect() as connection:
            differences: list[Any] = await connection.run_sync(lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_object": modelled}), Base.metadata))
    finally:
        await db.dispose()
    assert differences == []


def modelled(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    """What the models describe: not Alembic's bookkeeping table, nor the full-text index objects that only
    the migration creates (FTS5 tables, a tsvector column), which no model could describe on both engines."""
    return name != "alembic_version" and name not in FULL_TEXT_OBJECTS


@pytest.mark.parametrize(("table", "values"), [
    ("conversations", {"source": "slack", "team": "T", "channel": "C", "thread_ts": "1.0", "user": "U",
                       "state": "snoozed", "created_at": NOW, "updated_at": NOW}),
    ("conversations", {"source": "fax", "team": "T", "channel": "C", "thread_ts": "2.0", "user": "U",
                       "state": "open", "created_at": NOW, "updated_at": NOW}),
    ("llm_calls", {"purpose": "poetry", "provider": "offline", "model": "m", "latency_ms": 1.0, "created_at": NOW}),
    ("conversations", {"source": "slack", "team": "T", "channel": "C", "thread_ts": "3.0", "user": "U",
                       "state": "open", "resolution": "shrugged", "created_at": NOW, "updated_at": NOW}),
])
async def test_values_outside_the_vocabulary_are_refused(database_url: str, table: str,
                                                         values: dict[str, Any]) -> None:
    await upgrade(database_url)
    db = open_database(database_url)
    try:
        model = Base.metadata.tables[table]
        with pytest.raises(IntegrityError, match="(?i)check"):
            async with db.sessions.begin() as session:
                await session.execute(model.insert().values(**values))
    finally:
        await db.dispose()


async def test_adding_the_constraints_keeps_every_row_and_the_open_escalation_index(sqlite_url: str) -> None:
    """SQLite adds a constraint by rebuilding the table: the rows of its child tables must survive that."""
    await upgrade(sqlite_url, "0001")
    db = open_database(sqlite_url)
    try:
        tables = Base.metadata.tables
        async with db.sessions.begin() as session:
            await session.execute(tables["conversations"].insert().values(
                id=1, source="slack", team="T", channel="C", thread_ts="1.0", user="U", state="escalated",
                created_at=NOW, updated_at=NOW))
            await session.execute(tables["messages"].insert().values(
                id=1, conversation_id=1, role="user", user="U", ts="1.0", text="help", created_at=NOW))
            await session.execute(tables["escalations"].insert().values(
                id=1, conversation_id=1, dedupe_key="k1", trigger="rule", reason="r", requester="U", summary="s",
                drafts=[], state="paged", level=1, repage_count=0, paged_rounds=1, created_at=NOW, updated_at=NOW))
        await db.dispose()
        await upgrade(sqlite_url)
        db = open_database(sqlite_url)
        async with db.sessions() as session:
            assert (await session.execute(sa.text("SELECT count(*) FROM messages"))).scalar_one() == 1
            assert (await session.execute(sa.text("SELECT count(*) FROM escalations"))).scalar_one() == 1
        # Still at most one open escalation per thread.
        with pytest.raises(IntegrityError):
            async with db.sessions.begin() as session:
                await session.execute(tables["escalations"].insert().values(
                    id=2, conversation_id=1, dedupe_key="k2", trigger="rule", reason="r", requester="U",
                    summary="s", drafts=[], state="acknowledged", level=1, repage_count=0, paged_rounds=1,
                    created_at=NOW, updated_at=NOW))
        # And foreign keys are enforced again after the migration.
        with pytest.raises(IntegrityError):
            async with db.sessions.begin() as session:
                await session.execute(tables["messages"].insert().values(
                    conversation_id=99, role="user", text="orphan", created_at=NOW))
    finally:
        await db.dispose()
