"""Grounding an answer in the team's docs: the passages for a question, or an honest "the docs don't cover it".

The knowledge base (bot.knowledge: parsers, the embedding table) is imported only once a source exists, so
a bot with no docs starts and idles as it did before knowledge existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from sqlalchemy import exists, select

from bot.clock import Clock
from bot.config import Config
from bot.domain import Document, Grounding
from bot.vocabulary import TEAM_ANSWERS_SOURCE, CitationKind
from storage.engine import Database
from storage.models import KnowledgeSource

if TYPE_CHECKING:
    from bot.knowledge.service import KnowledgeBase

log = structlog.get_logger(__name__)

# Whether any source exists is looked up again after this long, so docs added with `supportbot kb add`
# while the bot runs are used without a restart.
SOURCES_RECHECK_S = 30.0
# A page is given to the model (and cited) when it scores at least this share of the best page's score.
RELATIVE_SCORE = 0.5


def citation_kind(source_name: str) -> CitationKind:
    """Passages of the approved answers are cited as answers the team gave before."""
    return "team_answer" if source_name == TEAM_ANSWERS_SOURCE else "docs"


class Knowledge:
    """The team's docs for the pipeline: `ground` a question of a route, or None when that route has none."""

    def __init__(self, db: Database, config: Config, clock: Clock) -> None:
        self._db = db
        self._config = config
        self._clock = clock
        self._base: KnowledgeBase | None = None
        self._sources_seen: tuple[float, bool] | None = None

    async def ground(self, question: str, route: str) -> Grounding | None:
        """Passages for `question` in the route's scope; an empty Grounding when the docs do not cover it;
        None when the route has no docs at all (the persona answers as it did before knowledge existed)."""
        if not await self._any_sources():
            return None
        base = self.knowledge_base()
        if not await base.has_sources(route):
            return None
        result = await base.search(question, route=route)
        if result.abstained:
            log.info("knowledge_missing", relevance=round(result.relevance, 3))
            return Grounding()
        best = max(hit.score for hit in result.hits)
        # Pages far behind the best one are other topics that share a few words: neither given nor cited.
        return Grounding(tuple(Document(title=hit.title, heading=hit.heading, source=hit.source, text=hit.text,
                                        score=hit.score, kind=citation_kind(hit.source_name))
                               for hit in result.hits if hit.score >= RELATIVE_SCORE * best))

    async def _any_sources(self) -> bool:
        now = self._clock.monotonic()
        if self._sources_seen is None or now - self._sources_seen[0] >= SOURCES_RECHECK_S:
            async with self._db.sessions() as session:
                found = bool(await session.scalar(select(exists().where(KnowledgeSource.id.is_not(None)))))
            self._sources_seen = (now, found)
        return self._sources_seen[1]

    def knowledge_base(self) -> KnowledgeBase:
        """The one knowledge base of this process (its in-memory index is shared by answers and the dashboard)."""
        if self._base is None:
            from bot.knowledge.service import KnowledgeBase

            self._base = KnowledgeBase(self._db, self._config, clock=self._clock)
        return self._base
