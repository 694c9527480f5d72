"""Knowledge-base repositories: sources, documents, passages and the full-text index on both engines.

The full-text index holds each passage's normalised terms (bot/knowledge/text.py) in three weighted
fields — page title, heading, body — so SQLite FTS5 and PostgreSQL see the same words: FTS5's
unicode61 tokenizer and PostgreSQL's 'simple' configuration only split them on spaces. Queries are built
here from terms of letters and digits only, so no user text ever reaches a query parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import KnowledgeDocument, KnowledgePassage, KnowledgeSource

# Objects the full-text index adds beside the models, which a models-vs-migrations comparison must leave alone:
# the FTS5 table, its vocabulary view and FTS5's shadow tables (SQLite); the tsvector column and its GIN index
# (PostgreSQL).
FULL_TEXT_OBJECTS = frozenset({
    "knowledge_fts", "knowledge_fts_vocab", "knowledge_fts_data", "knowledge_fts_idx", "knowledge_fts_content",
    "knowledge_fts_docsize", "knowledge_fts_config", "search_vector", "ix_knowledge_passages_search",
})
# Field weights of title, heading and body in FTS5's bm25(); PostgreSQL's ts_rank gets A, B and D.
FIELD_WEIGHTS = (4.0, 2.0, 1.0)
_PG_VECTOR = ("setweight(to_tsvector('simple', u.t), 'A') || setweight(to_tsvector('simple', u.h), 'B') "
              "|| to_tsvector('simple', u.b)")


@dataclass(frozen=True)
class PassageInput:
    """A passage to store: its text for people, its terms for the index, its vector for similarity."""

    position: int
    title: str
    heading: str
    text: str
    title_terms: str
    heading_terms: str
    body_terms: str
    embedding: bytes | None


@dataclass(frozen=True)
class StoredDocument:
    id: int
    location: str
    content_hash: str


@dataclass(frozen=True)
class SourceSummary:
    name: str
    kind: str
    locations: list[str]
    routes: list[str]
    documents: int
    passages: int
    created_at: datetime
    last_sync_at: datetime | None
    errors: list[dict[str, str]]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "locations": self.locations, "routes": self.routes,
                "documents": self.documents, "passages": self.passages,
                "created_at": self.created_at.isoformat(),
                "last_sync_at": self.last_sync_at.isoformat() if self.last_sync_at else None,
                "errors": self.errors}


def _pg_weights(weights: tuple[float, float, float]) -> str:
    """ts_rank's {D, C, B, A} array for (title, heading, body) weights: title A, heading B, body D."""
    title, heading, body = (w / max(weights) for w in weights)
    return "{" + ", ".join(f"{w:.4f}" for w in (body, body, heading, title)) + "}"


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# --------------------------------------------------------------------------- sources


async def get_source(session: AsyncSession, name: str) -> KnowledgeSource | None:
    return (await session.execute(select(KnowledgeSource).where(KnowledgeSource.name == name))).scalar_one_or_none()


async def create_source(session: AsyncSession, *, name: str, kind: str, locations: Sequence[str],
                        routes: Sequence[str], now: datetime) -> KnowledgeSource:
    source = KnowledgeSource(name=name, kind=kind, locations=list(locations), routes=list(routes), version=0,
                             errors=[], created_at=now)
    session.add(source)
    await session.flush()
    return source


async def list_sources(session: AsyncSession) -> list[SourceSummary]:
    documents = (select(KnowledgeDocument.source_id, func.count().label("n"))
                 .group_by(KnowledgeDocument.source_id).subquery())
    passages = (select(KnowledgePassage.source_id, func.count().label("n"))
                .group_by(KnowledgePassage.source_id).subquery())
    rows = (await session.execute(
        select(KnowledgeSource, func.coalesce(documents.c.n, 0), func.coalesce(passages.c.n, 0))
        .outerjoin(documents, documents.c.source_id == KnowledgeSource.id)
        .outerjoin(passages, passages.c.source_id == KnowledgeSource.id)
        .order_by(KnowledgeSource.name)
    )).all()
    return [SourceSummary(name=s.name, kind=s.kind, locations=list(s.locations), routes=list(s.routes),
                          documents=int(d), passages=int(p), created_at=s.created_at, last_sync_at=s.last_sync_at,
                          errors=list(s.errors)) for s, d, p in rows]


async def delete_source(session: AsyncSession, source: KnowledgeSource) -> None:
    if _dialect(session) == "sqlite":
        await session.execute(text("DELETE FROM knowledge_fts WHERE rowid IN "
                                   "(SELECT id FROM knowledge_passages WHERE source_id = :id)"), {"id": source.id})
    await session.execute(delete(KnowledgePassage).where(KnowledgePassage.source_id == source.id))
    await session.execute(delete(KnowledgeDocument).where(KnowledgeDocument.source_id == source.id))
    await session.execute(delete(KnowledgeSource).where(KnowledgeSource.id == source.id))


