"""Tests of the Slack fake, driven through the real slack_sdk clients and Bolt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import DROPPED, FakeSlackAPI

pytestmark = pytest.mark.timeout(10)

CHANNEL = "C0SUPPORT"
ALICE = "U0ALICE"
FAST_RETRY = FixedValueRetryIntervalCalculator(0.01)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlackAPI) -> AsyncWebClient:
    return AsyncWebClient(base_url=fake.url, token="xoxb-dummy", timeout=5)


# ------------------------------------------------------------------ Web API


async def test_url_ends_with_api_and_auth_test_names_the_bot(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/api/")
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"], auth["user"]) == (
        "U0BOT",
        "B0BOT",
        "T0TEAM",
        "supportbot",
    )
    [call] = fake.calls_to("auth.test")
    assert call.ok and call.token == "xoxb-dummy"
    assert call.headers["Authorization"] == "Bearer xoxb-dummy"


async def test_post_and_read_a_thread(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    question = fake.seed_message(CHANNEL, "how do I reset my password?", user=ALICE)
    first = await client.chat_postMessage(
        channel=CHANNEL, text="Looking into it", thread_ts=question.ts
    )
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Try this*"}}]
    # form-encoded, as some callers send it: the fake decodes the JSON `blocks` field
    second = await client.api_call(
        "chat.postMessage",
        data={
            "channel": CHANNEL,
            "text": "Try this",
            "thread_ts": question.ts,
            "blocks": json.dumps(blocks),
        },
    )
    assert first["ts"] < second["ts"]
    assert first["message"]["thread_ts"] == question.ts
    assert fake.calls_to("chat.postMessage")[1].params["blocks"] == blocks

    thread = await client.conversations_replies(channel=CHANNEL, ts=question.ts)
    assert [m["text"] for m in thread["messages"]] == [
        "how do I reset my password?",
        "Looking into it",
        "Try this",
    ]
    parent = thread["messages"][0]
    assert parent["reply_count"] == 2 and parent["reply_users"] == ["U0BOT"]
    assert thread["messages"][2]["blocks"] == blocks
    assert thread["messages"][1]["bot_id"] == "B0BOT"

    # the channel itself shows only the parent; the thread pane shows all three
    assert [m.ts for m in fake.messages_in(CHANNEL)] == [question.ts]
    assert [m.text for m in fake.messages_in(CHANNEL, question.ts)][1:] == [
        "Looking into it",
        "Try this",
    ]


async def test_reply_broadcast_shows_in_channel(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    parent = fake.seed_message(CHANNEL, "outage?", user=ALICE)
    await client.chat_postMessage(
        channel=CHANNEL, text="Yes, on it", thread_ts=parent.ts, reply_broadcast=True
    )
    history = await client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in history["messages"]] == ["Yes, on it", "outage?"]
    assert history["messages"][0]["subtype"] == "thread_broadcast"


async def test_metadata_round_trip(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    metadata = {"event_type": "supportbot_reply", "event_payload": {"route": "billing", "n": 3}}
    posted = await client.chat_postMessage(channel=CHANNEL, text="hi", metadata=metadata)
    assert fake.calls_to("chat.postMessage")[0].params["metadata"] == metadata

    plain = await client.conversations_replies(channel=CHANNEL, ts=posted["ts"])
    assert "metadata" not in plain["messages"][0]
    full = await client.conversations_replies(
        channel=CHANNEL, ts=posted["ts"], include_all_metadata=True
    )
    assert full["messages"][0]["metadata"] == metadata
    history = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    assert history["messages"][0]["metadata"] == metadata

    with pytest.raises(SlackApiError) as bad:
        await client.chat_postMessage(channel=CHANNEL, text="x", metadata={"event_payload": {}})
    assert bad.value.response["error"] == "invalid_metadata_format"


async def test_update_delete_permalink_and_reactions(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="draft")
    ts = posted["ts"]
    updated = await client.chat_update(channel=CHANNEL, ts=ts, text="final")
    assert updated["message"]["text"] == "final" and "edited" in updated["message"]
    assert fake.message(CHANNEL, ts).text == "final"

    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=ts)
    assert link["permalink"] == f"https://fake.slack.com/archives/{CHANNEL}/p{ts.replace('.', '')}"

    await client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    with pytest.raises(SlackApiError) as twice:
        await client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    assert twice.value.response["error"] == "already_reacted"
    assert fake.message(CHANNEL, ts).reactions == {"eyes": ("U0BOT",)}
    await client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")
    with pytest.raises(SlackApiError) as gone:
        await client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")
    assert gone.value.response["error"] == "no_reaction"

    human = fake.seed_message(CHANNEL, "mine", user=ALICE)
    with pytest.raises(SlackApiError) as not_ours:
        await client.chat_update(channel=CHANNEL, ts=human.ts, text="hijack")
    assert not_ours.value.response["error"] == "cant_update_message"

    await client.chat_delete(channel=CHANNEL, ts=ts)
    assert [m.text for m in fake.messages_in(CHANNEL)] == ["mine"]
    with pytest.raises(SlackApiError) as missing:
        await client.chat_getPermalink(channel=CHANNEL, message_ts=ts)
    assert missing.value.response["error"] == "message_not_found"


async def test_missing_channel_and_ephemeral(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    fake.mark_channel_missing("C0GONE")
    with pytest.raises(SlackApiError) as gone:
        await client.chat_postMessage(channel="C0GONE", text="hello?")
    assert gone.value.response["error"] == "channel_not_found"
    assert fake.calls_to("chat.postMessage")[0].error == "channel_not_found"

    sent = await client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="only you")
    [note] = fake.ephemeral_messages(user=ALICE)
    assert note.ts == sent["message_ts"] and note.text == "only you"
    assert fake.messages_in(CHANNEL) == []


async def test_people_channels_groups_and_dms(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    fake.add_user(ALICE, name="alice", display_name="Alice", tz="Europe/Paris", tz_offset=3600)
    fake.add_usergroup("S0ONCALL", [ALICE, "U0BOB"])
    fake.add_channel(CHANNEL, name="support")

    alice = (await client.users_info(user=ALICE))["user"]
    assert alice["profile"]["display_name"] == "Alice" and alice["tz"] == "Europe/Paris"
    assert alice["is_bot"] is False
    assert (await client.users_info(user="U0BOT"))["user"]["is_bot"] is True
    fake.mark_user_missing("U0GHOST")
    with pytest.raises(SlackApiError) as ghost:
        await client.users_info(user="U0GHOST")
    assert ghost.value.response["error"] == "user_not_found"

    group = await client.usergroups_users_list(usergroup="S0ONCALL")
    assert group["users"] == [ALICE, "U0BOB"]

    first = await client.conversations_open(users=[ALICE])
    again = await client.conversations_open(users=ALICE)
    assert first["channel"]["id"] == again["channel"]["id"] and first["channel"]["id"][0] == "D"
    assert again["already_open"] is True
    info = await client.conversations_info(channel=CHANNEL)
    assert info["channel"]["name"] == "support" and info["channel"]["is_member"] is True


async def test_history_pagination(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    for n in range(5):
        fake.seed_message(CHANNEL, f"m{n}", user=ALICE)
    first = await client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"] and first["has_more"]
    cursor = first["response_metadata"]["next_cursor"]
    second = await client.conversations_history(channel=CHANNEL, limit=10, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["m2", "m1", "m0"]
    assert second["has_more"] is False


async def test_assistant_thread_methods(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    dm, thread_ts = "D0ALICE", "1700000000.000100"
    await client.assistant_threads_setStatus(
        channel_id=dm, thread_ts=thread_ts, status="is thinking..."
    )
    await client.assistant_threads_setStatus(channel_id=dm, thread_ts=thread_ts, status="")
    await client.assistant_threads_setTitle(channel_id=dm, thread_ts=thread_ts, title="VPN help")
    prompts = [{"title": "Reset VPN", "message": "How do I reset the VPN?"}]
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=dm, thread_ts=thread_ts, prompts=prompts
    )
    state = fake.assistant_thread(dm, thread_ts)
    assert state.statuses == ["is thinking...", ""] and state.status == ""
    assert state.title == "VPN help" and state.prompts == prompts


# ------------------------------------------------------------ auth & errors


async def test_auth_errors_and_unknown_method(fake: FakeSlackAPI) -> None:
    async def error_of(token: str | None, method: str = "auth.test") -> str:
        with pytest.raises(SlackApiError) as failure:
            await AsyncWebClient(base_url=fake.url, token=token).api_call(method)
        assert failure.value.response.status_code == 200
        return str(failure.value.response["error"])

    assert await error_of(None) == "not_authed"
    assert await error_of("bogus") == "invalid_auth"
    assert await error_of("xapp-1-A0APP-1-x") == "not_allowed_token_type"
    assert await error_of("xoxb-dummy", "chat.nonsense") == "unknown_method"
    fake.revoke_token("xoxb-old")
    assert await error_of("xoxb-old") == "token_revoked"
    assert [c.status for c in fake.calls] == [200] * 5


async def test_token_as_form_field(fake: FakeSlackAPI) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.url + "auth.test", data={"token": "xoxb-form"}) as response,
    ):
        body = await response.json()
    assert response.status == 200 and body["ok"] is True
    assert fake.calls_to("auth.test")[0].token == "xoxb-form"
    assert "token" not in fake.calls_to("auth.test")[0].params


async def test_ratelimited_then_recovered_by_sdk_handler(fake: FakeSlackAPI) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=0)
    client = AsyncWebClient(
        base_url=fake.url,
        token="xoxb-dummy",
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    posted = await client.chat_postMessage(channel=CHANNEL, text="eventually")
    assert posted["ok"]
    attempts = fake.calls_to("chat.postMessage")
    assert [a.status for a in attempts] == [429, 200]
    assert attempts[0].error == "ratelimited"
    assert len(fake.successful_calls_to("chat.postMessage")) == 1
    assert [m.text for m in fake.messages_in(CHANNEL)] == ["eventually"]


async def test_429_without_retry_handler_surfaces_retry_after(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel=CHANNEL, text="too fast")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.response["error"] == "ratelimited"
    assert fake.messages_in(CHANNEL) == []


async def test_dropped_connection_recovered_by_sdk_handler(fake: FakeSlackAPI) -> None:
    fake.drop_connection_next("chat.postMessage")
    client = AsyncWebClient(
        base_url=fake.url,
        token="xoxb-dummy",
        retry_handlers=[AsyncConnectionErrorRetryHandler(interval_calculator=FAST_RETRY)],
    )
    await client.chat_postMessage(channel=CHANNEL, text="made it")
    assert [a.status for a in fake.calls_to("chat.postMessage")] == [DROPPED, 200]
    assert len(fake.messages_in(CHANNEL)) == 1


async def test_dropped_connection_without_retry_handlers_raises(fake: FakeSlackAPI) -> None:
    # AsyncWebClient() already retries connection errors once by default; [] turns that off
    client = AsyncWebClient(base_url=fake.url, token="xoxb-dummy", retry_handlers=[])
    fake.drop_connection_next("chat.postMessage")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.chat_postMessage(channel=CHANNEL, text="lost")
    assert [a.status for a in fake.calls_to("chat.postMessage")] == [DROPPED]
    assert fake.messages_in(CHANNEL) == []


async def test_server_errors_and_injected_slack_errors(fake: FakeSlackAPI) -> None:
    fake.fail_next("chat.postMessage", status=503, body="upstream unavailable")
    fake.fail_next("chat.postMessage", error="not_in_channel")
    client = AsyncWebClient(
        base_url=fake.url,
        token="xoxb-dummy",
        retry_handlers=[AsyncServerErrorRetryHandler(interval_calculator=FAST_RETRY)],
    )
    with pytest.raises(SlackApiError) as rejected:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    # the 503 was retried, then the injected ok:false is a final answer
    assert rejected.value.response["error"] == "not_in_channel"
    assert [a.status for a in fake.calls_to("chat.postMessage")] == [503, 200]
    assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]


async def test_seeded_rate_limit_is_deterministic_and_bounded(fake: FakeSlackAPI) -> None:
    async def pattern(seed: int) -> list[int]:
        fake.reset()
        fake.rate_limit("reactions.add", ratio=0.5, seed=seed)
        session_client = AsyncWebClient(base_url=fake.url, token="xoxb-dummy")
        for _ in range(12):
            with contextlib.suppress(SlackApiError):
                await session_client.api_call("reactions.add", params={"name": "x"})
        return [c.status for c in fake.calls_to("reactions.add")]

    first, second = await pattern(7), await pattern(7)
    assert first == second and 429 in first and 200 in first
    assert all(not (a == b == 429) for a, b in zip(first, first[1:], strict=False))


async def test_delay_holds_the_answer(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    fake.delay("auth.test", 0.2)
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.2


async def test_stop_closes_sockets_cuts_delays_and_leaves_no_tasks() -> None:
    fake = FakeSlackAPI()
    await fake.start()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(fake.socket_mode_url)
        assert (await ws.receive_json(timeout=2))["type"] == "hello"
        closing = asyncio.ensure_future(ws.receive(timeout=2))
        fake.delay("auth.test", 30)
        client = AsyncWebClient(base_url=fake.url, token="xoxb-dummy", retry_handlers=[])
        pending = asyncio.ensure_future(client.auth_test())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 1
        assert (await closing).type == aiohttp.WSMsgType.CLOSE
        await asyncio.wait_for(asyncio.gather(pending, return_exceptions=True), 2)
        await ws.close()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    await fake.stop()  # idempotent


async def test_socket_mode_ping_pong_keeps_the_connection(fake: FakeSlackAPI) -> None:
    socket = SocketModeClient(
        app_token="xapp-1-A0APP-1-secret",
        web_client=AsyncWebClient(base_url=fake.url),
        ping_interval=0.1,
    )
    try:
        await socket.connect()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.5)
        assert await socket.is_connected()
        assert socket.last_ping_pong_time is not None
        assert time.time() - socket.last_ping_pong_time < 0.5
    finally:
        await socket.close()  # type: ignore[no-untyped-call]
    assert fake.socket_connections_total == 1


async def test_wait_for_reports_what_it_saw(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel=CHANNEL, text="late")

    task = asyncio.ensure_future(later())
    [call] = await fake.wait_for("chat.postMessage", timeout=2)
    await task
    assert call.params["text"] == "late"
    with pytest.raises(AssertionError, match=r"chat.update.*chat.postMessage"):
        await fake.wait_for("chat.update", timeout=0.05)


async def test_response_url_posts_are_recorded(fake: FakeSlackAPI) -> None:
    url = fake.response_url()
    async with aiohttp.ClientSession() as session:
        await session.post(url, json={"replace_original": True, "text": "Thanks!"})
    [call] = fake.calls_to("response_url")
    assert call.params == {"replace_original": True, "text": "Thanks!"}


# -------------------------------------------------------------- Socket Mode


async def test_socket_mode_client_connects_receives_and_acks(fake: FakeSlackAPI) -> None:
    received: list[SocketModeRequest] = []
    hello: list[dict[str, Any]] = []

    async def on_message(_: Any, message: dict[str, Any], raw: str | None) -> None:
        if message.get("type") == "hello":
            hello.append(message)

    async def on_request(socket: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        await socket.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    socket = SocketModeClient(
        app_token="xapp-1-A0APP-1-secret",
        web_client=AsyncWebClient(base_url=fake.url),
    )
    socket.message_listeners.append(on_message)
    socket.socket_mode_request_listeners.append(on_request)
    try:
        await socket.connect()  # type: ignore[no-untyped-call]
        await fake.wait_for_socket_client(timeout=2)
        event = sp.message_event(CHANNEL, ALICE, "help please")
        envelope_id = await fake.send_envelope(
            "events_api", sp.event_callback(event), retry_attempt=1, retry_reason="timeout"
        )
        ack = await fake.wait_for_ack(envelope_id, timeout=2)
    finally:
        await socket.close()  # type: ignore[no-untyped-call]

    assert ack.payload is None
    [request] = received
    assert request.type == "events_api" and request.retry_attempt == 1
    assert request.payload["event"]["text"] == "help please"
    assert hello[0]["connection_info"] == {"app_id": "A0APP"}
    [opened] = fake.calls_to("apps.connections.open")
    assert opened.token is not None and opened.token.startswith("xapp-")


async def test_socket_mode_reconnects_on_disconnect(fake: FakeSlackAPI) -> None:
    socket = SocketModeClient(
        app_token="xapp-1-A0APP-1-secret", web_client=AsyncWebClient(base_url=fake.url)
    )
    try:
        await socket.connect()  # type: ignore[no-untyped-call]
        await fake.wait_for_socket_client(timeout=2)
        await fake.send_disconnect("refresh_requested")
        await fake.wait_for_socket_client(timeout=3, connections=2)
        await fake.wait_for("apps.connections.open", count=2, timeout=2)
    finally:
        await socket.close()  # type: ignore[no-untyped-call]
    assert fake.socket_connections_total == 2


async def test_apps_connections_open_needs_an_app_token(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as wrong:
        await client.apps_connections_open(app_token="xoxb-dummy")
    assert wrong.value.response["error"] == "not_allowed_token_type"


async def test_bolt_app_over_socket_mode_replies_in_thread(fake: FakeSlackAPI) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    web = AsyncWebClient(base_url=fake.url, token="xoxb-dummy")
    app = AsyncApp(client=web, signing_secret=sp.SIGNING_SECRET)

    @app.event("message")
    async def answer(event: dict[str, Any], say: Any) -> None:
        await say(text=f"echo: {event['text']}", thread_ts=event["ts"])

    handler = AsyncSocketModeHandler(app, "xapp-1-A0APP-1-secret", web_client=web)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        delivery = await fake.user_posts(CHANNEL, ALICE, "is the VPN down?", timeout=2)
        await fake.wait_for_ack(delivery.envelope_ids[0], timeout=2)
        await fake.wait_for("chat.postMessage", timeout=2)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
    [question, reply] = fake.messages_in(CHANNEL, delivery.message.ts)
    assert reply.text == "echo: is the VPN down?" and reply.bot_id == "B0BOT"


# -------------------------------------------------------- signed payloads


def test_sign_matches_slack_sdk_signature_verifier() -> None:
    body = b'{"type":"event_callback"}'
    verifier = SignatureVerifier(sp.SIGNING_SECRET)
    assert verifier.is_valid_request(body, sp.sign(body, sp.SIGNING_SECRET))
    assert not verifier.is_valid_request(body, sp.sign_invalid(body, sp.SIGNING_SECRET))
    stale = sp.sign(body, sp.SIGNING_SECRET, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)
    assert not verifier.is_valid_request(body, sp.sign(body, "another-secret"))


def test_encoded_requests_carry_valid_signatures_and_retry_headers() -> None:
    verifier = SignatureVerifier(sp.SIGNING_SECRET)
    payload = sp.event_callback(sp.app_mention_event(CHANNEL, ALICE, "<@U0BOT> help"))
    body, headers = sp.encode_event_request(payload, retry_num=2, retry_reason="http_timeout")
    assert verifier.is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/json"
    assert (headers["X-Slack-Retry-Num"], headers["X-Slack-Retry-Reason"]) == ("2", "http_timeout")
    assert json.loads(body)["event"]["blocks"][0]["elements"][0]["elements"][0] == {
        "type": "user",
        "user_id": "U0BOT",
    }

    action = sp.block_actions("vote_up", "yes", user_id=ALICE, channel=CHANNEL, message_ts="1.2")
    form, form_headers = sp.encode_interaction_request(action)
    assert verifier.is_valid_request(form, form_headers)
    assert json.loads(parse_qs(form.decode())["payload"][0]) == action


def bolt_request(body: bytes, headers: dict[str, str]) -> AsyncBoltRequest:
    as_bolt_expects: dict[str, str | Sequence[str]] = dict(headers)
    return AsyncBoltRequest(body=body.decode(), headers=as_bolt_expects)


async def test_bolt_accepts_signed_http_requests_and_rejects_bad_ones(
    fake: FakeSlackAPI,
) -> None:
    app = AsyncApp(
        client=AsyncWebClient(base_url=fake.url, token="xoxb-dummy"),
        signing_secret=sp.SIGNING_SECRET,
    )
    clicked: list[str] = []

    @app.action("vote_up")
    async def on_vote(ack: Any, action: dict[str, Any]) -> None:
        await ack()
        clicked.append(action["value"])

    action = sp.block_actions("vote_up", "yes", user_id=ALICE, channel=CHANNEL, message_ts="1.2")
    body, headers = sp.encode_interaction_request(action)
    response = await app.async_dispatch(bolt_request(body, headers))
    assert response.status == 200 and clicked == ["yes"]

    bad_body, bad_headers = sp.encode_interaction_request(action, valid_signature=False)
    rejected = await app.async_dispatch(bolt_request(bad_body, bad_headers))
    assert rejected.status == 401

    challenge_body, challenge_headers = sp.encode_event_request(sp.url_verification("abc123"))
    challenge = await app.async_dispatch(bolt_request(challenge_body, challenge_headers))
    assert challenge.status == 200 and json.loads(challenge.body) == {"challenge": "abc123"}


# ---------------------------------------------------------------- streaming

DM = "D0ALICE"
RECIPIENT: dict[str, Any] = {"recipient_team_id": "T0TEAM", "recipient_user_id": ALICE}
GOOD = {"text": {"type": "plain_text", "text": "👍"}, "value": "good"}
BAD = {
    "text": {"type": "plain_text", "text": "👎", "emoji": True},
    "value": "bad",
    "accessibility_label": "This answer did not help",
}
FEEDBACK_BLOCK: dict[str, Any] = {
    "type": "context_actions",
    "block_id": "feedback",
    "elements": [
        {
            "type": "feedback_buttons",
            "action_id": "reply_feedback",
            "positive_button": GOOD,
            "negative_button": BAD,
        }
    ],
}
PLAIN_FEEDBACK_BLOCK: dict[str, Any] = {
    "type": "actions",
    "block_id": "feedback",
    "elements": [
        {
            "type": "button",
            "action_id": "reply_feedback",
            "text": {"type": "plain_text", "text": ":thumbsup:"},
            "value": "good",
        },
        {
            "type": "button",
            "action_id": "reply_feedback",
            "text": {"type": "plain_text", "text": ":thumbsdown:"},
            "value": "bad",
        },
    ],
}


class ManualClock:
    """A clock the test moves by hand, for the fake's stream timeouts."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def slack_error(call: Any) -> str:
    with pytest.raises(SlackApiError) as refused:
        await call
    error = refused.value.response["error"]
    assert isinstance(error, str)
    return error


