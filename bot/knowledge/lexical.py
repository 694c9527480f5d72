"""BM25F over passages in memory: postings from the terms both engines index, scored with numpy.

Built once per index state from the stored terms (about a second per 10,000 passages, off the event loop),
it ranks a question in well under a millisecond and identically on SQLite and PostgreSQL, where the
engines' own ranking (FTS5 bm25, ts_rank) has to score every matching row and differs between them.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

K1 = 1.2
B = 0.75


def light_stem(word: str) -> str:
    """English plurals folded the S-stemmer way (Harman 1991): "files" and "file", "branches" and "branch",
    "queries" and "query" meet; nothing else is cut, so a command or option name keeps its form."""
    if len(word) <= 3 or not word.isalpha() or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    return word[:-1]


class LexicalIndex:
    """Per term: the rows of the passages holding it and its count in each field (title, heading, body).
    With `stem`, terms are folded by light_stem on the way in and in every lookup."""

    def __init__(self, fields: Sequence[tuple[str, str, str]], *, stem: bool = False) -> None:
        self.size = len(fields)
        self.stem = stem
        # Postings gathered flat in typed arrays (4 bytes an entry, not a Python tuple each), then grouped by term.
        term_ids: dict[str, int] = {}
        posting_terms, posting_rows = array("i"), array("i")
        posting_counts = [array("i"), array("i"), array("i")]
        lengths = np.zeros(self.size, dtype=np.float32)
        for row, parts in enumerate(fields):
            split = [[light_stem(w) for w in part.split()] if stem else part.split() for part in parts]
            lengths[row] = sum(len(words) for words in split)
            per_field = [Counter(words) for words in split]
            for term in set().union(*per_field):
                posting_terms.append(term_ids.setdefault(term, len(term_ids)))
                posting_rows.append(row)
                for field, found in zip(per_field, posting_counts, strict=True):
                    found.append(field.get(term, 0))
        self.lengths = lengths
        self.average = float(lengths.mean()) if self.size else 1.0
        by_term = np.argsort(np.frombuffer(posting_terms, dtype=np.int32), kind="stable")
        rows = np.frombuffer(posting_rows, dtype=np.int32).astype(np.int64)[by_term]
        stacked = np.stack([np.frombuffer(c, dtype=np.int32) for c in posting_counts], axis=1)
        counts: npt.NDArray[np.float32] = stacked.astype(np.float32)[by_term].reshape(-1, 3)
        per_term = np.bincount(np.frombuffer(posting_terms, dtype=np.int32), minlength=len(term_ids))
        ends = np.cumsum(per_term)
        starts = ends - per_term
        self.postings: dict[str, tuple[IntArray, npt.NDArray[np.float32]]] = {
            term: (rows[starts[i]:ends[i]], counts[starts[i]:ends[i]])
            for term, i in zip(term_ids, range(len(term_ids)), strict=True)
        }
        self.df = {term: int(ends[i] - starts[i]) for term, i in zip(term_ids, range(len(term_ids)), strict=True)}
        self._norm = (K1 * (1.0 - B + B * lengths / max(self.average, 1e-9))).astype(np.float32)

    def key(self, term: str) -> str:
        return light_stem(term) if self.stem else term

    def knows(self, term: str) -> bool:
        return self.key(term) in self.df

    def idf(self, term: str) -> float:
        n = self.df.get(self.key(term), 0)
        return math.log(1.0 + (self.size - n + 0.5) / (n + 0.5))

    def scores(self, weighted_terms: dict[str, float], field_weights: tuple[float, float, float]) -> FloatArray:
        """BM25F of every passage: field counts weighted and summed, then saturated (k1) and length-normalised."""
        total = np.zeros(self.size, dtype=np.float32)
        weights = np.array(field_weights, dtype=np.float32)
        for term, query_weight in weighted_terms.items():
            found = self.postings.get(self.key(term))
            if found is None:
                continue
            rows, counts = found
            tf = np.einsum("ij,j->i", counts, weights)
            total[rows] += query_weight * self.idf(term) * tf * (K1 + 1.0) / (tf + self._norm[rows])
        return total

    def coverage(self, words: Sequence[str]) -> dict[int, float]:
        """Per row holding any of `words`: the share of their summed idf carried by the words it holds."""
        total = sum(self.idf(word) for word in words)
        shares: defaultdict[int, float] = defaultdict(float)
        for word in dict.fromkeys(words):
            found = self.postings.get(self.key(word))
            if found is not None and total > 0:
                share = self.idf(word) / total
                for row in found[0].tolist():
                    shares[row] += share
        return shares

    def top_terms(self, passages: Sequence[tuple[str, str, str]], count: int) -> list[str]:
        """The `count` terms that best characterise these passages (tf-idf summed), for query expansion."""
        weight: defaultdict[str, float] = defaultdict(float)
        for fields in passages:
            for term, n in Counter(" ".join(fields).split()).items():
                weight[term] += (1.0 + math.log(n)) * self.idf(term)
        return sorted(weight, key=lambda term: -weight[term])[:count]
