"""The handler registry: one persona handler per configured route, keyed by route name."""

from __future__ import annotations

from bot.config import Config
from handlers.persona import PersonaHandler


class HandlerRegistry:
    def __init__(self, config: Config) -> None:
        self._fallback = config.fallback_route
        self._handlers = {
            name: PersonaHandler(
                name, route, bot_name=config.bot.name, history_budget_chars=config.bot.history_budget_chars
            )
            for name, route in config.routes.items()
        }

    def __getitem__(self, route: str) -> PersonaHandler:
        return self._handlers.get(route) or self._handlers[self._fallback]

    def __contains__(self, route: object) -> bool:
        return route in self._handlers

    def routes(self) -> list[str]:
        return list(self._handlers)