async def test_a_channel_stream_needs_its_recipient_then_shows_as_one_growing_reply(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    question = fake.seed_message(CHANNEL, "how do I rotate my API key?", user=ALICE)
    start = client.chat_startStream
    assert await slack_error(start(channel=CHANNEL, thread_ts=question.ts)) == (
        "missing_recipient_team_id"
    )
    assert (
        await slack_error(start(channel=CHANNEL, thread_ts=question.ts, recipient_team_id="T0TEAM"))
        == "missing_recipient_user_id"
    )
    assert [c.error for c in fake.calls_to("chat.startStream")] == [
        "missing_recipient_team_id",
        "missing_recipient_user_id",
    ]
    assert len(fake.messages_in(CHANNEL, question.ts)) == 1  # nothing was posted

    started = await start(
        channel=CHANNEL, thread_ts=question.ts, markdown_text="Open **Settings**", **RECIPIENT
    )
    ts = started["ts"]
    assert (started["ok"], started["channel"]) == (True, CHANNEL)
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=", then *API keys*")
    shown = fake.message(CHANNEL, ts)
    assert (shown.text, shown.stream_state, shown.thread_ts) == (
        "Open **Settings**, then *API keys*",
        "streaming",
        question.ts,
    )
    mid_way = await client.conversations_replies(channel=CHANNEL, ts=question.ts)
    assert mid_way["messages"][1]["text"] == "Open **Settings**, then *API keys*"

    metadata = {"event_type": "supportbot_answer", "event_payload": {"route": "billing"}}
    stopped = await client.chat_stopStream(
        channel=CHANNEL, ts=ts, markdown_text=".", blocks=[FEEDBACK_BLOCK], metadata=metadata
    )
    assert stopped["message"]["text"] == "Open **Settings**, then *API keys*."
    assert stopped["message"]["blocks"] == [FEEDBACK_BLOCK]
    final = fake.message(CHANNEL, ts)
    assert (final.stream_state, final.blocks, final.metadata) == (
        "stopped",
        [FEEDBACK_BLOCK],
        metadata,
    )
    [_, reply] = fake.messages_in(CHANNEL, question.ts)
    assert reply.ts == ts and reply.bot_id == "B0BOT"
    thread = await client.conversations_replies(
        channel=CHANNEL, ts=question.ts, include_all_metadata=True
    )
    assert thread["messages"][1]["metadata"] == metadata
    assert thread["messages"][1]["blocks"] == [FEEDBACK_BLOCK]
    assert [c.method for c in fake.stream_calls(CHANNEL, ts)] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]


