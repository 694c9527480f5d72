"""Engine and session factory for SQLite (WAL, busy timeout) and PostgreSQL, plus Alembic upgrades."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str) -> str:
    """Accept the sync spellings people paste (sqlite:///, postgres://) and use the async drivers."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """`?schema=name` on a PostgreSQL URL puts every table in that schema (used to isolate tests)."""
    url = normalize_url(url)
    if is_sqlite(url):
        # One connection, handed out in turn: SQLite admits one writer at a time anyway, and writers on
        # separate connections wait in its busy handler, which sleeps in steps of up to 100 ms and lets
        # a waiter lose the lock again and again (Slack acks then took 200 ms+ at p99 under load).
        engine = create_async_engine(
            url, echo=echo, pool_size=1, max_overflow=0, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # Every session ends its transaction itself (commit, or rollback on close), so the pool's
            # extra rollback on return is a wasted round trip to the driver thread.
            pool_reset_on_return=None,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    schema = parsed.query.get("schema")
    if isinstance(schema, str):
        parsed = parsed.difference_update_query(["schema"])
        connect_args["server_settings"] = {"search_path": schema}
    # No pre-ping: it costs a round trip per transaction (~15% of the pipeline's CPU). A connection the
    # server dropped fails one transaction, SQLAlchemy discards it, and the inbox lease retries the work.
    return create_async_engine(
        parsed, echo=echo, pool_size=10, max_overflow=10, pool_recycle=1800, connect_args=connect_args
    )


@dataclass
class Database:
    """The engine and the one session factory made at start-up; callers own their sessions."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(url: str) -> Database:
    engine = make_engine(url)
    return Database(engine=engine, sessions=async_sessionmaker(engine, expire_on_commit=False))


def alembic_config(url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an option: ini interpolation would mangle '%' in passwords.
    config.attributes["database_url"] = normalize_url(url)
    return config


def _upgrade_sync(url: str, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; Alembic's env drives its own event loop, so it runs in a worker thread."""
    await asyncio.to_thread(_upgrade_sync, url, revision)


def upgrade_blocking(url: str, revision: str = "head") -> None:
    _upgrade_sync(url, revision)
