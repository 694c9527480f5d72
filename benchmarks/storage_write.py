"""Write throughput of the routing log on SQLite vs PostgreSQL: decisions recorded per second.

Each unit of work is what the pipeline writes for one answered message (conversation, message,
route decision, LLM call, reply), run by `--writers` concurrent tasks.
Run: python -m benchmarks.storage_write [--messages 500] [--writers 8] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._serve import throwaway_schema
from storage import repositories as repo
from storage.engine import Database, open_database, upgrade
from storage.models import DecisionRecord

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def write_one(db: Database, n: int) -> None:
    now = datetime.now(UTC)
    async with db.sessions.begin() as session:
        conversation = await repo.open_conversation(
            session, source="slack", team="TB", channel="CB", thread_ts=f"{n}.0", user="UB", now=now, likely_new=True)
        message_id = await repo.add_message(session, conversation_id=conversation.id, role="user",
                                            text=f"message {n}", now=now, user="UB", ts=f"{n}.0")
        decision_id = await repo.add_decision(session, DecisionRecord(
            conversation_id=conversation.id, message_id=message_id, route="billing", confidence=0.9,
            decided_by="local", reason="bench", scores={"billing": 0.9}, router_mode="hybrid", created_at=now))
        await repo.add_llm_calls(session, [dict(conversation_id=conversation.id, purpose="reply", provider="bench",
                                                model="m", latency_ms=1.0, created_at=now)])
        await repo.add_message(session, conversation_id=conversation.id, role="assistant", text="reply", now=now,
                               ts=f"{n}.1")
        await repo.finish_decision(session, decision_id, outcome="replied", reply_text="reply", escalated=False,
                                   latency_ms=5.0)


async def run(url: str, messages: int, writers: int) -> float:
    await upgrade(url)
    db = open_database(url)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)

    async def writer() -> None:
        while not queue.empty():
            await write_one(db, queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    await db.dispose()
    return messages / elapsed


async def main_async(args: argparse.Namespace) -> dict[str, float | None]:
    results: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite+aiosqlite:///{Path(tmp) / 'w.db'}"
        results["sqlite_msgs_per_s"] = await run(sqlite_url, args.messages, args.writers)
    try:
        async with throwaway_schema(args.pg_url) as url:
            assert url is not None
            results["postgres_msgs_per_s"] = await run(url, args.messages, args.writers)
    except OSError as exc:  # no server: asyncpg's connection errors are OSErrors
        print(f"PostgreSQL unavailable ({type(exc).__name__}); skipped", file=sys.stderr)
        results["postgres_msgs_per_s"] = None
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({**results, "messages": args.messages, "writers": args.writers}))
        return
    print(f"routing-log writes, {args.messages} messages, {args.writers} concurrent writers")
    for key, value in results.items():
        print(f"  {key:22s} {'n/a' if value is None else f'{value:8.1f}'}")


if __name__ == "__main__":
    main()