async def test_a_dm_stream_needs_no_recipient(fake: FakeSlackAPI, client: AsyncWebClient) -> None:
    question = fake.seed_message(DM, "hi", user=ALICE)
    started = await client.chat_startStream(channel=DM, thread_ts=question.ts)
    await client.chat_appendStream(channel=DM, ts=started["ts"], markdown_text="Hello!")
    await client.chat_stopStream(channel=DM, ts=started["ts"])
    assert fake.message(DM, started["ts"]).text == "Hello!"


async def test_append_and_stop_refuse_what_is_not_an_open_stream(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    question = fake.seed_message(CHANNEL, "help", user=ALICE)
    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT))["ts"]
    assert await slack_error(client.chat_appendStream(channel=CHANNEL, ts=ts)) == (
        "invalid_arguments"
    )
    await client.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text="Done.")
    posted = await client.chat_postMessage(channel=CHANNEL, text="plain", thread_ts=question.ts)

    for target in (ts, posted["ts"]):
        append = client.chat_appendStream(channel=CHANNEL, ts=target, markdown_text="more")
        assert await slack_error(append) == "message_not_in_streaming_state"
        assert await slack_error(client.chat_stopStream(channel=CHANNEL, ts=target)) == (
            "message_not_in_streaming_state"
        )
    someone_else = client.chat_appendStream(channel=CHANNEL, ts=question.ts, markdown_text="x")
    assert await slack_error(someone_else) == "message_not_owned_by_app"
    missing = client.chat_stopStream(channel=CHANNEL, ts="1600000000.000100")
    assert await slack_error(missing) == "message_not_found"
    assert fake.message(CHANNEL, ts).text == "Done."


