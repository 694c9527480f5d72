"""Retrieval: passages ranked by their words and by meaning, grouped by page, with an honest "I don't know".

One interface on both engines. Words are ranked either by the engine (SQLite FTS5 bm25, or PostgreSQL
ts_rank weighted by idf: the baseline methods) or by BM25F over the same indexed terms held in memory
(bot/knowledge/lexical.py: the same ranking on both engines, in well under a millisecond); the static
embeddings (bot/knowledge/embed.py) can add passages that say the same thing in other words; passages are
then grouped by page, and a page ranks by its best passage plus a share of its next two.
A question whose relevance (the similarity of its closest passage, less a penalty for the share of its words
that no passage uses) is below `[knowledge] min_score` gets no passages at all; by default that threshold is
calibrated on the indexed docs themselves (calibrated_threshold), not on any set of questions.
The methods compared in benchmarks/kb_retrieval.py are the rows of METHODS; KEPT is the one in use.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from bot.clock import Clock, SystemClock
from bot.knowledge.embed import StaticEmbedder, from_bytes, load_embedder
from bot.knowledge.lexical import LexicalIndex
from bot.knowledge.text import STOPWORDS, query_terms, terms
from storage import knowledge as repo
from storage.engine import Database

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# Passages the engine returns for one question, before fusion.
LEXICAL_CANDIDATES = 200
# Words in more passages than this share are looked up in titles and headings only (see _split_common).
MAX_TERM_SHARE = 0.3
MIN_COMMON_PASSAGES = 50
# Pages ranked by their best passage plus this share of their next two: a page with several good
# passages is more likely the one, without letting a long page win by sheer length.
NEXT_PASSAGES_SHARE = 0.1
# Relevance (what `[knowledge] min_score` is compared with) is the similarity of the closest passage less this
# much per share of the question's information in words the docs never use (see _unknown_share).
UNKNOWN_WORDS_PENALTY = 0.1
# Pseudo-relevance feedback: terms taken from the best passages of a first ranking.
FEEDBACK_PASSAGES = 3
FEEDBACK_TERMS = 8
# How long a search trusts the index state it last read: changes made by another process (`kb sync` from the
# CLI while the bot serves) are seen within this many seconds, without a database round trip per search.
STATE_RECHECK_S = 1.0
# The calibrated threshold: the relevance that the first sentences of this many passages (evenly spaced) reach
# against the other pages, at this percentile. Such a sentence is in-domain text whose own page is hidden, the
# way a user's question is in-domain text the docs never wrote: answering when the question is as close as
# 95% of them are is meant to answer 95% of answerable questions (the goal), whatever the size or style of the
# docs. Fewer than CALIBRATION_MIN_PAGES pages are too few to measure: FALLBACK_THRESHOLD then.
CALIBRATION_SAMPLES = 256
CALIBRATION_PERCENTILE = 5.0
CALIBRATION_MIN_PAGES = 5
FALLBACK_THRESHOLD = 0.5
# Typo correction: only words this long, replaced by a known word one edit away seen in this many passages.
TYPO_MIN_CHARS = 5
TYPO_MIN_PASSAGES = 2


@dataclass(frozen=True)
class Method:
    """One way of ranking; `benchmarks/kb_retrieval.py` measures each side by side."""

    name: str
    description: str
    field_weights: tuple[float, float, float] = repo.FIELD_WEIGHTS
    stopwords: bool = True
    typo: bool = False
    page_fusion: bool = True
    # Weight of a passage's similarity to the question, next to its lexical score (normalised to 1).
    similarity: float = 0.0
    # Passages added by similarity alone, however few words they share with the question.
    similar_candidates: int = 0
    # Weight of the similarity between the question and the page's opening (title and first passages).
    opening: float = 0.0
    # "engine": the database's full-text ranking; "memory": BM25F over the same terms in memory.
    ranker: Literal["engine", "memory"] = "memory"
    # Pseudo-relevance feedback: words that characterise the best passages, added to the query at this weight.
    feedback: float = 0.0
    # Plurals folded (light_stem) in the in-memory index and the query.
    stem: bool = False
    # Weight of the whole page's BM25F (all its passages as one document), normalised to the best page.
    page_lexical: float = 0.0
    # "score": lexical and similarity scores added; "rrf": passages fused by reciprocal rank in each list.
    fusion: Literal["score", "rrf"] = "score"
    # Weight of query-term coverage of the page: the share of the question's idf its words carry that the page uses.
    coverage: float = 0.0
    # Lexical score multiplier of each page's first passage (its summary or introduction), 1.0 = none.
    lead: float = 1.0
    # Page score from its passages: best + share x next two ("next2"), or best + decayed sum of all ("decay").
    page_sum: Literal["next2", "decay"] = "next2"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("bm25", "engine full text, every word of the question, fields equal, pages by best passage",
           field_weights=(1.0, 1.0, 1.0), stopwords=False, page_fusion=False, ranker="engine"),
    Method("+fields", "title and heading weigh more than the body", stopwords=False, page_fusion=False,
           ranker="engine"),
    Method("+stopwords", "function words and chat filler dropped from the query", page_fusion=False,
           ranker="engine"),
    Method("+pages", "a page ranks by its best passage plus a share of its next two", ranker="engine"),
    Method("memory", "the same, ranked by BM25F in memory instead of by the engine"),
    Method("+typos", "unknown words replaced by a known word one edit away", typo=True),
    Method("+feedback", "words of the best passages added to the query", feedback=0.3),
    Method("+similar", "static-embedding similarity fused with the lexical score, similar passages added",
           similarity=0.6, similar_candidates=30),
    Method("+opening", "and the page's opening compared with the question", similarity=0.6,
           similar_candidates=30, opening=1.0),
    Method("+stems", "plurals folded in the index and the question", similarity=0.6, similar_candidates=30,
           stem=True),
    Method("+page-bm25", "and the whole page's BM25F (normalised) added to the page score", similarity=0.6,
           similar_candidates=30, page_lexical=0.3),
    Method("+coverage", "and the share of the question's idf the page's words cover", similarity=0.6,
           similar_candidates=30, coverage=0.2),
    Method("+lead", "each page's first passage (its summary) weighs 1.5x", similarity=0.6, similar_candidates=30,
           lead=1.5),
    Method("+decay", "a page ranks by its best passage plus a halving share of each next one", similarity=0.6,
           similar_candidates=30, page_sum="decay"),
    Method("+rrf", "lexical and similarity ranks fused by reciprocal rank instead of scores", similarity=0.6,
           similar_candidates=30, fusion="rrf"),
)}
KEPT = METHODS["+similar"]


# Picks the ids of the sources to search from all sources (None = every one).
Scope = Callable[[Sequence[repo.SourceState]], list[int] | None]


def every_source(_: Sequence[repo.SourceState]) -> list[int] | None:
    return None


def scope_for(route: str | None, route_sources: Sequence[str] | None, names: Sequence[str] | None) -> Scope:
    """The sources a route may use — its `knowledge` list (None = all), less sources scoped to other routes —
    narrowed to `names` when given."""

    def pick(sources: Sequence[repo.SourceState]) -> list[int] | None:
        if route is None and names is None:
            return None
        chosen = []
        for source in sources:
            if route is not None and source.routes and route not in source.routes:
                continue
            if route_sources is not None and source.name not in route_sources:
                continue
            if names is not None and source.name not in names:
                continue
            chosen.append(source.id)
        return chosen

    return pick


@dataclass(frozen=True)
class Hit:
    """A passage found for a question; `source` is the file path or URL it is cited by."""

    title: str
    heading: str
    source: str
    source_name: str
    text: str
    score: float
    similarity: float

    def as_json(self) -> dict[str, object]:
        return {"title": self.title, "heading": self.heading, "source": self.source,
                "source_name": self.source_name, "score": round(self.score, 4),
                "similarity": round(self.similarity, 4), "text": self.text}


@dataclass(frozen=True)
class SearchResult:
    """The ranked passages (one per page), or none when the docs do not cover the question."""

    question: str
    hits: tuple[Hit, ...]
    # Similarity of the closest passage in scope, less a penalty for words the docs never use; what
    # `[knowledge] min_score` is compared with.
    relevance: float
    abstained: bool
    # The min_score that applied (configured, or calibrated on the docs).
    threshold: float
    terms: tuple[str, ...]
    # What would have been returned had the threshold not applied (for `kb search` and evaluation).
    ranked: tuple[Hit, ...] = ()


@dataclass
class _Fused:
    scores: dict[int, float]
    similarity: dict[int, float] = field(default_factory=dict)
    openings: dict[int, float] = field(default_factory=dict)
    relevance: float = 0.0


@dataclass
class _Index:
    """What search keeps in memory for one state of the index: vectors, vocabulary, document openings."""

    state: tuple[repo.SourceState, ...]
    ids: IntArray
    documents: IntArray
    sources: IntArray
    positions: IntArray
    vectors: FloatArray
    # Documents with an opening vector (the mean of their first passages), and those vectors as rows.
    opening_ids: list[int]
    opening_vectors: FloatArray
    lexical: LexicalIndex
    # The relevance below which a question is taken as not covered (calibrated_threshold).
    threshold: float
    # What each passage shows (and its terms, for feedback), by row.
    shown: list[repo.IndexRow]
    row_of: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {int(passage): row for row, passage in enumerate(self.ids.tolist())}

    @functools.cached_property
    def pages(self) -> tuple[IntArray, LexicalIndex]:
        """The same terms with each page as one document: the page ids, and the index whose rows they are
        (built on first use: only the methods that rank whole pages need it)."""
        parts: dict[int, tuple[str, list[str], list[str]]] = {}
        for row in self.shown:
            _, headings, bodies = parts.setdefault(row.document_id, (row.fields[0], [], []))
            headings.append(row.fields[1])
            bodies.append(row.fields[2])
        return (np.array(list(parts), dtype=np.int64),
                LexicalIndex([(title, " ".join(h), " ".join(b)) for title, h, b in parts.values()],
                             stem=self.lexical.stem))

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def vocabulary(self) -> dict[str, int]:
        return self.lexical.df

    def idf(self, term: str) -> float:
        return self.lexical.idf(term)


class Retriever:
    """Searches the knowledge base in `db`; caches vectors per index state, reloading after any sync."""

    def __init__(self, db: Database, *, method: Method = KEPT, embedder: StaticEmbedder | None = None,
                 clock: Clock | None = None) -> None:
        self.db = db
        self.method = method
        self._embedder = embedder
        self._clock = clock or SystemClock()
        self._index: _Index | None = None
        # When (monotonic) the index state was last read; None = read it before the next search.
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def embedder(self) -> StaticEmbedder:
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    def with_method(self, method: Method) -> Retriever:
        other = Retriever(self.db, method=method, embedder=self._embedder, clock=self._clock)
        if method.stem == self.method.stem:
            other._index = self._index
        return other

    async def search(self, question: str, *, scope: Scope = every_source, limit: int,
                     min_score: float | None = None) -> SearchResult:
        """The best passage of each of the `limit` best pages among the sources `scope` picks; below `min_score`
        relevance (None: the threshold calibrated on the docs) none."""
        index = await self._current()
        source_ids = scope(index.state)
        words = self._terms(question, index)
        if self.method.ranker == "engine":
            idf = {word: index.idf(word) for word in words if word in index.vocabulary}
            rare, common = _split_common(words, index)
            async with self.db.sessions() as session:
                lexical = await repo.full_text_search(session, rare, heading_terms=common, source_ids=source_ids,
                                                      limit=LEXICAL_CANDIDATES, idf=idf,
                                                      weights=self.method.field_weights)
        else:
            lexical = self._rank_in_memory(index, words, source_ids)
        fused = self._fuse(index, question, lexical, source_ids)
        page_scores = (self._page_scores(index, words, source_ids)
                       if self.method.page_lexical or self.method.coverage else {})
        hits = tuple(Hit(title=shown.title, heading=shown.heading, source=shown.location,
                         source_name=shown.source, text=shown.text, score=score,
                         similarity=fused.similarity.get(passage, 0.0))
                     for passage, score in self._pages(index, fused, limit, page_scores)
                     for shown in (index.shown[index.row_of[passage]],))
        threshold = index.threshold if min_score is None else min_score
        abstained = not hits or fused.relevance < threshold
        return SearchResult(question=question, hits=() if abstained else hits, relevance=fused.relevance,
                            abstained=abstained, threshold=threshold, terms=tuple(words), ranked=hits)

    def _rank_in_memory(self, index: _Index, words: list[str],
                        source_ids: Sequence[int] | None) -> list[tuple[int, float]]:
        """The best passages by BM25F, the query widened by feedback from the first ranking if asked."""
        weighted = dict.fromkeys(words, 1.0)
        scores = self._scores(index, weighted, source_ids)
        if self.method.feedback:
            best = np.argsort(-scores)[:FEEDBACK_PASSAGES]
            best = best[scores[best] > 0]
            if len(best):
                fields = [index.shown[row].fields for row in best.tolist()]
                for term in index.lexical.top_terms(fields, FEEDBACK_TERMS):
                    weighted.setdefault(term, self.method.feedback)
                scores = self._scores(index, weighted, source_ids)
        count = min(LEXICAL_CANDIDATES, index.size)
        if count == 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[scores[top] > 0]
        return list(zip(index.ids[top].tolist(), scores[top].tolist(), strict=True))

    def _page_scores(self, index: _Index, words: list[str], source_ids: Sequence[int] | None) -> dict[int, float]:
        """Each page's BM25F as one document, normalised to the best page."""
        page_ids, pages = index.pages
        if self.method.coverage:
            return {int(page_ids[row]): share for row, share in pages.coverage(words).items()}
        scores = pages.scores(dict.fromkeys(words, 1.0), self.method.field_weights)
        top = float(scores.max()) if len(scores) else 0.0
        if top <= 0:
            return {}
        found = np.flatnonzero(scores)
        return {int(page_ids[row]): float(scores[row]) / top for row in found.tolist()}

    def _scores(self, index: _Index, weighted: dict[str, float], source_ids: Sequence[int] | None) -> FloatArray:
        scores = index.lexical.scores(weighted, self.method.field_weights)
        if self.method.lead != 1.0:
            scores[index.positions == 0] *= self.method.lead
        if source_ids is not None:
            scores[~np.isin(index.sources, np.array(list(source_ids), dtype=np.int64))] = 0.0
        return scores

    # -- steps

    def _terms(self, question: str, index: _Index) -> list[str]:
        words = query_terms(question) if self.method.stopwords else list(dict.fromkeys(terms(question)))
        if self.method.typo:
            words = list(dict.fromkeys(_corrected(word, index.vocabulary) for word in words))
        return words

    def _fuse(self, index: _Index, question: str, lexical: list[tuple[int, float]],
              source_ids: Sequence[int] | None) -> _Fused:
        """Passage scores: lexical normalised to the best one, plus weighted similarity to the question."""
        method = self.method
        top = max((score for _, score in lexical), default=0.0)
        scores = {passage: (score / top if top > 0 else 0.0) for passage, score in lexical}
        fused = _Fused(scores=scores)
        query = self.embedder.embed(question)
        if query is None or index.size == 0:
            return fused
        # einsum, not `@`: on a busy machine BLAS threads make this product several times slower.
        sims = np.einsum("ij,j->i", index.vectors, query)
        if source_ids is not None:
            sims[~np.isin(index.sources, np.array(list(source_ids), dtype=np.int64))] = -1.0
        closest = float(sims.max())
        if closest <= -1.0:
            return fused
        fused.relevance = closest - UNKNOWN_WORDS_PENALTY * _unknown_share(question, index)
        if method.similar_candidates:
            count = min(method.similar_candidates, index.size)
            for row in np.argpartition(-sims, count - 1)[:count].tolist():
                if sims[row] > -1.0:
                    scores.setdefault(int(index.ids[row]), 0.0)
        rows = [index.row_of.get(passage, -1) for passage in scores]
        for passage, row in zip(scores, rows, strict=True):
            if row >= 0:
                fused.similarity[passage] = float(sims[row])
        if method.fusion == "rrf":
            _reciprocal_ranks(scores, fused.similarity, method.similarity)
        elif method.similarity:
            for passage in scores:
                scores[passage] += method.similarity * max(fused.similarity.get(passage, 0.0), 0.0)
        if method.opening and index.opening_ids:
            opening_sims = np.maximum(np.einsum("ij,j->i", index.opening_vectors, query), 0.0).tolist()
            fused.openings = dict(zip(index.opening_ids, opening_sims, strict=True))
        return fused

    def _pages(self, index: _Index, fused: _Fused, limit: int,
               page_scores: dict[int, float]) -> list[tuple[int, float]]:
        """(best passage, page score) of the `limit` best pages."""
        by_page: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for passage, score in fused.scores.items():
            row = index.row_of.get(passage)
            if row is not None:
                by_page[int(index.documents[row])].append((score, passage))
        ranked: list[tuple[float, int]] = []
        for document, found in by_page.items():
            found.sort(reverse=True)
            page = found[0][0]
            if self.method.page_fusion and self.method.page_sum == "decay":
                page += sum(score * 0.5 ** (i + 1) for i, (score, _) in enumerate(found[1:8]))
            elif self.method.page_fusion:
                page += NEXT_PASSAGES_SHARE * sum(score for score, _ in found[1:3])
            page += self.method.opening * fused.openings.get(document, 0.0)
            page += (self.method.page_lexical + self.method.coverage) * page_scores.get(document, 0.0)
            ranked.append((page, found[0][1]))
        ranked.sort(reverse=True)
        return [(passage, score) for score, passage in ranked[:limit]]

    # -- the cached index

    def recheck(self) -> None:
        """Read the index state before the next search (this process changed it)."""
        self._checked_at = None

    async def _current(self) -> _Index:
        """The in-memory index of the current state, rebuilt (off the event loop, with no connection held)
        when any source changed since it was built. The state is read at most every STATE_RECHECK_S (and
        right after this process changes it), so a search usually costs no database round trip at all."""
        now = self._clock.monotonic()
        if (self._index is not None and self._checked_at is not None
                and now - self._checked_at < STATE_RECHECK_S):
            return self._index
        async with self.db.sessions() as session:
            state = await repo.index_state(session)
        self._checked_at = now
        if self._index is not None and self._index.state == state:
            return self._index
        async with self._lock:
            if self._index is None or self._index.state != state:
                async with self.db.sessions() as session:
                    rows = await repo.index_rows(session)
                    # Read in the same transaction as the rows, so the state names exactly what was loaded.
                    state = await repo.index_state(session)
                self._index = await asyncio.to_thread(self._build, state, rows)
            return self._index

    def _build(self, state: tuple[repo.SourceState, ...], rows: list[repo.IndexRow]) -> _Index:
        """The in-memory index (CPU work: run off the event loop)."""
        dimensions = self.embedder.dimensions
        vectors = from_bytes([row.embedding for row in rows], dimensions)
        openings: dict[int, list[FloatArray]] = defaultdict(list)
        for row, vector in zip(rows, vectors, strict=True):
            if row.position < 2:
                openings[row.document_id].append(vector)
        opening_ids: list[int] = []
        opening_rows: list[FloatArray] = []
        for document, parts in openings.items():
            mean = np.mean(parts, axis=0)
            norm = float(np.linalg.norm(mean))
            if norm > 0:
                opening_ids.append(document)
                opening_rows.append((mean / norm).astype(np.float32))
        return _Index(state=state, ids=np.array([r.id for r in rows], dtype=np.int64),
                      documents=np.array([r.document_id for r in rows], dtype=np.int64),
                      sources=np.array([r.source_id for r in rows], dtype=np.int64), vectors=vectors,
                      positions=np.array([r.position for r in rows], dtype=np.int64),
                      shown=[replace(row, embedding=None) for row in rows],
                      threshold=calibrated_threshold(self.embedder, [row.text for row in rows], vectors,
                                                     np.array([r.document_id for r in rows], dtype=np.int64)),
                      opening_ids=opening_ids,
                      opening_vectors=np.array(opening_rows, dtype=np.float32).reshape(-1, dimensions),
                      lexical=LexicalIndex([row.fields for row in rows], stem=self.method.stem))


