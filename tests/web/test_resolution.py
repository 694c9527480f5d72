"""The dashboard shows how threads ended and how answers were rated: cards, charts, per-route table, JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.domain import FeedbackPress
from bot.local_chat import LocalChat
from tests.web.conftest import CONVERSATIONS, Filled


async def rate(filled: Filled, index: int, value: str) -> None:
    """The asker of CONVERSATIONS[index] rates the bot's answer in that thread."""
    chat = filled.runtime.chat
    assert isinstance(chat, LocalChat)
    channel, user, _ = CONVERSATIONS[index]
    thread_ts = filled.threads[index]
    [answer] = [post for post in chat.posts_in(channel, thread_ts) if post.kind == "answer"]
    assert answer.answer is not None and answer.answer.asks_feedback
    press = FeedbackPress(team="T0TEAM", channel=channel, thread_ts=thread_ts, answer_ts=answer.ts, user=user,
                          value="good" if value == "good" else "bad")
    assert await filled.runtime.feedback.rate(press) == "recorded"


async def test_resolution_rate_csat_and_ratings_show_per_route_and_over_time(
    client: TestClient[web.Request, web.Application], filled: Filled,
) -> None:
    await rate(filled, 1, "good")
    await rate(filled, 2, "bad")

    stats = await (await client.get("/api/stats?since=all")).json()
    every: dict[str, Any] = stats["resolution"][0]
    assert every["route"] == "all" and every["threads"] == len(CONVERSATIONS)
    assert (every["feedback_good"], every["feedback_bad"], every["csat"]) == (1, 1, 0.5)
    assert (every["resolved_by_bot"], every["settled"], every["resolution_rate"]) == (1, 1, 1.0)
    assert every["escalated"] >= 1 and every["escalation_rate"] == round(every["escalated"] / len(CONVERSATIONS), 4)
    assert sum(bucket["rated"] for bucket in stats["csat"]) == 2
    assert sum(bucket["resolved_by_bot"] for bucket in stats["resolution_rate"]) == 1
    routes = {row["route"]: row for row in stats["resolution"][1:]}
    assert sum(row["feedback_good"] for row in routes.values()) == 1

    page = await (await client.get("/dashboard?since=all")).text()
    assert 'data-stat="csat">50%' in page and 'data-stat="resolution-rate">100%' in page
    assert 'aria-label="resolution per route"' in page and "csat" in page

    good = await (await client.get("/api/decisions?feedback=good")).json()
    [row] = good["decisions"]
    assert (row["feedback"], row["resolution"]) == ("good", "resolved_by_bot")
    conversation = await (await client.get(f"/api/conversations/{row['conversation_id']}")).json()
    assert conversation["conversation"]["resolution"] == "resolved_by_bot"
    [rated] = [m["decision"] for m in conversation["messages"] if m["decision"] and m["decision"]["feedback"]]
    assert rated["feedback"][0] | {"updated_at": None} == {
        "user": CONVERSATIONS[1][1], "value": "good", "from_asker": True, "reason": None, "updated_at": None}
    html = await (await client.get(f"/conversations/{row['conversation_id']}")).text()
    assert 'data-resolution="resolved_by_bot"' in html and 'data-feedback="good"' in html
    filtered = await (await client.get("/decisions?resolution=open")).text()
    assert f"decision-{row['id']}\"" not in filtered