async def test_chat_update_conflicts_with_a_streaming_message_and_delete_does_not(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    question = fake.seed_message(CHANNEL, "help", user=ALICE)
    first = await client.chat_startStream(
        channel=CHANNEL, thread_ts=question.ts, markdown_text="Half a sen", **RECIPIENT
    )
    update = client.chat_update(channel=CHANNEL, ts=first["ts"], text="A whole sentence.")
    assert await slack_error(update) == "streaming_state_conflict"
    assert fake.message(CHANNEL, first["ts"]).text == "Half a sen"
    await client.chat_stopStream(channel=CHANNEL, ts=first["ts"])
    await client.chat_update(channel=CHANNEL, ts=first["ts"], text="A whole sentence.")
    assert fake.message(CHANNEL, first["ts"]).text == "A whole sentence."

    second = await client.chat_startStream(
        channel=CHANNEL, thread_ts=question.ts, markdown_text="Oops", **RECIPIENT
    )
    await client.chat_delete(channel=CHANNEL, ts=second["ts"])
    gone = client.chat_appendStream(channel=CHANNEL, ts=second["ts"], markdown_text="more")
    assert await slack_error(gone) == "message_not_found"
    assert [m.text for m in fake.messages_in(CHANNEL, question.ts)] == [
        "help",
        "A whole sentence.",
    ]


async def test_idle_and_old_streams_expire_frozen_with_their_text() -> None:
    clock = ManualClock()
    async with FakeSlackAPI(stream_idle_timeout_s=10, stream_max_age_s=60, clock=clock) as fake:
        client = AsyncWebClient(base_url=fake.url, token="xoxb-dummy")
        question = fake.seed_message(CHANNEL, "help", user=ALICE)
        idle = await client.chat_startStream(
            channel=CHANNEL, thread_ts=question.ts, markdown_text="Step one", **RECIPIENT
        )
        clock.now += 9
        await client.chat_appendStream(channel=CHANNEL, ts=idle["ts"], markdown_text=", two")
        clock.now += 10
        assert fake.message(CHANNEL, idle["ts"]).stream_state == "expired"
        late = client.chat_appendStream(channel=CHANNEL, ts=idle["ts"], markdown_text=", three")
        assert await slack_error(late) == "message_not_in_streaming_state"
        assert await slack_error(client.chat_stopStream(channel=CHANNEL, ts=idle["ts"])) == (
            "message_not_in_streaming_state"
        )
        assert fake.message(CHANNEL, idle["ts"]).text == "Step one, two"
        # once expired, the message is an ordinary one again: it can be completed in place
        await client.chat_update(channel=CHANNEL, ts=idle["ts"], text="Step one, two, three.")
        assert fake.message(CHANNEL, idle["ts"]).text == "Step one, two, three."

        old = await client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT)
        for _ in range(6):
            clock.now += 9
            await client.chat_appendStream(channel=CHANNEL, ts=old["ts"], markdown_text=".")
        clock.now += 6
        assert fake.message(CHANNEL, old["ts"]).stream_state == "expired"
        assert fake.message(CHANNEL, old["ts"]).text == "......"

        forced = await client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT)
        assert fake.expire_stream(CHANNEL, forced["ts"]).stream_state == "expired"


