"""What an operator sees of a real `supportbot serve`: /healthz, /metrics that move with traffic, JSON logs
with the per-message keys and without the secrets it was given."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.reliability.conftest import (
    CUSTOMER,
    ESCALATING,
    SUPPORT,
    SpawnServe,
    bot_posts_per_thread,
    free_port,
    json_lines,
    seed_questions,
    serve_env,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

BOT_TOKEN = "xoxb-4242-reliability-bot-token-secret"
SIGNING_SECRET = "reliability-signing-secret-8c1f"
DASHBOARD_TOKEN = "dashboard-token-reliability-77e0"
BOUND_KEYS = ("team", "channel", "thread_ts", "event_id", "route")
DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def dockerfile_command(instruction: str, port: int) -> list[str]:
    """The exec-form command of the Dockerfile's CMD or HEALTHCHECK, on `port` instead of 3000."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.startswith(instruction + " ")]
    command = json.loads(line[line.index("["):])
    return [str(part).replace("3000", str(port)) for part in command]


async def run(argv: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and all((key, wanted) in found for key, wanted in labels.items()))


async def test_a_replica_behind_a_token_reports_health_metrics_and_clean_json_logs(
    fake_slack: FakeSlackAPI, fake_anthropic: FakeAnthropicAPI, sqlite_url: str, tmp_path: Path,
    spawn_serve: SpawnServe,
) -> None:
    env = serve_env(database_url=sqlite_url, config_path=write_config(tmp_path), instance_id="ops-1",
                    slack=fake_slack, anthropic=fake_anthropic, extra={
                        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                        "SUPPORTBOT_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
                        "SUPPORTBOT_LOG_FORMAT": "json", "SUPPORTBOT_LOG_LEVEL": "DEBUG"})
    # The Dockerfile's own command (every interface, only allowed with a dashboard token) on a free port,
    # with the venv's `supportbot` first on PATH as the image's is.
    port = free_port()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    server = await spawn_serve("ops-1", env, port=port, argv=dockerfile_command("CMD", port))
    healthcheck = dockerfile_command("HEALTHCHECK", port)
    healthcheck[0] = sys.executable
    assert await run(healthcheck, env) == 0
    secrets = (BOT_TOKEN, SIGNING_SECRET, DASHBOARD_TOKEN, fake_anthropic.api_key)

    async def send(text: str, ts: str, event_id: str, retry_num: int | None = None) -> int:
        body, headers = sp.encode_event_request(
            sp.event_callback(sp.message_event(SUPPORT, CUSTOMER, text, ts), event_id=event_id),
            signing_secret=SIGNING_SECRET, retry_num=retry_num)
        async with http.post(f"{server.url}/slack/events", data=body, headers=headers) as response:
            return response.status

    async def scrape() -> Samples:
        async with http.get(f"{server.url}/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            return parse_metrics(await response.text())

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{server.url}/healthz") as health:
            assert health.status == 200
            assert (await health.json())["mode"] == "http"
        async with http.get(f"{server.url}/api/decisions") as refused:
            assert refused.status == 401
        before = await scrape()

        texts = ["the app crashes every time I upload a file", "I was charged twice this month for one invoice",
                 ESCALATING]
        questions = seed_questions(fake_slack, texts)
        fake_anthropic.latency_s = 1.0
        statuses = [await send(q.text, q.ts, f"EvOps{n}") for n, q in enumerate(questions)]
        statuses.append(await send(questions[0].text, questions[0].ts, "EvOps0", retry_num=1))
        assert statuses == [200] * 4
        await fake_anthropic.wait_for_requests(1, timeout=10)
        during = await scrape()
        await wait_until(lambda: len(bot_posts_per_thread(fake_slack)) == len(texts), 30, "the answers")
        await wait_until(lambda: fake_anthropic.in_flight == 0, 10, "the model calls to end")
        await asyncio.sleep(0.3)
        after = await scrape()
        async with http.get(f"{server.url}/api/decisions",
                            headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"}) as allowed:
            assert allowed.status == 200 and (await allowed.json())["total"] == len(texts)

    # Messages by route and outcome, acks, duplicates, model latency and tokens, escalations, the queue.
    assert total(after, "supportbot_messages_total", route="technical", outcome="replied") == 1
    assert total(after, "supportbot_messages_total", route="billing", outcome="replied") == 1
    assert total(after, "supportbot_messages_total", route="escalate", outcome="escalated") == 1
    assert total(before, "supportbot_messages_total") == 0
    acks = "supportbot_ack_latency_seconds_count"
    assert total(after, acks) - total(before, acks) == 4
    assert total(after, "supportbot_duplicate_events_total") == 1
    assert total(after, "supportbot_llm_latency_seconds_count", purpose="reply") >= 1
    assert total(after, "supportbot_llm_latency_seconds_count", purpose="vote") >= 1
    assert total(after, "supportbot_llm_tokens_total", kind="input") > 0
    assert total(after, "supportbot_llm_tokens_total", kind="output") > 0
    assert total(before, "supportbot_escalations", state="paged") == 0
    assert total(after, "supportbot_escalations", state="paged") == 1
    assert total(during, "supportbot_queue_depth") >= 1 and total(during, "supportbot_in_flight") >= 1
    assert total(after, "supportbot_queue_depth") == 0 and total(after, "supportbot_in_flight") == 0

    server.signal(signal.SIGTERM)
    assert await run(healthcheck, env) == 1  # draining (or gone): Docker marks the container unhealthy
    assert await server.wait_exit() == 0
    output = server.output()
    for secret in secrets:
        assert secret not in output, f"a secret leaked into the logs: {secret[:8]}…"
    lines = json_lines(output)
    assert {"event", "level", "timestamp"} <= set(lines[0])
    handled = [line for line in lines if line["event"] == "message_handled"]
    assert len(handled) == len(texts)
    for line in handled:
        assert all(line.get(key) for key in BOUND_KEYS), line
    assert {line["thread_ts"] for line in handled} == {q.ts for q in questions}
    # Lines logged deeper down while a message is handled carry the same keys (bound once per message).
    escalation = [line for line in lines if line["event"] in ("escalation_opened", "escalation_paged")]
    assert len(escalation) == 2
    assert all(line.get("event_id") == "EvOps2" and line.get("thread_ts") == questions[2].ts for line in escalation)


async def test_the_docker_command_without_a_dashboard_token_is_refused_with_a_clear_message(
    sqlite_url: str, tmp_path: Path,
) -> None:
    env = serve_env(database_url=sqlite_url, config_path=write_config(tmp_path), instance_id="ops-2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = await asyncio.create_subprocess_exec(
        *dockerfile_command("CMD", free_port()), env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2
    assert "set SUPPORTBOT_DASHBOARD_TOKEN" in output.decode() and "Traceback" not in output.decode()
