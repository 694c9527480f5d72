"""The dashboard's pages and JSON on a database filled through the real pipeline."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp.test_utils import TestClient

from bot.domain import InboundMessage
from tests.web.conftest import CONVERSATIONS, Filled, csrf_token

SCRIPT_TEXT = CONVERSATIONS[4][2]


async def _all(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/api/decisions?limit=500&{query}")
    assert response.status == 200, await response.text()
    return list((await response.json())["decisions"])


def _rows(html: str) -> list[tuple[str, str]]:
    """(decision id, route) of each row of the decisions table."""
    return re.findall(r'<tr id="decision-(\d+)" data-decision="\d+" data-route="([^"]+)"', html)


async def test_home_lands_on_the_playground_in_local_mode(client: TestClient) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/playground"
    page = await (await client.get("/decisions")).text()
    assert 'href="/playground"' in page and 'href="/dashboard"' in page


async def test_user_text_is_escaped_everywhere_it_is_shown(client: TestClient) -> None:
    [row] = await _all(client, "search=onerror")
    assert row["text"] == SCRIPT_TEXT  # stored as sent
    for path in ("/decisions", f"/conversations/{row['conversation_id']}", "/decisions?search=%3Cscript%3E"):
        html = await (await client.get(path)).text()
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(" in html, path
    # Only our own script tags exist on the pages, and none of them is inline.
    html = await (await client.get("/playground")).text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/playground.js" defer>']


async def test_list_filters_match_the_logs_filters(client: TestClient, filled: Filled) -> None:
    everything = await _all(client)
    assert len(everything) == len(CONVERSATIONS)
    cases: dict[str, Any] = {
        "route=escalate": lambda r: r["route"] == "escalate",
        "decided_by=rules": lambda r: r["decided_by"] == "rules",
        "escalated=yes": lambda r: r["escalated"],
        "escalated=no": lambda r: not r["escalated"],
        "voted=yes": lambda r: r["voted"],
        "voted=no": lambda r: not r["voted"],
        "confidence_below=0.99": lambda r: r["confidence"] < 0.99,
        "channel=CSALES": lambda r: r["channel"] == "CSALES",
        "user=UALICE": lambda r: r["user"] == "UALICE",
        "search=CRASHES": lambda r: "crashes" in r["text"],
        "since=1h": lambda r: True,
        "until=2000-01-01": lambda r: False,
        "channel=CSUPPORT&user=UALICE&escalated=yes": lambda r: r["channel"] == "CSUPPORT" and r["user"] == "UALICE"
        and r["escalated"],
    }
    for query, keep in cases.items():
        expected = {r["id"] for r in everything if keep(r)}
        assert {r["id"] for r in await _all(client, query)} == expected, query
        html = await (await client.get(f"/decisions?{query}")).text()
        assert {int(i) for i, _ in _rows(html)} == expected, query
    assert {r["user"] for r in await _all(client, "user=UALICE")} == {"UALICE"}
    assert any(r["escalated"] for r in everything) and any(r["voted"] for r in everything)


async def test_bad_filter_values_are_explained(client: TestClient) -> None:
    page = await client.get("/decisions?since=yesterday-ish&escalated=maybe")
    html = await page.text()
    assert page.status == 400 and "cannot read" in html and "use yes or no" in html
    api = await client.get("/api/decisions?since=yesterday-ish")
    assert api.status == 400 and "since" in (await api.json())["error"]
    unknown = await client.get("/api/decisions?route=refunds")
    assert unknown.status == 400 and "not a configured route" in (await unknown.json())["error"]


async def test_pagination_walks_every_decision_once(client: TestClient) -> None:
    first = await (await client.get("/api/decisions?limit=4")).json()
    second = await (await client.get("/api/decisions?limit=4&page=2")).json()
    assert first["total"] == len(CONVERSATIONS) and first["pages"] == 2
    ids = [r["id"] for r in first["decisions"]] + [r["id"] for r in second["decisions"]]
    assert sorted(ids, reverse=True) == ids and len(set(ids)) == len(CONVERSATIONS)
    html = await (await client.get("/decisions?limit=4")).text()
    assert len(_rows(html)) == 4 and "page 1 of 2" in html and 'rel="next" href="/decisions?limit=4&amp;page=2"' in html
    page_two = await (await client.get("/decisions?limit=4&page=2")).text()
    assert len(_rows(page_two)) == 2 and 'rel="prev"' in page_two


async def test_conversation_shows_decision_votes_llm_calls_and_escalation(client: TestClient) -> None:
    voted = next(r for r in await _all(client) if r["voted"])
    body = await (await client.get(f"/api/conversations/{voted['conversation_id']}")).json()
    [customer, bot] = body["messages"]
    decision = customer["decision"]
    assert customer["role"] == "user" and bot["role"] == "assistant" and bot["text"] == voted["reply"]
    assert decision["reason"] and decision["scores"] and decision["decided_by"] in ("local", "llm", "hybrid")
    [vote] = decision["votes"]
    assert len(vote["samples"]) == vote["samples_requested"] and vote["agreement"] == voted["vote_agreement"]
    assert all(sample["verdict"] and sample["draft"] for sample in vote["samples"])
    calls = body["llm_calls"]
    assert calls and all(c["input_tokens"] > 0 and c["latency_ms"] >= 0 for c in calls)
    assert all(c["estimated_cost_usd"] is not None for c in calls)  # the offline models carry config prices

    html = await (await client.get(f"/conversations/{voted['conversation_id']}")).text()
    assert "Route decision" in html and "Scores per route" in html and 'data-chart="scores"' in html
    assert "agreement" in html and "LLM calls" in html and "Save correction" in html

    escalated = next(r for r in await _all(client) if r["escalated"])
    body = await (await client.get(f"/api/conversations/{escalated['conversation_id']}")).json()
    [escalation] = body["escalations"]
    assert escalation["state"] == "paged" and escalation["events"][0]["to_state"] == "paged"
    html = await (await client.get(f"/conversations/{escalated['conversation_id']}")).text()
    assert "Escalations" in html and "→ <strong>paged</strong>" in html

    missing = await client.get("/conversations/999")
    assert missing.status == 404 and "no conversation #999" in await missing.text()
    assert (await client.get("/api/conversations/999")).status == 404


async def test_overview_draws_every_chart_with_data(client: TestClient) -> None:
    html = await (await client.get("/dashboard")).text()
    for name in ("messages-per-route", "escalation-rate", "vote-agreement", "latency", "cost-per-route"):
        match = re.search(rf'<svg class="chart" data-chart="{name}" data-points="(\d+)"', html)
        assert match is not None and int(match[1]) > 0, name
    assert html.count('<rect class="bar"') > 5

    stats = await (await client.get("/api/stats")).json()
    summary = stats["summary"]
    assert summary["messages"] == len(CONVERSATIONS) and summary["escalated"] >= 1
    assert sum(sum(counts) for counts in stats["messages_per_route"].values()) == len(CONVERSATIONS)
    assert sum(b["messages"] for b in stats["escalation_rate"]) == len(CONVERSATIONS)
    assert sum(b["count"] for b in stats["vote_agreement"]) == summary["voted"]
    [overall] = [row for row in stats["latency_ms"] if row["route"] == "all"]
    assert overall["count"] == len(CONVERSATIONS) and overall["p50"] <= overall["p90"] <= overall["p99"]
    # The offline provider answered: its calls are counted but cost nothing.
    assert summary["estimated_cost_usd"] == 0 and sum(u["calls"] for u in stats["llm_usage"]) == summary["llm_calls"]

    empty = await (await client.get("/dashboard?until=2000-01-01")).text()
    assert 'data-chart="messages-per-route" data-points="0"' in empty and "no data in this window" in empty


async def test_a_correction_shows_in_the_logs_and_retrains_the_local_router(client: TestClient, filled: Filled) -> None:
    target = next(r for r in await _all(client) if r["route"] == "technical")
    page = await client.get(f"/conversations/{target['conversation_id']}")
    response = await client.post(
        f"/decisions/{target['id']}/correction",
        data={"route": "billing", "reviewer": "Rita", "note": "asked about a charge",
              "csrf_token": csrf_token(await page.text())},
        allow_redirects=False)
    assert response.status == 303
    shown = await (await client.get(response.headers["Location"])).text()
    assert "Correction saved: technical → billing" in shown and "by Rita" in shown

    [row] = await _all(client, "decided_by=correction")
    assert row["id"] == target["id"] and row["route"] == "billing" and row["original_route"] == "technical"
    assert target["id"] not in {r["id"] for r in await _all(client, "route=technical")}
    html = await (await client.get("/decisions?decided_by=correction")).text()
    assert _rows(html) == [(str(target["id"]), "billing")] and "by-correction" in html

    # Retraining runs off the request path (in a child process); the operator sees it finish in /api/router.
    async with asyncio.timeout(60):
        while True:
            status = await (await client.get("/api/router")).json()
            if status["retrain_runs"] >= 1 and not status["retraining"]:
                break
            await asyncio.sleep(0.05)
    assert status["corrections_used"] == 1 and status["last_error"] is None

    runtime = filled.runtime
    again = await runtime.pipeline.handle(InboundMessage(
        source="slack", team="T0TEAM", channel="CSUPPORT", user="UERIN", text=target["text"],
        ts="1900000000.000001", event_id="EvAgain"))
    assert again.route == "billing" and "corrected" in (again.reason or "")


async def test_bad_corrections_are_refused_clearly(client: TestClient) -> None:
    token = csrf_token(await (await client.get("/conversations/1")).text())
    unknown_route = await client.post("/decisions/1/correction", data={"route": "refunds", "csrf_token": token})
    assert unknown_route.status == 400 and "not a configured route" in await unknown_route.text()
    missing = await client.post("/decisions/999/correction", data={"route": "billing", "csrf_token": token})
    assert missing.status == 404
    api = await client.post("/api/decisions/1/correction", data="not json",
                            headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert api.status == 400
    assert (await (await client.get("/api/decisions?decided_by=correction")).json())["total"] == 0


async def test_static_files_are_served_and_nothing_else(client: TestClient) -> None:
    css = await client.get("/static/style.css")
    assert css.status == 200 and css.content_type == "text/css"
    assert (await client.get("/static/playground.js")).content_type == "text/javascript"
    assert (await client.get("/static/..%2Fdashboard.py")).status == 404
    assert (await client.get("/static/missing.css")).status == 404
