"""Fixtures for the Claude tests: the fake Anthropic API on loopback and runtimes whose real SDK talks to it."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.clock import SystemClock
from bot.config import Config, load_config
from bot.llm.anthropic import AnthropicLLM
from bot.llm.breaker import CircuitBreaker
from bot.llm.fallback import FallbackLLM
from bot.llm.recording import RecordingLLM
from bot.local_chat import LocalChat
from bot.metrics import Metrics
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from storage.engine import Database, open_database, upgrade
from storage.models import LLMCall
from tests.conftest import ANTHROPIC_KEY
from tests.fakes.anthropic_api import FakeAnthropicAPI

DUMMY_KEY = ANTHROPIC_KEY
# Short budgets so failure paths finish fast; the fake's retry-after hints are 10 ms.
FAST_LLM = """
[slack]
stream_interval_s = 0.2
[llm]
timeout_s = 5
max_retries = 2
deadline_s = 20
max_retry_wait_s = 2
"""

BuildRuntime = Callable[..., Awaitable[Runtime]]

def config_from(toml: str = "") -> Config:
    """The built-in config (routes, rules) with fast LLM budgets, then the keys in `toml` on top."""
    data = load_config().model_dump()
    for layer in (FAST_LLM, toml):
        for section, values in tomllib.loads(layer).items():
            data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return Config.model_validate(data)


@pytest.fixture
def online_settings(sqlite_url: str, fake_anthropic: FakeAnthropicAPI) -> Settings:
    """Settings as a user sets them: a (dummy) key and the base URL, here pointing at the fake."""
    return Settings(database_url=sqlite_url, anthropic_api_key=DUMMY_KEY, anthropic_base_url=fake_anthropic.url)


@pytest.fixture
async def make_runtime(online_settings: Settings, tmp_path: Path) -> AsyncIterator[BuildRuntime]:
    """Builds the whole bot on Claude (the fake) with `config_from(toml)`; closes what it built."""
    built: list[Runtime] = []

    async def build(toml: str = "", **kwargs: object) -> Runtime:
        runtime = await build_runtime(online_settings, config_from(toml), chat=LocalChat(),
                                      instance_id=f"llm-test-{len(built)}", **kwargs)  # type: ignore[arg-type]
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        await runtime.close()


class ClaudeStack:
    """The LLM stack the runtime builds (fallback -> breaker -> recording -> AnthropicLLM), without the rest."""

    def __init__(self, llm: FallbackLLM, db: Database) -> None:
        self.llm = llm
        self.db = db

    async def calls(self) -> list[LLMCall]:
        async with self.db.sessions() as session:
            return list((await session.execute(select(LLMCall).order_by(LLMCall.id))).scalars().all())


@pytest.fixture
async def claude(online_settings: Settings) -> AsyncIterator[ClaudeStack]:
    await upgrade(online_settings.database_url)
    db = open_database(online_settings.database_url)
    config = config_from()
    clock, metrics = SystemClock(), Metrics()
    recorded = RecordingLLM(AnthropicLLM(online_settings, config, clock=clock), db, clock, metrics)
    llm = FallbackLLM(CircuitBreaker(recorded, config.llm, clock, metrics), config.llm, clock)
    try:
        yield ClaudeStack(llm, db)
    finally:
        await llm.close()
        await db.dispose()