async def test_the_sdk_chat_stream_helper_end_to_end(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    question = fake.seed_message(CHANNEL, "what is the refund policy?", user=ALICE)
    streamer = await client.chat_stream(
        channel=CHANNEL,
        thread_ts=question.ts,
        recipient_team_id="T0TEAM",
        recipient_user_id=ALICE,
        buffer_size=20,
    )
    answer = "Refunds are issued within 14 days of purchase, to the original card. "
    for start in range(0, len(answer), 7):
        await streamer.append(markdown_text=answer[start : start + 7])
    await streamer.stop(markdown_text="See the policy page.", blocks=[FEEDBACK_BLOCK])

    assert streamer.ts is not None
    calls = fake.stream_calls(CHANNEL, streamer.ts)
    assert [c.method for c in calls][0] == "chat.startStream"
    assert [c.method for c in calls][-1] == "chat.stopStream"
    assert {c.method for c in calls[1:-1]} == {"chat.appendStream"}
    assert all(c.ok for c in calls)
    # the helper sends markdown_text chunks rather than markdown_text
    assert calls[1].params["chunks"][0]["type"] == "markdown_text"
    final = fake.message(CHANNEL, streamer.ts)
    assert final.text == answer + "See the policy page."
    assert (final.stream_state, final.blocks) == ("stopped", [FEEDBACK_BLOCK])


async def test_streaming_can_be_refused_and_faults_apply_to_stream_methods(
    fake: FakeSlackAPI,
) -> None:
    question = fake.seed_message(CHANNEL, "help", user=ALICE)
    client = AsyncWebClient(
        base_url=fake.url,
        token="xoxb-dummy",
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=1),
            AsyncConnectionErrorRetryHandler(interval_calculator=FAST_RETRY),
        ],
    )
    fake.refuse_streaming()
    refused = client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT)
    assert await slack_error(refused) == "not_allowed_token_type"
    fake.refuse_streaming(None)

    fake.fail_next("chat.startStream", error="missing_scope")
    assert await slack_error(client.chat_startStream(channel=CHANNEL, thread_ts=question.ts)) == (
        "missing_scope"
    )
    assert len(fake.messages_in(CHANNEL, question.ts)) == 1

    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT))["ts"]
    fake.fail_next("chat.appendStream", status=429, retry_after=0)
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="one")
    fake.drop_connection_next("chat.appendStream")
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" two")
    assert [c.status for c in fake.calls_to("chat.appendStream")] == [429, 200, DROPPED, 200]
    assert fake.message(CHANNEL, ts).text == "one two"

    # an answer lost after Slack applied the call: a blind retry shows the words twice
    fake.drop_response_next("chat.appendStream")
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" three")
    assert fake.message(CHANNEL, ts).text == "one two three three"
    lost = fake.calls_to("chat.appendStream")[-2]
    assert lost.status == DROPPED and lost.response == {"ok": True, "channel": CHANNEL, "ts": ts}

    fake.delay("chat.stopStream", 0.05)
    started = time.monotonic()
    await client.chat_stopStream(channel=CHANNEL, ts=ts)
    assert time.monotonic() - started >= 0.05
    assert fake.message(CHANNEL, ts).stream_state == "stopped"


