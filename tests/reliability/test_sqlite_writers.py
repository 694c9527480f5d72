"""Several processes writing one SQLite file at once: no "database is locked" surfaces, no message is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlackAPI
from tests.reliability.conftest import (
    CUSTOMER,
    QUESTIONS,
    SUPPORT,
    SpawnServe,
    bot_posts_per_thread,
    inbox_rows,
    seed_questions,
    send_event,
    serve_env,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

WRITERS = 3
MESSAGES = 30


async def test_processes_sharing_one_sqlite_file_lose_nothing_and_answer_once(
    fake_slack: FakeSlackAPI, sqlite_url: str, tmp_path: Path, spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    # Started at the same moment on a file that does not exist yet: they also race to create the schema.
    writers = await asyncio.gather(*(
        spawn_serve(f"writer-{n}", serve_env(database_url=sqlite_url, config_path=config,
                                             instance_id=f"writer-{n}", slack=fake_slack))
        for n in range(WRITERS)))
    questions = seed_questions(fake_slack, [f"{QUESTIONS[n % len(QUESTIONS)]} (#{n})" for n in range(MESSAGES)])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        statuses = await asyncio.gather(*(
            send_event(http, writers[(n + attempt) % WRITERS].url,
                       sp.message_event(SUPPORT, CUSTOMER, q.text, q.ts), event_id=f"EvS{n:03d}",
                       retry_num=attempt or None)
            for n, q in enumerate(questions) for attempt in range(2)))
    # A lock that outlasted the busy timeout would have failed an inbox write: a 500, Slack retrying.
    assert statuses == [200] * (2 * MESSAGES)

    await wait_until(lambda: len(bot_posts_per_thread(fake_slack)) == MESSAGES, 45, "an answer in every thread",
                     lambda: len(bot_posts_per_thread(fake_slack)))
    for writer in writers:
        await writer.wait_for_passes(2)  # a second answer would have shown by now
    assert set(bot_posts_per_thread(fake_slack).values()) == {1}
    rows = await inbox_rows(sqlite_url)
    assert len(rows) == MESSAGES and {row.status for row in rows} == {"done"}
    for writer in writers:
        output = writer.output()
        assert "database is locked" not in output and "Traceback" not in output, output[-3000:]
