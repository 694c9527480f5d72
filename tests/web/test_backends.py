"""The dashboard's queries on both backends: a real SQLite file and the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.config import Config
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from tests.web.conftest import CONVERSATIONS, ClientFactory, csrf_token, fill


@pytest.fixture
async def any_runtime(database_url: str, config: Config) -> AsyncIterator[Runtime]:
    built = await build_runtime(Settings(database_url=database_url), config, chat=LocalChat(), instance_id="db-1")
    try:
        await fill(built)
        yield built
    finally:
        await built.close()


async def test_list_stats_conversation_and_correction_on_each_backend(
    any_runtime: Runtime, make_client: ClientFactory
) -> None:
    client = await make_client(any_runtime)
    everything = (await (await client.get("/api/decisions?limit=100")).json())["decisions"]
    assert len(everything) == len(CONVERSATIONS)
    literal = await (await client.get("/api/decisions?search=%25_")).json()
    assert literal["total"] == 0  # "%_" is searched literally, not as wildcards
    scripted = await (await client.get("/api/decisions?search=%3Cscript%3E&channel=CSUPPORT")).json()
    assert scripted["total"] == 1
    page_two = await (await client.get("/api/decisions?limit=4&page=2")).json()
    assert [r["id"] for r in page_two["decisions"]] == [r["id"] for r in everything[4:]]

    stats = await (await client.get("/api/stats?since=1h")).json()
    assert stats["summary"]["messages"] == len(CONVERSATIONS) and stats["summary"]["llm_calls"] > 0
    assert (await (await client.get("/api/stats?channel=CSALES")).json())["summary"]["messages"] == 2

    target = everything[0]
    review = await (await client.get(f"/api/conversations/{target['conversation_id']}")).json()
    assert review["messages"][0]["decision"]["id"] == target["id"]

    token = csrf_token(await (await client.get("/decisions")).text())
    new_route = "sales" if target["route"] != "sales" else "billing"
    response = await client.post(f"/api/decisions/{target['id']}/correction", json={"route": new_route},
                                 headers={"X-CSRF-Token": token})
    assert response.status == 201
    [corrected] = (await (await client.get("/api/decisions?decided_by=correction")).json())["decisions"]
    assert corrected["id"] == target["id"] and corrected["route"] == new_route
    stats = await (await client.get("/api/stats")).json()
    assert stats["summary"]["corrected"] == 1

    playground = await (await client.get("/api/playground/state")).json()
    assert playground["threads"] == [] and len(playground["escalations"]) >= 1