# ------------------------------------------------------------ feedback blocks


async def test_context_actions_blocks_are_checked_against_slacks_schema(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="answer", blocks=[FEEDBACK_BLOCK])
    assert posted["message"]["blocks"] == [FEEDBACK_BLOCK]

    def with_element(**changes: Any) -> list[dict[str, Any]]:
        element = {**FEEDBACK_BLOCK["elements"][0], **changes}
        return [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}] + [
            {**FEEDBACK_BLOCK, "elements": [element]}
        ]

    at = "json-pointer:/blocks/1/elements/0"
    cases = {
        f"missing required field: value [{at}/positive_button]": with_element(
            positive_button={"text": GOOD["text"]}
        ),
        f"must be a plain_text text object [{at}/negative_button/text/type]": with_element(
            negative_button={**BAD, "text": {"type": "mrkdwn", "text": "no"}}
        ),
        f"must be less than 76 characters [{at}/positive_button/text/text]": with_element(
            positive_button={**GOOD, "text": {"type": "plain_text", "text": "x" * 76}}
        ),
        f"unsupported field: style [{at}]": with_element(style="primary"),
        "missing required field: negative_button [json-pointer:/blocks/0/elements/0]": [
            {**FEEDBACK_BLOCK, "elements": [{"type": "feedback_buttons", "positive_button": GOOD}]}
        ],
        "unsupported type: button [json-pointer:/blocks/0/elements/0/type]": [
            {**FEEDBACK_BLOCK, "elements": PLAIN_FEEDBACK_BLOCK["elements"][:1]}
        ],
        "must have no more than 5 items [json-pointer:/blocks/0/elements]": [
            {
                "type": "context_actions",
                "elements": [
                    {**FEEDBACK_BLOCK["elements"][0], "action_id": f"f{i}"} for i in range(6)
                ],
            }
        ],
    }
    for message, blocks in cases.items():
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel=CHANNEL, text="answer", blocks=blocks)
        response = refused.value.response
        assert response["error"] == "invalid_blocks"
        assert response["errors"] == [message]
        assert response["response_metadata"]["messages"] == [f"[ERROR] {message}"]
    assert [m.ts for m in fake.messages_in(CHANNEL)] == [posted["ts"]]