async def finish_sync(session: AsyncSession, source_id: int, *, changed: bool, errors: list[dict[str, str]],
                      now: datetime) -> None:
    values: dict[str, Any] = {"last_sync_at": now, "errors": errors}
    if changed:
        values["version"] = KnowledgeSource.version + 1
    await session.execute(update(KnowledgeSource).where(KnowledgeSource.id == source_id).values(**values))


@dataclass(frozen=True)
class SourceState:
    """A source as search sees it; the tuple of all of them changes whenever any passage or scope does."""

    id: int
    name: str
    version: int
    routes: tuple[str, ...]


async def index_state(session: AsyncSession) -> tuple[SourceState, ...]:
    rows = await session.execute(select(KnowledgeSource.id, KnowledgeSource.name, KnowledgeSource.version,
                                        KnowledgeSource.routes).order_by(KnowledgeSource.id))
    return tuple(SourceState(int(i), name, int(v), tuple(routes)) for i, name, v, routes in rows.all())


# --------------------------------------------------------------------------- documents and passages


async def documents_of(session: AsyncSession, source_id: int) -> dict[str, StoredDocument]:
    rows = await session.execute(
        select(KnowledgeDocument.id, KnowledgeDocument.location, KnowledgeDocument.content_hash)
        .where(KnowledgeDocument.source_id == source_id))
    return {location: StoredDocument(int(i), location, h) for i, location, h in rows.all()}


async def delete_documents(session: AsyncSession, document_ids: Sequence[int]) -> None:
    if not document_ids:
        return
    ids = list(document_ids)
    await _delete_passages(session, ids)
    await session.execute(delete(KnowledgeDocument).where(KnowledgeDocument.id.in_(ids)))


async def _delete_passages(session: AsyncSession, document_ids: list[int]) -> None:
    if _dialect(session) == "sqlite":
        await session.execute(
            text("DELETE FROM knowledge_fts WHERE rowid IN "
                 "(SELECT id FROM knowledge_passages WHERE document_id IN :ids)").bindparams(
                bindparam("ids", expanding=True)), {"ids": document_ids})
    await session.execute(delete(KnowledgePassage).where(KnowledgePassage.document_id.in_(document_ids)))


async def save_document(
    session: AsyncSession, *, source_id: int, location: str, title: str, content_hash: str, size: int,
    passages: Sequence[PassageInput], now: datetime, existing: StoredDocument | None,
) -> int:
    """Store a new or changed document with its passages, replacing what an older version left."""
    if existing is None:
        document_id = int((await session.execute(
            insert(KnowledgeDocument).returning(KnowledgeDocument.id),
            {"source_id": source_id, "location": location, "title": title, "content_hash": content_hash,
             "size": size, "fetched_at": now})).scalar_one())
    else:
        document_id = existing.id
        await _delete_passages(session, [document_id])
        await session.execute(update(KnowledgeDocument).where(KnowledgeDocument.id == document_id).values(
            title=title, content_hash=content_hash, size=size, fetched_at=now))
    if passages:
        await _insert_passages(session, source_id, document_id, passages)
    return document_id


async def _insert_passages(session: AsyncSession, source_id: int, document_id: int,
                           passages: Sequence[PassageInput]) -> None:
    # One executemany, then the ids in one query: INSERT … RETURNING goes row by row on SQLite (5x slower).
    await session.execute(
        insert(KnowledgePassage),
        [{"document_id": document_id, "source_id": source_id, "position": p.position, "title": p.title,
          "heading": p.heading, "text": p.text, "embedding": p.embedding,
          "terms": "\n".join((p.title_terms, p.heading_terms, p.body_terms))} for p in passages])
    rows = await session.execute(
        select(KnowledgePassage.position, KnowledgePassage.id).where(KnowledgePassage.document_id == document_id))
    by_position = {int(position): int(passage) for position, passage in rows.all()}
    ids = [by_position[p.position] for p in passages]
    if _dialect(session) == "sqlite":
        await session.execute(
            text("INSERT INTO knowledge_fts(rowid, title, heading, body) VALUES (:id, :t, :h, :b)"),
            [{"id": i, "t": p.title_terms, "h": p.heading_terms, "b": p.body_terms} for i, p in zip(ids, passages,
                                                                                                 strict=True)])
    else:
        await session.execute(
            text(f"UPDATE knowledge_passages AS p SET search_vector = {_PG_VECTOR} "
                 "FROM unnest(CAST(:ids AS integer[]), CAST(:ts AS text[]), CAST(:hs AS text[]), "
                 "CAST(:bs AS text[])) AS u(id, t, h, b) WHERE p.id = u.id"),
            {"ids": ids, "ts": [p.title_terms for p in passages], "hs": [p.heading_terms for p in passages],
             "bs": [p.body_terms for p in passages]})