def calibrated_threshold(embedder: StaticEmbedder, texts: Sequence[str], vectors: FloatArray,
                         documents: IntArray) -> float:
    """The CALIBRATION_PERCENTILE of the similarity that passages' first sentences reach against other pages."""
    if len(set(documents.tolist())) < CALIBRATION_MIN_PAGES:
        return FALLBACK_THRESHOLD
    closest: list[float] = []
    for row in np.linspace(0, len(texts) - 1, min(CALIBRATION_SAMPLES, len(texts))).astype(np.int64).tolist():
        sentence = embedder.embed(_SENTENCE_END.split(texts[row].strip(), maxsplit=1)[0][:MAX_SENTENCE_CHARS])
        if sentence is not None:
            sims = np.einsum("ij,j->i", vectors, sentence)
            closest.append(float(sims[documents != documents[row]].max()))
    return float(np.percentile(closest, CALIBRATION_PERCENTILE)) if closest else FALLBACK_THRESHOLD


_SENTENCE_END = re.compile(r"(?<=[.?!])\s")
MAX_SENTENCE_CHARS = 300
RRF_K = 60


def _reciprocal_ranks(scores: dict[int, float], similarity: dict[int, float], weight: float) -> None:
    """Replace each candidate's score by reciprocal-rank fusion (Cormack et al. 2009) of its rank by the lexical
    score and its rank by similarity (the latter weighted); scaled so the best possible is about 1."""
    by_lexical = sorted(scores, key=lambda p: -scores[p])
    by_similarity = sorted(scores, key=lambda p: -similarity.get(p, -1.0))
    fused = dict.fromkeys(scores, 0.0)
    for rank, passage in enumerate(by_lexical):
        if scores[passage] > 0:
            fused[passage] += 1.0 / (RRF_K + rank + 1)
    for rank, passage in enumerate(by_similarity):
        fused[passage] += weight / (RRF_K + rank + 1)
    scale = (RRF_K + 1) / (1.0 + weight)
    for passage, value in fused.items():
        scores[passage] = value * scale


