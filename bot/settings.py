"""Process settings read once from the environment and validated at start."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///supportbot.db"

RunMode = Literal["socket", "http", "local"]


class Settings(BaseSettings):
    """Everything the process takes from its environment; secrets stay wrapped in SecretStr."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None

    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None

    database_url: str = DEFAULT_DATABASE_URL
    supportbot_config: Path | None = None
    supportbot_dashboard_token: SecretStr | None = None
    # Reverse proxies whose X-Forwarded-For names the real client (addresses or networks, comma-separated);
    # the dashboard's token throttle counts per client behind them.
    supportbot_trusted_proxies: str = "127.0.0.1/8, ::1"

    supportbot_log_level: str = "INFO"
    supportbot_log_format: Literal["json", "console"] = Field(default="console")
    # Identity of this replica in leases and logs; defaults to host:pid at start. A stable id (bot-1)
    # lets a restarted replica take back at once what its previous run left unfinished.
    supportbot_instance_id: str | None = None
    # A worker holds a message for this long, renewed while it works; after a crash another replica
    # (or the restarted one) takes it over once the lease lapses.
    supportbot_lease_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    # How often unfinished inbox rows and due escalations are looked for.
    supportbot_recovery_interval_s: float = Field(default=15.0, ge=0.1, le=3600.0)
    # On SIGTERM, how long in-flight messages may still finish; keep it under the supervisor's grace
    # period (docker stop: 10 s unless --time/stop_grace_period says more). Work still running then is
    # left to its lease: the next start or another replica finishes it.
    supportbot_drain_timeout_s: float = Field(default=20.0, ge=0.0, le=3600.0)

    @field_validator("supportbot_trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        _networks(value)
        return value

    @property
    def trusted_proxies(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return _networks(self.supportbot_trusted_proxies)

    @model_validator(mode="after")
    def _slack_credentials_are_complete(self) -> Settings:
        has_bot = _present(self.slack_bot_token)
        if _present(self.slack_app_token) and not has_bot:
            raise ValueError("SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: Socket Mode needs both")
        if has_bot and not _present(self.slack_app_token) and not _present(self.slack_signing_secret):
            raise ValueError(
                "SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: HTTP mode needs both "
                "(or set SLACK_APP_TOKEN for Socket Mode)"
            )
        return self

    @property
    def run_mode(self) -> RunMode:
        if _present(self.slack_bot_token) and _present(self.slack_app_token):
            return "socket"
        if _present(self.slack_bot_token):
            return "http"
        return "local"

    @property
    def llm_online(self) -> bool:
        return _present(self.anthropic_api_key)


def _networks(value: str) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.0/8, ::1)") from None
    return tuple(networks)


def _present(secret: SecretStr | None) -> bool:
    return secret is not None and secret.get_secret_value().strip() != ""


def load_settings() -> Settings:
    return Settings()
