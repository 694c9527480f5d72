"""A real `supportbot serve` killed (-9) or stopped (SIGTERM) mid-message: nothing lost, nothing answered twice."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI, SlackMessage
from tests.reliability.conftest import (
    CUSTOMER,
    SUPPORT,
    ServeProcess,
    SpawnServe,
    bot_posts_per_thread,
    inbox_rows,
    seed_questions,
    send_event,
    serve_env,
    wait_for_inbox,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

# Routed by the local classifier (no routing call), answered with one model call, not voted on.
QUESTION = "the app crashes every time I upload a file"


async def ask(fake_slack: FakeSlackAPI, server: ServeProcess, text: str = QUESTION) -> SlackMessage:
    """A customer posts in the support channel and Slack delivers the event to `server` (acked 200)."""
    [question] = seed_questions(fake_slack, [text])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        status = await send_event(http, server.url, sp.message_event(SUPPORT, CUSTOMER, text, question.ts),
                                  event_id=f"Ev{question.ts.replace('.', '')}")
    assert status == 200
    return question


def replies_in(fake_slack: FakeSlackAPI, question: SlackMessage) -> int:
    return bot_posts_per_thread(fake_slack).get(question.ts, 0)


@pytest.mark.parametrize("restart_as", ["same-id", "other-id"])
async def test_a_message_in_flight_when_the_process_is_killed_is_answered_once_after_a_restart(
    restart_as: str, fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str,
    tmp_path: Path, spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    lease_s = 4.0

    def env(instance: str) -> dict[str, str]:
        return serve_env(database_url=sqlite_url, config_path=config, instance_id=instance, slack=fake_slack,
                         anthropic=fake_anthropic, lease_s=lease_s)

    replicas: dict[str, ServeProcess] = {}
    fake_anthropic.latency_s = 60.0  # the model is slow: the message is mid-way when the process dies
    first = await spawn_serve("bot-a", env("bot-a"))
    question = await ask(fake_slack, first)
    await fake_anthropic.wait_for_requests(1, timeout=10)
    [row] = await inbox_rows(sqlite_url)
    assert (row.status, row.lease_owner, row.attempts) == ("processing", "bot-a", 1)

    first.kill()
    assert await first.wait_exit() == -signal.SIGKILL
    [row] = await inbox_rows(sqlite_url)
    lease_at_kill = row.lease_expires_at
    assert lease_at_kill is not None
    fake_anthropic.latency_s = 0.0
    assert replies_in(fake_slack, question) == 0

    if restart_as == "same-id":
        # The same replica comes back (a supervisor restart): it takes its own unfinished work back at once.
        await first.start()
        await first.wait_healthy()
    else:
        # Another replica: it must wait for the dead one's lease to lapse before it may start the message.
        replicas["bot-b"] = await spawn_serve("bot-b", env("bot-b"))
    await wait_until(lambda: replies_in(fake_slack, question) >= 1, 20, "the reply after the restart")
    [row] = await wait_for_inbox(sqlite_url, lambda rows: rows[0].status == "done", 10, "the message finished")

    await (first if restart_as == "same-id" else replicas["bot-b"]).wait_for_passes(2)
    assert replies_in(fake_slack, question) == 1
    assert row.attempts == 2 and row.outcome == "replied" and row.reply_ts is not None
    if restart_as == "same-id":
        assert row.lease_owner == "bot-a"
        assert "taking_back_unfinished_work" in first.output().split("--- run 2")[1]
    else:
        # Started again only once the dead replica's lease (renewed every lease/3 until the kill) had run out.
        assert row.lease_owner == "bot-b"
        assert row.finished_at is not None and row.finished_at > lease_at_kill


async def test_a_kill_after_the_reply_was_posted_but_before_it_was_recorded_does_not_post_it_again(
    fake_slack: FakeSlackAPI, sqlite_url: str, tmp_path: Path, spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    env = serve_env(database_url=sqlite_url, config_path=config, instance_id="bot-a", slack=fake_slack)
    server = await spawn_serve("bot-a", env)
    # Slack stores the reply, but its answer takes 2 s: the process dies before it hears back.
    fake_slack.delay("chat.postMessage", 2.0)
    question = await ask(fake_slack, server)
    await wait_for_inbox(sqlite_url, lambda rows: rows[0].reply_intent is not None, 10, "the reply intent")
    await fake_slack.wait_for("chat.postMessage")  # the post reached Slack; its answer is still on its way
    server.kill()
    await server.wait_exit()
    await wait_until(lambda: replies_in(fake_slack, question) == 1, 5, "Slack storing the reply")
    fake_slack.clear_faults()

    await server.start()
    await server.wait_healthy()
    [row] = await wait_for_inbox(sqlite_url, lambda rows: rows[0].status == "done", 15, "the message finished")
    assert replies_in(fake_slack, question) == 1
    posted = [m for m in fake_slack.messages_in(SUPPORT, question.ts) if m.ts != question.ts]
    assert [m.ts for m in posted] == [row.reply_ts]
    # The restart looked in the thread first (the reply carries its message's key) and found it.
    assert fake_slack.successful_calls_to("conversations.replies")


async def test_sigterm_drains_the_message_in_flight_and_says_draining_meanwhile(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, tmp_path: Path,
    spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    env = serve_env(database_url=sqlite_url, config_path=config, instance_id="bot-a", slack=fake_slack,
                    anthropic=fake_anthropic, extra={"SUPPORTBOT_DRAIN_TIMEOUT_S": "15"})
    server = await spawn_serve("bot-a", env)
    fake_anthropic.latency_s = 1.5  # inside the drain bound and the client's timeout
    question = await ask(fake_slack, server)
    await fake_anthropic.wait_for_requests(1, timeout=10)

    server.signal(signal.SIGTERM)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "draining"
        # An event that still arrives is acked and kept in the inbox for the next start, not refused.
        late = await ask(fake_slack, server, "how do I reset my password, the link expired")

    assert await server.wait_exit(timeout_s=15 + 5) == 0
    assert replies_in(fake_slack, question) == 1
    assert replies_in(fake_slack, late) == 0
    rows = {row.payload["ts"]: row for row in await inbox_rows(sqlite_url)}
    assert (rows[question.ts].status, rows[question.ts].outcome) == ("done", "replied")
    assert rows[late.ts].status == "pending"

    fake_anthropic.latency_s = 0.0
    await server.start()
    await server.wait_healthy()
    await wait_until(lambda: replies_in(fake_slack, late) == 1, 15, "the late message answered after the restart")
    assert replies_in(fake_slack, question) == 1


async def test_sigterm_with_work_longer_than_the_drain_bound_exits_in_time_and_loses_nothing(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, tmp_path: Path,
    spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    env = serve_env(database_url=sqlite_url, config_path=config, instance_id="bot-a", slack=fake_slack,
                    anthropic=fake_anthropic, extra={"SUPPORTBOT_DRAIN_TIMEOUT_S": "1"})
    server = await spawn_serve("bot-a", env)
    fake_anthropic.latency_s = 60.0
    question = await ask(fake_slack, server)
    await fake_anthropic.wait_for_requests(1, timeout=10)

    server.signal(signal.SIGTERM)
    # The drain gives up after its bound (1 s) and the process still exits cleanly, well before a supervisor
    # would have to kill it.
    assert await server.wait_exit(timeout_s=8) == 0
    assert replies_in(fake_slack, question) == 0
    [row] = await inbox_rows(sqlite_url)
    assert row.status in ("processing", "pending") and row.reply_ts is None

    fake_anthropic.latency_s = 0.0
    await server.start()
    await server.wait_healthy()
    await wait_until(lambda: replies_in(fake_slack, question) == 1, 15, "the reply after the restart")
    await server.wait_for_passes(2)
    assert replies_in(fake_slack, question) == 1


async def test_a_kill_mid_stream_ends_in_one_complete_answer_after_the_restart(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, tmp_path: Path,
    spawn_serve: SpawnServe,
) -> None:
    config = write_config(tmp_path)
    env = serve_env(database_url=sqlite_url, config_path=config, instance_id="bot-a", slack=fake_slack,
                    anthropic=fake_anthropic, lease_s=4.0)
    fake_anthropic.first_token_s, fake_anthropic.tokens_per_s = 0.1, 2.0  # half a minute to write it all
    server = await spawn_serve("bot-a", env)
    question = await ask(fake_slack, server)
    [row] = await wait_for_inbox(sqlite_url, lambda rows: rows[0].stream_ts is not None, 15, "the stream started")
    stream_ts = row.stream_ts
    assert stream_ts is not None
    server.kill()
    assert await server.wait_exit() == -signal.SIGKILL
    half = fake_slack.message(SUPPORT, stream_ts)
    assert half.stream_state == "streaming" and len(half.text) < 40  # the customer sees the first words only

    fake_anthropic.first_token_s, fake_anthropic.tokens_per_s = 0.0, None
    await server.start()
    await server.wait_healthy()
    [row] = await wait_for_inbox(sqlite_url, lambda rows: rows[0].status == "done", 20, "the message finished")

    # The streamed message now holds the complete answer; nothing else was posted in the thread.
    [answer] = [m for m in fake_slack.messages_in(SUPPORT, question.ts) if m.ts != question.ts]
    assert answer.ts == stream_ts == row.reply_ts and answer.stream_state != "streaming"
    shown = "\n".join([answer.text, *(b["text"]["text"] for b in answer.blocks or [] if b.get("type") == "section")])
    assert "the app crashes every time I upload a file" in shown and answer.text.count("[fake") == 1
    assert answer.metadata is not None and row.attempts == 2
