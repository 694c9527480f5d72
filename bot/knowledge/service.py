"""The knowledge base the CLI and the pipeline use: add, sync and remove sources, index texts, search."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from bot.clock import Clock, SystemClock
from bot.config import SOURCE_NAME, Config
from bot.knowledge.chunk import PassageDraft, passages
from bot.knowledge.embed import StaticEmbedder, load_embedder, to_bytes
from bot.knowledge.errors import DocumentError, SourceError
from bot.knowledge.fetch import Failed, Fetched, is_url, normalize_location, read_locations
from bot.knowledge.parse import DocumentKind, decode, parse
from bot.knowledge.search import KEPT, Method, Retriever, Scope, SearchResult, scope_for
from bot.knowledge.text import index_text
from storage import knowledge as repo
from storage.engine import Database

DIRECT_KIND = "direct"


@dataclass(frozen=True)
class DirectDocument:
    """A text given directly (an approved answer): cited by `link`, searched like any page."""

    link: str
    title: str
    text: str


@dataclass
class SyncReport:
    """What one sync did; `errors` name each document that was skipped and why."""

    source: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    passages: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def as_json(self) -> dict[str, object]:
        return {"source": self.source, "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "removed": self.removed, "passages": self.passages, "errors": self.errors,
                "seconds": round(self.seconds, 3)}


Progress = Callable[[str], None]
# Documents parsed and embedded ahead of the one being written.
PREPARED_AHEAD = 2


@dataclass(frozen=True)
class _Prepared:
    document: Fetched
    content_hash: str
    title: str
    inputs: list[repo.PassageInput]
    existing: repo.StoredDocument | None


def _kind_of_locations(locations: Sequence[str]) -> str:
    urls = sum(is_url(location) for location in locations)
    return "web" if urls == len(locations) else "files" if urls == 0 else "mixed"


class KnowledgeBase:
    """Sources, documents and search over the bot's own database; route scopes come from the config."""

    def __init__(self, db: Database, config: Config, *, method: Method = KEPT,
                 embedder: StaticEmbedder | None = None, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config
        self._embedder = embedder
        clock = clock or SystemClock()
        self.retriever = Retriever(db, method=method, embedder=embedder, clock=clock)
        self._now = clock.now

    @property
    def embedder(self) -> StaticEmbedder:
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    # -- sources

    async def add(self, locations: Sequence[str], *, name: str | None = None, routes: Sequence[str] = (),
                  progress: Progress | None = None) -> SyncReport:
        """Create (or extend) a source with `locations` and index it; adding the same docs again changes nothing."""
        if not locations:
            raise SourceError("give at least one file, folder or URL")
        normalized = [normalize_location(location) for location in locations]
        for location in normalized:
            if not is_url(location) and not await asyncio.to_thread(_exists, location):
                raise SourceError(f"{location}: no such file or folder")
        name = name or _default_name(normalized[0])
        if not SOURCE_NAME.match(name):
            raise SourceError(f"{name!r} is not a valid source name (letters, digits, '.', '_' or '-'; give --name)")
        unknown = [route for route in routes if route not in self.config.routes]
        if unknown:
            raise SourceError(f"unknown route(s) {', '.join(unknown)} (defined: {', '.join(self.config.routes)})")
        async with self.db.sessions.begin() as session:
            source = await repo.get_source(session, name)
            if source is None:
                await repo.create_source(session, name=name, kind=_kind_of_locations(normalized),
                                         locations=normalized, routes=list(routes), now=self._now())
            elif source.kind == DIRECT_KIND:
                raise SourceError(f"source {name!r} holds texts given directly; choose another --name")
            else:
                merged = list(dict.fromkeys([*source.locations, *normalized]))
                source.locations = merged
                source.kind = _kind_of_locations(merged)
                if routes:
                    source.routes = list(dict.fromkeys([*source.routes, *routes]))
        return await self.sync_source(name, progress=progress)

    async def sync(self, name: str | None = None, *, progress: Progress | None = None) -> list[SyncReport]:
        """Re-index one source, or every source fetched from files or the web."""
        if name is not None:
            return [await self.sync_source(name, progress=progress)]
        async with self.db.sessions() as session:
            sources = [s for s in await repo.list_sources(session) if s.kind != DIRECT_KIND]
        return [await self.sync_source(s.name, progress=progress) for s in sources]

    async def sync_source(self, name: str, *, progress: Progress | None = None) -> SyncReport:
        started = asyncio.get_running_loop().time()
        async with self.db.sessions() as session:
            source = await repo.get_source(session, name)
            if source is None:
                raise SourceError(f"no knowledge source named {name!r} (see `supportbot kb list`)")
            if source.kind == DIRECT_KIND:
                raise SourceError(f"source {name!r} holds texts given directly: there is nothing to fetch")
            source_id, locations = source.id, list(source.locations)
            stored = await repo.documents_of(session, source_id)
        report = SyncReport(source=name)
        seen: set[str] = set()

        async def fetched() -> AsyncIterator[Fetched]:
            async for result in read_locations(locations):
                seen.add(result.location)
                if isinstance(result, Failed):
                    report.errors.append({"location": result.location, "error": result.reason})
                else:
                    yield result

        await self._index_all(source_id, fetched(), stored, report, progress)
        gone = [document.id for location, document in stored.items() if location not in seen]
        async with self.db.sessions.begin() as session:
            await repo.delete_documents(session, gone)
            report.removed = len(gone)
            await repo.finish_sync(session, source_id, changed=report.changed, errors=report.errors, now=self._now())
        self.retriever.recheck()
        report.seconds = asyncio.get_running_loop().time() - started
        return report

    async def _index_all(self, source_id: int, documents: AsyncIterator[Fetched],
                         stored: dict[str, repo.StoredDocument], report: SyncReport,
                         progress: Progress | None = None) -> None:
        """Index new and changed documents: the next one is parsed and embedded (in a worker thread) while
        the last one is written, so the two cores both work."""
        ready: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=PREPARED_AHEAD)

        async def prepare() -> None:
            try:
                async for document in documents:
                    content_hash = hashlib.sha256(document.data).hexdigest()
                    existing = stored.get(document.location)
                    if existing is not None and existing.content_hash == content_hash:
                        report.unchanged += 1
                        continue
                    try:
                        title, inputs = await asyncio.to_thread(self._prepare, document.location, document.data,
                                                                document.kind, document.charset)
                    except DocumentError as exc:
                        report.errors.append({"location": exc.location, "error": exc.reason})
                        continue
                    await ready.put(_Prepared(document, content_hash, title, inputs, existing))
            finally:
                await ready.put(None)

        producer = asyncio.create_task(prepare())
        try:
            while (item := await ready.get()) is not None:
                async with self.db.sessions.begin() as session:
                    await repo.save_document(session, source_id=source_id, location=item.document.location,
                                             title=item.title, content_hash=item.content_hash,
                                             size=len(item.document.data), passages=item.inputs, now=self._now(),
                                             existing=item.existing)
                report.passages += len(item.inputs)
                if item.existing is None:
                    report.added += 1
                else:
                    report.updated += 1
                if progress is not None:
                    progress(item.document.location)
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        producer.result()

    def _prepare(self, location: str, data: bytes, kind: DocumentKind,
                 charset: str | None) -> tuple[str, list[repo.PassageInput]]:
        """Parse, cut and embed one document (CPU work, run off the event loop)."""
        if not data.strip():
            raise DocumentError(location, "empty document")
        document = parse(location, decode(location, data, charset), kind)
        drafts = passages(document)
        if not drafts:
            raise DocumentError(location, "no text found in it")
        return document.title, [self._passage_input(draft) for draft in drafts]

    def _passage_input(self, draft: PassageDraft) -> repo.PassageInput:
        vector = self.embedder.embed(f"{draft.title}. {draft.heading}. {draft.text}")
        return repo.PassageInput(position=draft.position, title=draft.title, heading=draft.heading, text=draft.text,
                                 title_terms=index_text(draft.title), heading_terms=index_text(draft.heading),
                                 body_terms=index_text(draft.text),
                                 embedding=to_bytes(vector) if vector is not None else None)

    async def remove(self, name: str) -> None:
        async with self.db.sessions.begin() as session:
            source = await repo.get_source(session, name)
            if source is None:
                raise SourceError(f"no knowledge source named {name!r} (see `supportbot kb list`)")
            await repo.delete_source(session, source)
        self.retriever.recheck()

    async def sources(self) -> list[repo.SourceSummary]:
        async with self.db.sessions() as session:
            return await repo.list_sources(session)

    # -- texts given directly

    async def index_documents(self, name: str, documents: Sequence[DirectDocument],
                              routes: Sequence[str] = ()) -> SyncReport:
        """Add or replace texts in source `name` (made on first use), each cited by its link."""
        if not SOURCE_NAME.match(name):
            raise SourceError(f"{name!r} is not a valid source name")
        report = SyncReport(source=name)
        async with self.db.sessions.begin() as session:
            source = await repo.get_source(session, name)
            if source is None:
                source = await repo.create_source(session, name=name, kind=DIRECT_KIND, locations=[],
                                                  routes=list(routes), now=self._now())
            elif source.kind != DIRECT_KIND:
                raise SourceError(f"source {name!r} is fetched from files or the web; texts cannot be added to it")
            source_id = source.id
            stored = await repo.documents_of(session, source_id)
        async def given() -> AsyncIterator[Fetched]:
            for document in documents:
                body = f"# {document.title}\n\n{document.text}".encode()
                yield Fetched(location=document.link, data=body, kind="markdown")

        await self._index_all(source_id, given(), stored, report)
        async with self.db.sessions.begin() as session:
            await repo.finish_sync(session, source_id, changed=report.changed, errors=report.errors, now=self._now())
        self.retriever.recheck()
        return report

    async def remove_documents(self, name: str, links: Sequence[str]) -> int:
        """Drop texts (by link) from a direct source; returns how many were there."""
        async with self.db.sessions.begin() as session:
            source = await repo.get_source(session, name)
            if source is None:
                return 0
            stored = await repo.documents_of(session, source.id)
            gone = [stored[link].id for link in links if link in stored]
            await repo.delete_documents(session, gone)
            await repo.finish_sync(session, source.id, changed=bool(gone), errors=list(source.errors),
                                   now=self._now())
        self.retriever.recheck()
        return len(gone)

    # -- search

    def scope(self, route: str | None = None, sources: Sequence[str] | None = None) -> Scope:
        known = self.config.routes.get(route) if route is not None else None
        return scope_for(route, known.knowledge if known is not None else None, sources)

    async def has_sources(self, route: str | None = None) -> bool:
        """Whether a search in this route's scope (or anywhere) can find anything at all."""
        async with self.db.sessions() as session:
            state = await repo.index_state(session)
        chosen = self.scope(route)(state)
        return bool(state) if chosen is None else bool(chosen)

    async def search(self, question: str, *, route: str | None = None, sources: Sequence[str] | None = None,
                     limit: int | None = None, min_score: float | None = None) -> SearchResult:
        """Passages for `question` in the route's scope (and among the named sources), or an abstention."""
        settings = self.config.knowledge
        configured = None if settings.min_score == "auto" else settings.min_score
        return await self.retriever.search(question, scope=self.scope(route, sources), limit=limit or settings.top_k,
                                           min_score=configured if min_score is None else min_score)


def _exists(location: str) -> bool:
    return Path(location).exists()


def _default_name(location: str) -> str:
    """A source name from its first location: the host of a URL, the file or folder name of a path."""
    raw = (urlsplit(location).hostname or "web") if is_url(location) else (PurePosixPath(location).stem or "docs")
    cleaned = "".join(char if char.isalnum() or char in "._-" else "-" for char in raw).strip("-.")
    return (cleaned or "docs")[:64]