async def test_a_workspace_without_context_actions_refuses_it_everywhere(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    fake.reject_block_type("context_actions")
    question = fake.seed_message(CHANNEL, "help", user=ALICE)
    post = client.chat_postMessage(
        channel=CHANNEL, text="answer", thread_ts=question.ts, blocks=[FEEDBACK_BLOCK]
    )
    assert await slack_error(post) == "invalid_blocks"
    posted = await client.chat_postMessage(
        channel=CHANNEL, text="answer", thread_ts=question.ts, blocks=[PLAIN_FEEDBACK_BLOCK]
    )
    update = client.chat_update(
        channel=CHANNEL, ts=posted["ts"], text="answer", blocks=[FEEDBACK_BLOCK]
    )
    assert await slack_error(update) == "invalid_blocks"

    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=question.ts, **RECIPIENT))["ts"]
    stop = client.chat_stopStream(
        channel=CHANNEL, ts=ts, markdown_text="Hi.", blocks=[FEEDBACK_BLOCK]
    )
    assert await slack_error(stop) == "invalid_blocks"
    assert fake.calls_to("chat.stopStream")[0].response == {
        "ok": False,
        "error": "invalid_blocks",
        "errors": ["unsupported type: context_actions [json-pointer:/blocks/0/type]"],
        "response_metadata": {
            "messages": ["[ERROR] unsupported type: context_actions [json-pointer:/blocks/0/type]"]
        },
    }
    assert fake.message(CHANNEL, ts).stream_state == "streaming"  # the refused stop changed nothing
    await client.chat_stopStream(
        channel=CHANNEL, ts=ts, markdown_text="Hi.", blocks=[PLAIN_FEEDBACK_BLOCK]
    )
    assert fake.message(CHANNEL, ts).blocks == [PLAIN_FEEDBACK_BLOCK]


