"""Alembic environment: runs migrations over the async engine, serialised across replicas."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage.engine import make_engine, normalize_url
from storage.models import Base

# Any fixed number; every replica takes the same PostgreSQL advisory lock while migrating.
MIGRATION_LOCK_ID = 7_214_501


def _database_url() -> str:
    url = context.config.attributes.get("database_url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL given to Alembic (set DATABASE_URL)")
    return normalize_url(str(url))


def _run(connection: Connection) -> None:
    is_postgres = connection.dialect.name == "postgresql"
    is_sqlite = connection.dialect.name == "sqlite"
    if is_postgres:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
    elif is_sqlite:
        # Batch migrations rebuild a table (copy, drop, rename): with foreign keys enforced, dropping a parent
        # table would cascade-delete its children, so they are off while migrating (SQLite's own procedure
        # for schema changes; it can only be switched outside a transaction) and checked afterwards.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        # No advisory lock in SQLite: hold its write lock for the whole migration instead (waiting up to the
        # busy timeout for it). Without it, processes starting at once on one file all found no schema and
        # all but one died on "table ... already exists" (SQLite runs DDL outside a transaction otherwise).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if is_sqlite:
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {problems[:5]}")
            connection.commit()
    finally:
        if is_postgres:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        elif is_sqlite:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


async def _run_async() -> None:
    engine = make_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
