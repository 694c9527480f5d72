"""Shared fixtures: a clean environment, settings on a real SQLite file, PostgreSQL schemas, runtimes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.config import Config, load_config, parse_config
from bot.local_chat import LocalChat
from bot.runtime import Runtime, build_runtime
from bot.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import FakeSlackAPI

PG_URL = os.environ.get("SUPPORTBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ENV_PREFIXES = ("SLACK_", "ANTHROPIC_", "DATABASE_URL", "SUPPORTBOT_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's real tokens or database."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) and name != "SUPPORTBOT_TEST_PG_URL":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}"


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import asyncpg  # noqa: F401  (checked here so the reason is clear)

    async def probe() -> None:
        import asyncpg as pg

        connection = await pg.connect(PG_URL.replace("postgresql+asyncpg", "postgresql"), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_PROBE: list[str | None] = []


def require_postgres() -> None:
    if not _PG_PROBE:
        _PG_PROBE.append(_pg_available())
    reason = _PG_PROBE[0]
    if reason is not None:
        message = f"PostgreSQL at {PG_URL} is not reachable ({reason})"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI must run the PostgreSQL tests")
        pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A private schema in the real PostgreSQL, dropped afterwards (runs in parallel with other suites)."""
    require_postgres()
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    raw = PG_URL.replace("postgresql+asyncpg", "postgresql")

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(raw, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        asyncio.run(execute(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on a real SQLite file and once on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def config() -> Config:
    return load_config()


def config_with(extra_toml: str) -> Config:
    """The built-in routes plus a few settings, as a user's file would give them."""
    return parse_config(extra_toml, source=None)


@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runtime(settings: Settings, config: Config) -> AsyncIterator[Runtime]:
    """The whole bot on the offline provider, a local chat transport and a real SQLite file."""
    built = await build_runtime(settings, config, chat=LocalChat(), instance_id="test-1")
    try:
        yield built
    finally:
        await built.close()


# --- the fakes of Slack and Anthropic, on 127.0.0.1 ---------------------------------------------------------

ANTHROPIC_KEY = "sk-ant-dummy"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
ONCALL_GROUP = {"S0ONCALL": ["U0GROUP1", "U0GROUP2"]}


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlackAPI]:
    """The Slack Web API and Socket Mode, played on 127.0.0.1 (with an on-call user group)."""
    async with FakeSlackAPI(usergroups=ONCALL_GROUP) as fake:
        yield fake


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropicAPI]:
    """The Anthropic Messages and Batches APIs on 127.0.0.1, speaking the real wire format."""
    async with FakeAnthropicAPI(api_key=ANTHROPIC_KEY) as api:
        yield api


def slack_settings(fake: FakeSlackAPI, database_url: str, *, socket_mode: bool = False) -> Settings:
    """Settings as an operator gives them for Slack (HTTP mode, or Socket Mode), pointed at the fake."""
    return Settings(
        database_url=database_url, slack_bot_token=BOT_TOKEN,  # type: ignore[arg-type]
        slack_signing_secret=sp.SIGNING_SECRET,  # type: ignore[arg-type]
        slack_app_token=APP_TOKEN if socket_mode else None,  # type: ignore[arg-type]
        slack_api_url=fake.url,
    )
