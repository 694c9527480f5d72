"""Persona handlers, one per route, and their registry."""

from handlers.persona import PersonaHandler
from handlers.registry import HandlerRegistry

__all__ = ["HandlerRegistry", "PersonaHandler"]
