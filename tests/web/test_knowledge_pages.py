"""The dashboard's Knowledge page (sources, coverage gaps grouped by theme), the sources on the conversation page,
and the Proposals view where a reviewer edits, approves and rejects answers people gave (forms with CSRF)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bot.clock import ManualClock
from bot.domain import InboundMessage
from bot.knowledge.service import KnowledgeBase
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from tests.conftest import config_with
from tests.knowledge.conftest import write_docs
from tests.web.conftest import ClientFactory, csrf_token

QUESTION = "Do you sign a HIPAA business associate agreement for the enterprise plan?"
ANSWER = "Yes: enterprise customers can sign our BAA. Mail legal@quillpad.example and we send it in two days."
SYNC_QUESTION = "two devices edited the same note offline and now there is a conflict copy, what do I do?"
FAX = ["can your API send me a fax when a deploy finishes?", "will the API fax me after every deploy finishes?"]
PAGES_TOML = """
[router]
mode = "rules"
[[router.rules]]
name = "compliance"
route = "escalate"
pattern = '(?i)\\bhipaa\\b'
[bot]
staff = ["U0STAFF"]
[escalation]
oncall = ["U0ALICE"]
channel = "C0ESC"
[knowledge]
min_score = 0.6
on_missing = "say"
"""


@pytest.fixture
async def runtime(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Runtime]:
    """The team's four docs pages; a grounded question, two about faxes the docs miss, and a HIPAA question
    on-call answered in its thread before resolving the escalation."""
    config = config_with(PAGES_TOML)
    built = await build_runtime(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'kb.db'}"), config,
                                chat=LocalChat(clock), clock=clock, instance_id="knowledge-pages")
    try:
        await KnowledgeBase(built.db, config).add([str(write_docs(tmp_path / "docs"))], name="manual")
        for n, text in enumerate([SYNC_QUESTION, *FAX, QUESTION], start=1):
            result = await built.pipeline.handle(InboundMessage(
                source="slack", team="T0TEAM", channel="CSUPPORT", user="UCUST", text=text, ts=f"1800000000.00000{n}",
                event_id=f"Ev{n}"))
        assert result.escalation_id is not None
        clock.advance(60)
        await built.pipeline.record_staff_message(team="T0TEAM", channel="CSUPPORT", thread_ts="1800000000.000004",
                                                  user="U0ALICE", text=ANSWER, ts="1800000100.000001")
        assert await built.escalations.resolve(result.escalation_id, "U0ALICE") == "done"
        yield built
    finally:
        await built.close()


@pytest.fixture
async def client(runtime: Runtime, make_client: ClientFactory) -> TestClient:
    return await make_client(runtime)


async def test_the_knowledge_page_lists_sources_and_groups_unanswered_questions_by_theme(client: TestClient) -> None:
    html = await (await client.get("/knowledge")).text()
    row = re.search(r'<tr data-source="manual">(.*?)</tr>', html, re.S)
    assert row is not None and "files" in row.group(1) and ">4<" in row.group(1)
    assert 'data-questions="3"' in html and "1 proposed answer to review" in html
    themes = re.findall(r'<tr class="theme" data-count="(\d+)">', html)
    assert themes == ["2", "1"]
    assert "no document ×2" in html and "escalated ×1" in html and "HIPAA business associate" in html

    api = await (await client.get("/api/knowledge?since=7d")).json()
    assert [s["name"] for s in api["sources"]] == ["manual"]
    [faxes, hipaa] = api["coverage_gaps"]["themes"]
    assert faxes["count"] == 2 and faxes["reasons"] == {"no_docs": 2} and faxes["question"] in FAX
    assert {e["text"] for e in faxes["examples"]} == set(FAX)
    assert hipaa["question"] == QUESTION and hipaa["reasons"] == {"escalated": 1}
    bad = await client.get("/api/knowledge?since=yesterday-ish")
    assert bad.status == 400 and "bad filter" in (await bad.json())["error"]
    assert (await client.get("/knowledge?since=nonsense")).status == 400


async def test_the_conversation_page_shows_each_decisions_sources(client: TestClient) -> None:
    html = await (await client.get("/conversations/1")).text()
    assert "Sources" in html and "Sync across devices" in html and "sync.html</code>" in html
    missing = await (await client.get("/conversations/2")).text()
    assert "the team's docs had nothing on this question" in missing


async def test_a_reviewer_edits_and_approves_then_rejects_a_proposed_answer(
    client: TestClient, runtime: Runtime,
) -> None:
    page = await (await client.get("/knowledge/proposals")).text()
    [proposal_id] = re.findall(r'data-proposal="(\d+)" data-status="proposed"', page)
    assert QUESTION in page and "legal@quillpad.example" in page
    token = csrf_token(page)
    kb = KnowledgeBase(runtime.db, runtime.config)

    refused = await client.post(f"/knowledge/proposals/{proposal_id}/approve", data={"answer": ANSWER})
    assert refused.status == 403 and not [s for s in await kb.sources() if s.name == "answers"]

    edited = "Yes: enterprise customers can sign our BAA; ask your account manager."
    approved = await client.post(f"/knowledge/proposals/{proposal_id}/approve", allow_redirects=False,
                                 data={"answer": edited, "reviewer": "Rita", "csrf_token": token})
    assert approved.status == 303
    shown = await (await client.get(approved.headers["Location"])).text()
    assert f"Proposal #{proposal_id} approved" in shown and 'data-status="approved"' in shown and "by Rita" in shown
    [hit] = (await kb.search("will you sign a HIPAA BAA?", min_score=0.0, sources=["answers"])).hits
    assert "account manager" in hit.text and "legal@" not in hit.text and hit.title == QUESTION

    rejected = await client.post(f"/knowledge/proposals/{proposal_id}/reject", allow_redirects=False,
                                 data={"csrf_token": token})
    assert rejected.status == 303
    assert [(s.documents, s.passages) for s in await kb.sources() if s.name == "answers"] == [(0, 0)]
    listed = await (await client.get("/api/proposals?status=rejected")).json()
    assert [(p["id"], p["status"], p["edited_answer"]) for p in listed["proposals"]] == [
        (int(proposal_id), "rejected", edited)]

    missing = await client.post("/knowledge/proposals/999/approve", data={"csrf_token": token})
    assert missing.status == 404 and "no proposed answer #999" in await missing.text()
    api = await client.post(f"/api/proposals/{proposal_id}/approve", json={"text": "  "},
                            headers={"X-CSRF-Token": token})
    assert api.status == 400 and "empty" in (await api.json())["error"]
    again = await client.post(f"/api/proposals/{proposal_id}/approve", json={"reviewer": "Sam"},
                              headers={"X-CSRF-Token": token})
    assert again.status == 200 and (await again.json())["proposal"]["indexed_answer"] == edited
