"""Dashboard fixtures: a runtime on a real SQLite file filled through the real pipeline, and HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import Config
from bot.domain import InboundMessage
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from bot.web.server import build_web_app

TOKEN = "s3cret-dashboard-token-0123456789"

# What the filled database holds: (channel, user, text), each a new thread, in this order.
CONVERSATIONS = [
    ("CSUPPORT", "UALICE", "I was charged twice this month for the same invoice"),
    ("CSUPPORT", "UBOB", "the app crashes every time I upload a file"),
    ("CSALES", "UCAROL", "how much is the enterprise plan for 40 seats?"),
    ("CSUPPORT", "UALICE", "This is unacceptable, I want to speak to a human now"),
    ("CSUPPORT", "UDAVE", 'hello <script>alert("owned")</script><img src=x onerror=alert(1)> where is my order?'),
    ("CSALES", "UBOB", "can I get a refund for the annual plan"),
]


@dataclass
class Filled:
    runtime: Runtime
    # thread ts of each entry of CONVERSATIONS
    threads: list[str]


async def fill(runtime: Runtime, conversations: list[tuple[str, str, str]] = CONVERSATIONS) -> list[str]:
    """Send each message through the real pipeline, as Slack would deliver it."""
    chat = runtime.chat
    assert isinstance(chat, LocalChat)
    threads = []
    for channel, user, text in conversations:
        ts = chat.next_ts()
        await runtime.pipeline.handle(InboundMessage(
            source="slack", team="T0TEAM", channel=channel, user=user, text=text, ts=ts, event_id=f"Ev{ts}"))
        threads.append(ts)
    return threads


@pytest.fixture
async def filled(runtime: Runtime) -> Filled:
    return Filled(runtime, await fill(runtime))


ClientFactory = Callable[..., Awaitable[TestClient]]


def local_playground(runtime: Runtime) -> LocalChat | None:
    """The runtime's chat when it is local mode's, where `supportbot serve` mounts the playground."""
    chat = runtime.chat
    return chat if isinstance(chat, LocalChat) and chat.capabilities.local_page_channel else None


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Start the real aiohttp app of a runtime on 127.0.0.1 and return a client for it."""
    clients: list[TestClient] = []

    async def start(runtime: Runtime) -> TestClient:
        client = TestClient(TestServer(build_web_app(runtime, playground=local_playground(runtime)), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(filled: Filled, make_client: ClientFactory) -> TestClient:
    return await make_client(filled.runtime)


@pytest.fixture
async def token_runtime(tmp_path: Path, config: Config) -> AsyncIterator[Runtime]:
    """A runtime whose dashboard needs SUPPORTBOT_DASHBOARD_TOKEN."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'token.db'}",
                        supportbot_dashboard_token=TOKEN)
    built = await build_runtime(settings, config, chat=LocalChat(), instance_id="token-1")
    try:
        await fill(built, CONVERSATIONS[:2])
        yield built
    finally:
        await built.close()


def csrf_token(html: str) -> str:
    """The CSRF token a page carries (meta tag), as a browser script would read it."""
    marker = '<meta name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]
