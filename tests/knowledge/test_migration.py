"""Migration 0002 on both engines: the knowledge tables and the full-text index come and go with it."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from storage.engine import alembic_config, open_database, upgrade


async def _tables(url: str) -> set[str]:
    db = open_database(url)
    try:
        async with db.engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await db.dispose()


async def test_upgrade_downgrade_and_upgrade_again(database_url: str) -> None:
    from alembic import command

    await upgrade(database_url)
    tables = await _tables(database_url)
    assert {"knowledge_sources", "knowledge_documents", "knowledge_passages"} <= tables
    assert ("knowledge_fts" in tables) == database_url.startswith("sqlite")
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0001")
    assert not {t for t in await _tables(database_url) if t.startswith("knowledge")}
    await upgrade(database_url)
    assert {"knowledge_passages"} <= await _tables(database_url)