def _unknown_share(question: str, index: _Index) -> float:
    """Share of the question's information (idf mass) in words no indexed passage contains: "refund", "SLA"
    or "Perforce" asked of docs that never mention them. Similarity alone cannot tell those questions from
    answerable ones: they read like the docs' domain."""
    words = query_terms(question)
    total = sum(index.idf(word) for word in words)
    unknown = sum(index.idf(word) for word in words if not index.lexical.knows(word))
    return unknown / total if total > 0 else 0.0


def _split_common(words: list[str], index: _Index) -> tuple[list[str], list[str]]:
    """Words to look up anywhere, and common words (in more than MAX_TERM_SHARE of the passages) to look up
    in titles and headings only: in a body they rank nothing, and make the engine score thousands of rows."""
    limit = max(MIN_COMMON_PASSAGES, MAX_TERM_SHARE * index.size)
    rare = [word for word in words if index.vocabulary.get(word, 0) <= limit]
    return rare, [word for word in words if word not in rare]


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _corrected(word: str, vocabulary: dict[str, int]) -> str:
    """`word`, or the most frequent indexed word one edit away when `word` itself is not indexed."""
    if word in vocabulary or len(word) < TYPO_MIN_CHARS or not word.isalpha() or word in STOPWORDS:
        return word
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    candidates = {a + b[1:] for a, b in splits if b}
    candidates |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    candidates |= {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    candidates |= {a + c + b for a, b in splits for c in _LETTERS}
    known = [(vocabulary[c], c) for c in candidates if vocabulary.get(c, 0) >= TYPO_MIN_PASSAGES]
    return max(known)[1] if known else word


def method_named(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None

