"""Errors of the knowledge base, each naming what to fix.

    KnowledgeError              (a SupportbotError)
     ├── DocumentError          one file or page that cannot be indexed: it is reported and skipped
     ├── SourceError            a source that does not exist, or a location that cannot be read at all
     └── ProposalError          a proposed answer that does not exist, or an edit that cannot be indexed
"""

from __future__ import annotations

from bot.errors import SupportbotError


class KnowledgeError(SupportbotError):
    """Base of the knowledge base's errors."""


class DocumentError(KnowledgeError):
    """A document that cannot be indexed (binary, too large, unreadable); `location` is its path or URL."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"{location}: {reason}")


class SourceError(KnowledgeError):
    """A knowledge source that is unknown or whose location cannot be read at all."""


class ProposalError(KnowledgeError):
    """A proposed answer that is unknown, or a reviewer's edit that cannot be indexed (empty)."""
