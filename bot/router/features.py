"""Text to features for the local router: normalisation, TF-IDF terms, sparse rows and a nearest-neighbour index."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Long messages keep their head and their tail: the ask is usually at the start, the threat at the end.
HEAD_CHARS = 1000
TAIL_CHARS = 400
# The settings below were chosen with benchmarks/router_quality.py (its docstring explains the runs).
# Character 4-grams: (3, 4, 5) was 1 point better on misspelt text and twice as slow to train.
_CHAR_NGRAMS = (4,)
WORD_GROUP_WEIGHT = 1.0
CHAR_GROUP_WEIGHT = 1.4

_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": "", "\u00b4": ""})
_SLACK_LINK = re.compile(r"<(?:https?://|mailto:)[^>|]*\|([^>]*)>")
_SLACK_MARKUP = re.compile(r"<[@#!][^>]*>|<(?:https?://|mailto:)[^>]*>|https?://\S+")
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):")
_WORD = re.compile(r"[^\W_]+")

# Something stopped working and people or operations feel it now (staff working by hand or on paper,
# someone waiting, patients, a queue): a term of its own, as the two halves rarely sit side by side. Its
# weight is learnt like any word's; it only lets escalations written in a new domain's words share a cue.
IMPACT_TERM = "outage with impact"
_STOPPAGE_WORDS = frozenset({
    "stopped", "down", "failing", "failed", "broke", "broken", "offline", "stuck", "cant", "wont", "isnt",
    "arent", "dead", "died", "outage", "dropped", "disconnected", "halted", "frozen", "crashed", "unavailable"})
_IMPACT_WORDS = frozenset({
    "manually", "paper", "hand", "waiting", "critical", "patients", "patient", "er", "icu", "ward", "idle",
    "queue", "queues", "queuing", "queueing", "safety", "emergency", "lobby", "lobbies", "revenue"})

# Word terms and character terms of one text, repeats included.
Terms = tuple[list[str], list[str]]


def normalize(text: str) -> str:
    """Lower-cased, NFKC-folded text with Slack markup reduced to words; long text keeps head and tail."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + " " + text[-TAIL_CHARS:]
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SLACK_LINK.sub(r" \1 ", text)
    text = _SLACK_MARKUP.sub(" ", text)
    text = _SHORTCODE.sub(lambda m: " " + m.group(1).replace("_", " ") + " ", text)
    return text.translate(_APOSTROPHES)


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def normalized_key(text: str) -> str:
    """The text as the classifier reads it, to spot the same message written differently."""
    return " ".join(words(text))


def terms(text: str) -> Terms:
    """Word unigrams and bigrams, and character 4-grams inside each word (typos, inflections)."""
    return terms_of(words(text))


def terms_of(tokens: list[str]) -> Terms:
    word_terms = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    present = set(tokens)
    if present & _STOPPAGE_WORDS and present & _IMPACT_WORDS:
        word_terms.append(IMPACT_TERM)
    char_terms = [gram for token in tokens for gram in _char_grams(token)]
    return word_terms, char_terms


@functools.lru_cache(maxsize=8_192)
def _char_grams(token: str) -> tuple[str, ...]:
    """The token's character n-grams, padded with spaces; cached, as most tokens are common words."""
    padded = f" {token} "
    return tuple(padded[i : i + n] for n in _CHAR_NGRAMS for i in range(len(padded) - n + 1))



