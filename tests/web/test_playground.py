"""The local playground: a support channel on the real pipeline, and the on-call side of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bot.escalation.service import HUMAN_ALREADY
from bot.llm.base import LLMRequest, LLMResponse
from bot.local_chat import LOCAL_PAGE_CHANNEL, LocalChat
from bot.ports import Capabilities
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.web.playground import plain
from tests.web.conftest import ClientFactory, csrf_token


class Playground:
    """What the playground page does, over HTTP: send, poll, press buttons."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"X-CSRF-Token": token}

    async def send(self, text: str, thread_ts: str | None = None) -> str:
        response = await self.client.post("/api/playground/messages", json={"text": text, "thread_ts": thread_ts},
                                          headers=self.headers)
        assert response.status == 202, await response.text()
        return str((await response.json())["thread_ts"])

    async def state(self, thread_ts: str | None = None) -> dict[str, Any]:
        response = await self.client.get("/api/playground/state" + (f"?thread={thread_ts}" if thread_ts else ""))
        assert response.status == 200
        return dict(await response.json())

    async def until(self, thread_ts: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(400):
            state = await self.state(thread_ts)
            if done(state):
                return state
            await asyncio.sleep(0.025)
        raise AssertionError(f"the playground never reached the expected state: {state}")

    async def act(self, escalation_id: int, action: str) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(f"/api/playground/escalations/{escalation_id}/{action}", json={},
                                          headers=self.headers)
        return response.status, dict(await response.json())


async def playground(client: TestClient) -> Playground:
    page = await client.get("/playground")
    assert page.status == 200
    return Playground(client, csrf_token(await page.text()))


def settled(state: dict[str, Any]) -> bool:
    thread = state["thread"]
    return thread is not None and not thread["working"] and all(
        item.get("status") == "done" for item in thread["items"] if item["kind"] == "customer")


def kinds(state: dict[str, Any]) -> list[str]:
    return [item["kind"] for item in state["thread"]["items"]]


async def test_a_question_gets_a_reply_in_its_thread_with_the_route_and_why(
    runtime: Runtime, make_client: ClientFactory
) -> None:
    play = await playground(await make_client(runtime))
    thread = await play.send("the app crashes every time I upload a file")
    state = await play.until(thread, settled)
    customer, bot = state["thread"]["items"]
    assert customer["kind"] == "customer" and customer["text"] == "the app crashes every time I upload a file"
    assert customer["decision"]["route"] == "technical" and customer["decision"]["reason"]
    assert bot["kind"] == "bot" and "technical support engineer" in bot["text"]
    # The answer's Markdown is shown as plain text, without its markers.
    assert bot["text"].startswith("(offline mode: no ANTHROPIC_API_KEY is set")
    assert state["thread"]["inspect_url"] == f"/conversations/{state['thread']['conversation_id']}"
    assert [t["thread_ts"] for t in state["threads"]] == [thread]

    follow_up = await play.send("it says error 413", thread_ts=thread)
    assert follow_up == thread
    state = await play.until(thread, lambda s: settled(s) and kinds(s).count("bot") == 2)
    assert kinds(state) == ["customer", "bot", "customer", "bot"]
    # The same exchange is in the routing log, from the real pipeline.
    logged = await (await play.client.get("/api/decisions?channel=CPLAYGROUND")).json()
    assert logged["total"] == 2 and {r["user"] for r in logged["decisions"]} == {"UCUSTOMER"}


async def test_escalation_page_acknowledge_resolve_as_on_call(runtime: Runtime, make_client: ClientFactory) -> None:
    play = await playground(await make_client(runtime))
    thread = await play.send("I want to speak to a human, now")
    state = await play.until(thread, lambda s: settled(s) and bool(s["escalations"]))
    assert state["thread"]["state"] == "escalated"
    [page] = state["escalations"]
    assert page["state"] == "paged" and page["can_acknowledge"] and page["thread_ts"] == thread
    assert page["page_channel"] == LOCAL_PAGE_CHANNEL
    assert any("I want to speak to a human" in line["text"] for line in page["page"])
    assert "paged a person" in state["thread"]["items"][-1]["text"]

    status, body = await play.act(page["id"], "acknowledge")
    assert status == 200 and body["result"] == "done"
    state = await play.state(thread)
    assert state["escalations"][0]["state"] == "acknowledged" and state["escalations"][0]["acknowledged_by"]
    assert any("is on it" in item["text"] for item in state["thread"]["items"] if item["kind"] == "notice")
    again, body = await play.act(page["id"], "acknowledge")
    assert again == 409 and body["result"] == "already"

    status, _ = await play.act(page["id"], "resolve")
    assert status == 200
    state = await play.state(thread)
    assert state["escalations"][0]["state"] == "resolved" and state["thread"]["state"] == "resolved"
    assert (await play.act(999, "resolve"))[0] == 404
    assert (await play.act(page["id"], "explode"))[0] == 404


async def test_on_call_reply_takes_the_thread_over_and_the_bot_stays_quiet(
    runtime: Runtime, make_client: ClientFactory
) -> None:
    play = await playground(await make_client(runtime))
    thread = await play.send("where is my order? it is late")
    await play.until(thread, settled)
    response = await play.client.post("/api/playground/staff-replies", headers=play.headers,
                                      json={"thread_ts": thread, "text": "I'm on it, checking with the courier"})
    assert response.status == 201
    await play.send("thanks, any news?", thread_ts=thread)
    state = await play.until(thread, lambda s: settled(s) and kinds(s).count("customer") == 2)
    assert kinds(state) == ["customer", "bot", "staff", "customer"]
    assert state["thread"]["state"] == "taken_over" and state["thread"]["items"][-1]["outcome"] == "quiet"
    nobody = await play.client.post("/api/playground/staff-replies", headers=play.headers,
                                    json={"thread_ts": "123.456", "text": "hello"})
    assert nobody.status == 404


async def test_messages_are_validated(runtime: Runtime, make_client: ClientFactory) -> None:
    play = await playground(await make_client(runtime))
    empty = await play.client.post("/api/playground/messages", json={"text": "  "}, headers=play.headers)
    assert empty.status == 400 and "type a message" in (await empty.json())["error"]
    huge = await play.client.post("/api/playground/messages", json={"text": "x" * 5000}, headers=play.headers)
    assert huge.status == 400
    not_json = await play.client.post("/api/playground/messages", data="text=hi", headers=play.headers)
    assert not_json.status == 400


class SlackLikeChat(LocalChat):
    """A stand-in for the Slack transport: the server is connected to a workspace, not the local chat."""

    name = "slack"
    capabilities = Capabilities()


async def test_with_slack_the_home_is_the_dashboard_and_there_is_no_playground(
    settings: Settings, config: Any, make_client: ClientFactory
) -> None:
    runtime = await build_runtime(settings, config, chat=SlackLikeChat(), instance_id="slack-1")
    try:
        client = await make_client(runtime)
        home = await client.get("/", allow_redirects=False)
        assert home.headers["Location"] == "/dashboard"
        page = await client.get("/playground")
        assert page.status == 404 and "local mode only" in await page.text()
        assert 'href="/playground"' not in await (await client.get("/decisions")).text()
    finally:
        await runtime.close()


class SteppedLLM:
    """An LLM port that writes its answer in two steps through the stream sink, the second on `go`."""

    provider = "stepped"

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        assert request.tool is None and request.stream_to is not None
        await request.stream_to.write("Restart the app, ")
        await self.go.wait()
        await request.stream_to.write("then upload the file again.")
        return LLMResponse(text="Restart the app, then upload the file again.", model=request.model,
                           provider=self.provider)


async def read_events(response: ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The `state` events of a server-sent event stream, as they arrive."""
    event = None
    while line := (await response.content.readline()).decode():
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event == "state":
            yield json.loads(line[6:])


async def test_answers_appear_in_the_playground_while_they_are_written(
    settings: Settings, config: Any, make_client: ClientFactory
) -> None:
    llm = SteppedLLM()
    runtime = await build_runtime(settings, config, chat=LocalChat(), llm=llm, instance_id="stream-1")
    try:
        play = await playground(await make_client(runtime))
        thread = await play.send("the app crashes every time I upload a file")
        events = await play.client.get(f"/api/playground/events?thread={thread}")
        assert events.status == 200 and events.headers["Content-Type"] == "text/event-stream"
        assert events.headers["X-Content-Type-Options"] == "nosniff"
        seen: list[tuple[str, bool]] = []
        async with asyncio.timeout(20):
            async for state in read_events(events):
                bots = [item for item in state["thread"]["items"] if item["kind"] == "bot"]
                if bots:
                    seen.append((bots[0]["text"], bots[0].get("streaming", False)))
                    llm.go.set()
                if bots and not bots[0].get("streaming") and settled(state):
                    break
        events.close()
        # First the words written so far, still streaming; then the whole answer, once.
        assert seen[0] == ("Restart the app, ", True)
        assert seen[-1] == ("Restart the app, then upload the file again.", False)
        assert len(runtime.chat.posts_in("CPLAYGROUND", thread)) == 1  # type: ignore[attr-defined]
    finally:
        await runtime.close()


async def test_open_event_streams_end_when_the_server_shuts_down(runtime: Runtime, make_client: ClientFactory) -> None:
    play = await playground(await make_client(runtime))
    events = await play.client.get("/api/playground/events")
    async with asyncio.timeout(20):
        async for state in read_events(events):
            assert state["threads"] == []
            break
        # A tab left open must not hold back `supportbot serve`'s shutdown until the stream's own end.
        await play.client.app.shutdown()
        await events.content.read()
    assert events.content.at_eof()


async def test_the_customer_rates_answers_and_a_thumbs_down_offers_a_person(
    runtime: Runtime, make_client: ClientFactory
) -> None:
    play = await playground(await make_client(runtime))
    thread = await play.send("the app crashes every time I upload a file")
    state = await play.until(thread, settled)
    [answer] = [item for item in state["thread"]["items"] if item["kind"] == "bot"]
    assert answer["feedback"] == {"value": None}

    async def rate(value: str, ts: str = answer["ts"]) -> tuple[int, dict[str, Any]]:
        response = await play.client.post("/api/playground/feedback", headers=play.headers,
                                          json={"thread_ts": thread, "ts": ts, "value": value})
        return response.status, dict(await response.json())

    assert await rate("good") == (200, {"result": "recorded", "value": "good"})
    assert await rate("bad") == (200, {"result": "changed", "value": "bad"})
    state = await play.until(thread, lambda s: kinds(s)[-1] == "notice")
    items = state["thread"]["items"]
    assert items[1]["feedback"] == {"value": "bad"} and "notice" not in [i.get("feedback") for i in items]
    assert items[-1]["offers_human"] == "feedback" and "Get a human" in items[-1]["text"]
    assert (await rate("meh"))[0] == 400 and (await rate("good", "1.000001"))[0] == 404

    response = await play.client.post("/api/playground/human-requests", headers=play.headers,
                                      json={"thread_ts": thread, "trigger": "feedback"})
    assert response.status == 201
    state = await play.state(thread)
    [page] = state["escalations"]
    assert page["trigger"] == "feedback" and state["thread"]["state"] == "escalated"
    # Pressing the offer again says a person was already asked, as Slack says it.
    again = await play.client.post("/api/playground/human-requests", headers=play.headers,
                                   json={"thread_ts": thread, "trigger": "feedback"})
    assert again.status == 409 and (await again.json())["error"] == HUMAN_ALREADY
    logged = await (await play.client.get("/api/decisions?channel=CPLAYGROUND")).json()
    assert [(row["feedback"], row["resolution"]) for row in logged["decisions"]] == [("bad", "escalated")]


def test_answers_read_as_plain_text_without_markdown_markers() -> None:
    markdown = ("_(offline mode: no ANTHROPIC_API_KEY is set)_\n# Refunds\nFrom our docs, **Refunds**:\n"
                "> Paid back in 14 days, see [the guide](https://example.com/a_b_c).\nsnake_case and 2 * 3 * 4")
    assert plain(markdown) == ("(offline mode: no ANTHROPIC_API_KEY is set)\nRefunds\nFrom our docs, Refunds:\n"
                               "Paid back in 14 days, see the guide (https://example.com/a_b_c).\n"
                               "snake_case and 2 * 3 * 4")