async def test_feedback_presses_built_from_the_message_reach_bolt_signed(
    fake: FakeSlackAPI, client: AsyncWebClient
) -> None:
    question = fake.seed_message(CHANNEL, "help", user=ALICE)
    native = await client.chat_postMessage(
        channel=CHANNEL, text="answer", thread_ts=question.ts, blocks=[FEEDBACK_BLOCK]
    )
    plain = await client.chat_postMessage(
        channel=CHANNEL, text="answer", thread_ts=question.ts, blocks=[PLAIN_FEEDBACK_BLOCK]
    )
    app = AsyncApp(client=client, signing_secret=sp.SIGNING_SECRET)
    pressed: list[tuple[str, str, str, str, str]] = []

    @app.action("reply_feedback")
    async def on_feedback(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        message = body["message"]
        who = body["user"]["id"]
        pressed.append((action["type"], action["value"], who, message["ts"], message["thread_ts"]))

    bad = fake.press_payload(CHANNEL, native["ts"], ALICE, action_id="reply_feedback", value="bad")
    [action] = bad["actions"]
    assert (action["type"], action["block_id"], action["text"]["text"]) == (
        "feedback_buttons",
        "feedback",
        "👎",
    )
    assert bad["container"]["thread_ts"] == question.ts
    assert bad["message"]["blocks"] == [FEEDBACK_BLOCK]
    assert (bad["channel"]["id"], bad["team"]["id"]) == (CHANNEL, "T0TEAM")
    good = fake.press_payload(CHANNEL, plain["ts"], ALICE, action_id="reply_feedback", value="good")
    assert good["actions"][0]["type"] == "button"

    for payload in (bad, good):
        body, headers = sp.encode_interaction_request(payload)
        assert (await app.async_dispatch(bolt_request(body, headers))).status == 200
    assert pressed == [
        ("feedback_buttons", "bad", ALICE, native["ts"], question.ts),
        ("button", "good", ALICE, plain["ts"], question.ts),
    ]
    with pytest.raises(AssertionError, match="shows no button reply_feedback='meh'"):
        fake.press_payload(CHANNEL, native["ts"], ALICE, action_id="reply_feedback", value="meh")


async def test_user_presses_delivers_the_feedback_over_socket_mode(fake: FakeSlackAPI) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    web = AsyncWebClient(base_url=fake.url, token="xoxb-dummy")
    answer = await web.chat_postMessage(channel=CHANNEL, text="answer", blocks=[FEEDBACK_BLOCK])
    app = AsyncApp(client=web, signing_secret=sp.SIGNING_SECRET)
    values: list[str] = []

    @app.action("reply_feedback")
    async def on_feedback(ack: Any, action: dict[str, Any]) -> None:
        await ack()
        values.append(action["value"])

    handler = AsyncSocketModeHandler(app, "xapp-1-A0APP-1-secret", web_client=web)
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        envelope = await fake.user_presses(
            CHANNEL, answer["ts"], ALICE, action_id="reply_feedback", value="good", timeout=2
        )
        await fake.wait_for_ack(envelope, timeout=2)
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
    assert values == ["good"]


def test_feedback_block_actions_builder_is_signed_like_slack() -> None:
    payload = sp.feedback_block_actions(
        "reply_feedback",
        "bad",
        user_id=ALICE,
        channel=CHANNEL,
        message_ts="1700000000.000300",
        thread_ts="1700000000.000100",
        positive=False,
    )
    [action] = payload["actions"]
    assert (action["type"], action["action_id"], action["value"], action["text"]["text"]) == (
        "feedback_buttons",
        "reply_feedback",
        "bad",
        "👎",
    )
    assert payload["message"]["thread_ts"] == payload["container"]["thread_ts"]
    plain = sp.feedback_block_actions(
        "reply_feedback", "good", user_id=ALICE, channel=CHANNEL, message_ts="1.2", element="button"
    )
    assert plain["actions"][0]["type"] == "button"
    body, headers = sp.encode_interaction_request(payload)
    assert SignatureVerifier(sp.SIGNING_SECRET).is_valid_request(body, headers)