@dataclass(frozen=True)
class Vocabulary:
    """Term -> feature index for both groups, and the inverse document frequencies; feature 0 is the bias."""

    index: tuple[Mapping[str, int], Mapping[str, int]]
    idf: FloatArray

    @property
    def size(self) -> int:
        return len(self.idf)

    @classmethod
    def fit(cls, documents: Iterable[Terms]) -> tuple[Vocabulary, tuple[IntArray, IntArray, FloatArray]]:
        """The vocabulary of `documents` and their encoding, counted in one pass.

        `documents` may be a generator: each text's terms are dropped once counted, so that training does
        not hold a million small strings at once (the allocator would keep their pages long after).
        """
        word_table: dict[str, int] = {}
        char_table: dict[str, int] = {}
        # Machine integers, not lists of Python ints: a million term occurrences stay 8 MB, not 40.
        word_ids, char_ids = array("q"), array("q")
        word_counts, char_counts = array("q"), array("q")
        for word_terms, char_terms in documents:
            word_ids.extend(word_table.setdefault(term, len(word_table)) for term in word_terms)
            char_ids.extend(char_table.setdefault(term, len(char_table)) for term in char_terms)
            word_counts.append(len(word_terms))
            char_counts.append(len(char_terms))
        n_words, n_chars = len(word_table), len(char_table)
        n_documents = len(word_counts)
        # Feature 0 is the bias, then the words, then the character n-grams.
        row_numbers = np.arange(n_documents, dtype=np.int64)
        rows = np.concatenate([np.repeat(row_numbers, np.frombuffer(word_counts, dtype=np.int64)),
                               np.repeat(row_numbers, np.frombuffer(char_counts, dtype=np.int64))])
        raw = np.concatenate([np.frombuffer(word_ids, dtype=np.int64) + 1,
                              np.frombuffer(char_ids, dtype=np.int64) + 1 + n_words])
        width = 1 + n_words + n_chars
        pairs, counts = np.unique(rows * width + raw, return_counts=True)
        pair_rows, pair_terms = pairs // width, pairs % width
        df = np.bincount(pair_terms, minlength=width).astype(np.float64)
        # Word pairs and character n-grams seen in one text only are mostly noise, and there are many of
        # them (they would double the model); every single word stays, so that a few examples still teach.
        min_df = 2 if n_documents >= 200 else 1
        keep = df >= min_df
        keep[0] = True
        for term, i in word_table.items():
            if " " not in term:
                keep[1 + i] = True
        new_id = np.cumsum(keep) - 1
        idf = np.log((1.0 + n_documents) / (1.0 + df[keep])) + 1.0
        idf[0] = 1.0
        char_index = {term: int(new_id[1 + n_words + i]) for term, i in char_table.items()
                      if keep[1 + n_words + i]}
        word_index = {term: int(new_id[1 + i]) for term, i in word_table.items() if keep[1 + i]}
        vocabulary = cls(index=(word_index, char_index), idf=idf)
        kept = keep[pair_terms]
        entries = (pair_rows[kept], new_id[pair_terms[kept]], counts[kept])
        return vocabulary, vocabulary._weigh(n_documents, *entries)

    def encode(self, documents: Sequence[Terms]) -> tuple[IntArray, IntArray, FloatArray]:
        """(row, feature, value) of every non-zero, grouped by row, with the bias first in each row."""
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        for row, document in enumerate(documents):
            for found, index in zip(document, self.index, strict=True):
                for term, count in Counter(found).items():
                    feature = index.get(term)
                    if feature is not None:
                        rows.append(row)
                        cols.append(feature)
                        counts.append(count)
        return self._weigh(len(documents), np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                           np.array(counts, dtype=np.int64))

    def encode_one(self, document: Terms) -> tuple[IntArray, FloatArray]:
        """One text's (feature, value) pairs, the bias first: a row of `encode`, without its bookkeeping."""
        cols: list[IntArray] = [np.zeros(1, dtype=np.int64)]
        values: list[FloatArray] = [np.ones(1)]
        for found, index, weight in zip(document, self.index, (WORD_GROUP_WEIGHT, CHAR_GROUP_WEIGHT), strict=True):
            known = [(feature, count) for term, count in Counter(found).items()
                     if (feature := index.get(term)) is not None]
            if not known:
                continue
            features = np.array([feature for feature, _ in known], dtype=np.int64)
            group = (1.0 + np.log(np.array([count for _, count in known], dtype=np.float64))) * self.idf[features]
            group *= weight / math.sqrt(float(np.dot(group, group)))
            cols.append(features)
            values.append(group)
        return np.concatenate(cols), np.concatenate(values)

    def _weigh(self, n_rows: int, rows: IntArray, cols: IntArray, counts: IntArray) -> tuple[
        IntArray, IntArray, FloatArray
    ]:
        """Sublinear TF-IDF values, each group L2-normalised and weighted, with a bias entry per row."""
        n_words = len(self.index[0])
        group = np.where(cols <= n_words, 0, 1)
        values = (1.0 + np.log(counts.astype(np.float64))) * self.idf[cols]
        cell = rows * 2 + group
        norms = np.sqrt(np.bincount(cell, weights=values * values, minlength=2 * n_rows))
        values *= np.array([WORD_GROUP_WEIGHT, CHAR_GROUP_WEIGHT])[group] / norms[cell]
        # Prepend the bias to every row, keeping rows grouped and in order.
        all_rows = np.concatenate([np.arange(n_rows, dtype=np.int64), rows])
        order = np.argsort(all_rows, kind="stable")
        all_cols = np.concatenate([np.zeros(n_rows, dtype=np.int64), cols])
        all_values = np.concatenate([np.ones(n_rows), values])
        return all_rows[order], all_cols[order], all_values[order]