# --------------------------------------------------------------------------- search


async def full_text_search(session: AsyncSession, terms: Sequence[str], *, source_ids: Sequence[int] | None,
                           limit: int, idf: Mapping[str, float] | None = None,
                           weights: tuple[float, float, float] = FIELD_WEIGHTS,
                           heading_terms: Sequence[str] = ()) -> list[tuple[int, float]]:
    """Passages holding any of `terms` anywhere, or any of `heading_terms` in their title or heading, best
    first, with the engine's score (bigger is better on both engines; `idf` weighs the terms where the
    engine does not itself). Terms are letters and digits only; anything else is dropped."""
    anywhere = [term for term in terms if term.isalnum()]
    headings = [term for term in heading_terms if term.isalnum() and term not in anywhere]
    if not (anywhere or headings) or (source_ids is not None and not source_ids):
        return []
    scope = ""
    params: dict[str, Any] = {"limit": limit}
    if source_ids is not None:
        scope = " AND p.source_id IN :sources"
        params["sources"] = list(source_ids)
    if _dialect(session) == "sqlite":
        # Each term quoted: FTS5 reads it as a plain string, never as an operator (OR, NEAR, column:).
        parts = [f'"{term}"' for term in anywhere]
        if headings:
            parts.append("{title heading} : (" + " OR ".join(f'"{term}"' for term in headings) + ")")
        params["q"] = " OR ".join(parts)
        bm25_weights = ", ".join(str(float(w)) for w in weights)
        sql = (f"SELECT f.rowid, -bm25(knowledge_fts, {bm25_weights}) AS score FROM knowledge_fts AS f "
               f"JOIN knowledge_passages AS p ON p.id = f.rowid WHERE knowledge_fts MATCH :q{scope} "
               "ORDER BY score DESC LIMIT :limit")
    else:
        # ts_rank knows no idf: one rank per term, weighted by the term's idf, makes it BM25-like. The queries
        # are parsed once in a sub-select (to_tsquery is only STABLE: inline, it would run for every row).
        lexemes = anywhere + [f"{term}:AB" for term in headings]
        params["q"] = " | ".join(lexemes)
        parsed = ["to_tsquery('simple', :q) AS q"]
        ranks = []
        for index, (term, lexeme) in enumerate(zip([*anywhere, *headings], lexemes, strict=True)):
            params[f"t{index}"] = lexeme
            params[f"w{index}"] = idf.get(term, 0.0) if idf is not None else 1.0
            parsed.append(f"to_tsquery('simple', :t{index}) AS q{index}")
            ranks.append(f"ts_rank('{_pg_weights(weights)}', p.search_vector, qs.q{index}, 1) * :w{index}")
        sql = (f"SELECT p.id, {' + '.join(ranks)} AS score FROM knowledge_passages AS p, "
               f"(SELECT {', '.join(parsed)}) AS qs WHERE p.search_vector @@ qs.q{scope} "
               "ORDER BY score DESC LIMIT :limit")
    statement = text(sql)
    if source_ids is not None:
        statement = statement.bindparams(bindparam("sources", expanding=True))
    rows = await session.execute(statement, params)
    return [(int(i), float(s)) for i, s in rows.all()]


@dataclass(frozen=True)
class IndexRow:
    """What search keeps in memory for one passage: what it ranks by and what it shows."""

    id: int
    document_id: int
    source_id: int
    position: int
    # Normalised terms of (title, heading, body).
    fields: tuple[str, str, str]
    embedding: bytes | None
    source: str
    location: str
    title: str
    heading: str
    text: str


async def index_rows(session: AsyncSession) -> list[IndexRow]:
    rows = await session.execute(
        select(KnowledgePassage.id, KnowledgePassage.document_id, KnowledgePassage.source_id,
               KnowledgePassage.position, KnowledgePassage.terms, KnowledgePassage.embedding, KnowledgeSource.name,
               KnowledgeDocument.location, KnowledgePassage.title, KnowledgePassage.heading, KnowledgePassage.text)
        .join(KnowledgeDocument, KnowledgeDocument.id == KnowledgePassage.document_id)
        .join(KnowledgeSource, KnowledgeSource.id == KnowledgePassage.source_id)
        .order_by(KnowledgePassage.id))
    out = []
    for i, d, s, p, terms, e, source, location, title, heading, text_ in rows.all():
        fields = (terms.split("\n", 2) + ["", ""])[:3]
        out.append(IndexRow(int(i), int(d), int(s), int(p), (fields[0], fields[1], fields[2]), e, source, location,
                            title, heading, text_))
    return out
