"""State changes from a browser need the session's CSRF token and a same-site Origin; scripts use the bearer token."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from bot.runtime import Runtime
from tests.web.conftest import TOKEN, ClientFactory, Filled, csrf_token


async def _page_token(client: TestClient, path: str = "/conversations/1") -> str:
    response = await client.get(path)
    assert response.status == 200
    return csrf_token(await response.text())


async def _corrections(client: TestClient) -> int:
    body = await (await client.get("/api/decisions?decided_by=correction")).json()
    return int(body["total"])


async def test_correction_without_the_csrf_token_is_refused_and_stores_nothing(client: TestClient) -> None:
    await _page_token(client)  # the browser has a session cookie, as after any page view
    response = await client.post("/decisions/1/correction", data={"route": "technical"})
    assert response.status == 403 and "CSRF" in await response.text()
    wrong = await client.post("/decisions/1/correction", data={"route": "technical", "csrf_token": "forged"})
    assert wrong.status == 403
    assert await _corrections(client) == 0


async def test_correction_from_another_origin_is_refused_even_with_the_token(client: TestClient) -> None:
    token = await _page_token(client)
    response = await client.post("/decisions/1/correction", data={"route": "technical", "csrf_token": token},
                                 headers={"Origin": "https://evil.example"})
    assert response.status == 403 and "another site" in await response.text()
    null_origin = await client.post("/decisions/1/correction", data={"route": "technical", "csrf_token": token},
                                    headers={"Origin": "null"})
    assert null_origin.status == 403
    assert await _corrections(client) == 0


async def test_a_post_without_any_session_is_refused(filled: Filled, make_client: ClientFactory) -> None:
    """A cross-site form post arrives without the SameSite=Strict cookie: no session, no change."""
    client = await make_client(filled.runtime)
    response = await client.post("/decisions/1/correction", data={"route": "technical", "csrf_token": "x"},
                                 allow_redirects=False)
    assert response.status == 403
    assert await _corrections(client) == 0


async def test_correction_with_the_token_and_same_origin_is_stored(client: TestClient) -> None:
    token = await _page_token(client)
    origin = f"http://{client.host}:{client.port}"
    response = await client.post("/decisions/1/correction", data={"route": "technical", "csrf_token": token},
                                 headers={"Origin": origin}, allow_redirects=False)
    assert response.status == 303
    assert await _corrections(client) == 1


async def test_playground_json_posts_need_the_csrf_header(client: TestClient) -> None:
    token = await _page_token(client, "/playground")
    refused = await client.post("/api/playground/messages", json={"text": "hello?"})
    assert refused.status == 403 and "CSRF" in (await refused.json())["error"]
    accepted = await client.post("/api/playground/messages", json={"text": "hello?"},
                                 headers={"X-CSRF-Token": token})
    assert accepted.status == 202
    staff = await client.post("/api/playground/staff-replies", json={"text": "hi", "thread_ts": "1"})
    assert staff.status == 403
    ack = await client.post("/api/playground/escalations/1/acknowledge", json={})
    assert ack.status == 403


async def test_bearer_requests_need_no_csrf_token(token_runtime: Runtime, make_client: ClientFactory) -> None:
    client = await make_client(token_runtime)
    response = await client.post("/api/decisions/1/correction", json={"route": "sales", "reviewer": "script"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 201
    assert (await response.json())["route"] == "sales"
    # The same request with a logged-in cookie but no CSRF token is refused.
    await client.post("/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False)
    cookie_only = await client.post("/api/decisions/1/correction", json={"route": "technical"})
    assert cookie_only.status == 403