@dataclass(frozen=True)
class SparseRows:
    """A sparse matrix kept in the two orders numpy needs: by row for X @ W, by column for X.T @ G."""

    n_rows: int
    rows: IntArray
    cols: IntArray
    values: FloatArray
    row_starts: IntArray
    rows_by_col: IntArray
    values_by_col: FloatArray
    col_ids: IntArray
    col_starts: IntArray

    @classmethod
    def build(cls, n_rows: int, rows: IntArray, cols: IntArray, values: FloatArray) -> SparseRows:
        """Entries must be grouped by row in order, and every row must have one (the bias does that)."""
        row_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        by_col = np.argsort(cols, kind="stable")
        col_ids, col_starts = np.unique(cols[by_col], return_index=True)
        return cls(n_rows, rows, cols, values, row_starts, rows[by_col], values[by_col],
                   col_ids, col_starts.astype(np.int64))

    def subset(self, keep: IntArray) -> SparseRows:
        """The rows in `keep` (sorted), renumbered from zero."""
        wanted = np.zeros(self.n_rows, dtype=bool)
        wanted[keep] = True
        new_number = np.cumsum(wanted) - 1
        entries = wanted[self.rows]
        return SparseRows.build(len(keep), new_number[self.rows[entries]], self.cols[entries],
                                 self.values[entries])

    def dot(self, weights: FloatArray) -> FloatArray:
        """X @ W for W of shape (features, classes)."""
        result = np.empty((self.n_rows, weights.shape[1]))
        for first, last, begin, end in _blocks(self.row_starts, len(self.cols)):
            # np.take is several times faster than fancy indexing for gathering rows.
            products = np.take(weights, self.cols[begin:end], axis=0)
            products *= self.values[begin:end, None]
            result[first:last] = np.add.reduceat(products, self.row_starts[first:last] - begin, axis=0)
        return result

    def transpose_dot(self, gradient: FloatArray, n_features: int) -> FloatArray:
        """X.T @ G for G of shape (rows, classes)."""
        result = np.zeros((n_features, gradient.shape[1]))
        for first, last, begin, end in _blocks(self.col_starts, len(self.rows_by_col)):
            products = np.take(gradient, self.rows_by_col[begin:end], axis=0)
            products *= self.values_by_col[begin:end, None]
            result[self.col_ids[first:last]] = np.add.reduceat(products, self.col_starts[first:last] - begin, axis=0)
        return result


# Entries multiplied at once: a few megabytes of temporaries instead of one array as large as the data,
# which the allocator would keep as resident memory long after training.
_BLOCK_ENTRIES = 1 << 17


def _blocks(starts: IntArray, total: int) -> list[tuple[int, int, int, int]]:
    """(first group, end group, first entry, end entry) of consecutive groups holding about _BLOCK_ENTRIES."""
    cuts = np.unique(np.searchsorted(starts, np.arange(0, total, _BLOCK_ENTRIES), side="right") - 1)
    groups = [*cuts.tolist(), len(starts)]
    entries = [*starts[cuts].tolist(), total]
    return [(groups[i], groups[i + 1], entries[i], entries[i + 1]) for i in range(len(cuts))]


_COMMON_SHARE = 0.03
_COMMON_MIN_DF = 30
_QUERY_TERMS = 48


@dataclass(frozen=True)
class NeighbourIndex:
    """The training texts' word vectors (unit length), by feature, for cosine similarity to a new text.

    How close a message is to anything the router learnt from is what tells "unlike the training data"
    (another language, a new domain's words, a long incident report) from a message it can judge.
    """

    n_rows: int
    col_starts: IntArray  # postings of word feature f are rows[col_starts[f]:col_starts[f + 1]]
    rows: npt.NDArray[np.int32]
    values: npt.NDArray[np.float32]

    @classmethod
    def build(cls, n_rows: int, n_words: int, rows: IntArray, cols: IntArray, values: FloatArray) -> NeighbourIndex:
        """From encoded rows (see `Vocabulary`): word features 1..n_words, rescaled to unit length.

        Words in more than _COMMON_SHARE of the texts ("the", "can you") are left out: their long posting
        lists would make each look-up slow, and they say little about what a text is about.
        """
        word = (cols >= 1) & (cols <= n_words)
        df = np.bincount(cols[word], minlength=n_words + 1)
        common = df > max(_COMMON_MIN_DF, _COMMON_SHARE * n_rows)
        word &= ~common[np.minimum(cols, n_words)]
        order = np.argsort(cols[word], kind="stable")
        word_cols = cols[word][order]
        col_starts = np.searchsorted(word_cols, np.arange(n_words + 2)).astype(np.int64)
        return cls(n_rows, col_starts, rows[word][order].astype(np.int32),
                   (values[word][order] / WORD_GROUP_WEIGHT).astype(np.float32))

    def similarities(self, cols: IntArray, values: FloatArray) -> npt.NDArray[np.float32]:
        """Cosine similarity of one encoded text (its word features) to every training text."""
        word = (cols >= 1) & (cols < len(self.col_starts) - 1)
        cols, weights = cols[word], values[word] / WORD_GROUP_WEIGHT
        if len(cols) > _QUERY_TERMS:
            # A long message's weakest terms hardly move a cosine, and each costs a posting list.
            strongest = np.argpartition(-weights, _QUERY_TERMS)[:_QUERY_TERMS]
            cols, weights = cols[strongest], weights[strongest]
        starts, ends = self.col_starts[cols], self.col_starts[cols + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(self.n_rows, dtype=np.float32)
        # Every posting of every query term, gathered without a Python loop.
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        products = self.values[offsets] * np.repeat(weights, lengths).astype(np.float32)
        similarity: npt.NDArray[np.float32] = np.bincount(
            self.rows[offsets], weights=products, minlength=self.n_rows).astype(np.float32)
        return similarity
