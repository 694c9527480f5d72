"""The local router: numpy TF-IDF and logistic regression, trained at start-up, with calibrated confidence."""

from __future__ import annotations

import functools
import json
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

from bot.config import Config
from bot.router.base import RouteDecision, RoutingContext

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Long messages keep their head and their tail: the ask is usually at the start, the threat at the end.
HEAD_CHARS = 1500
TAIL_CHARS = 500
# Reviewer corrections are ground truth; route examples in the config are the operator's own words.
CORRECTION_WEIGHT = 6.0
CONFIG_EXAMPLE_WEIGHT = 2.0
SHIPPED_DATA_RESOURCE = "training.jsonl"

# Why numpy and not scikit-learn (`benchmarks/router_quality.py --compare-sklearn`): importing its text and
# linear-model modules takes 0.8 s on this 2-core machine, longer than training this model, and the same
# pipeline in scikit-learn trains several times slower and takes milliseconds, not ~0.1 ms, per message.
# The settings below were chosen with benchmarks/router_quality.py (its docstring explains the runs).
# Character 4-grams: (3, 4, 5) was 1 point better on misspelt text and twice as slow to train.
_CHAR_NGRAMS = (4,)
_WORD_GROUP_WEIGHT = 1.0
_CHAR_GROUP_WEIGHT = 1.4
_L2 = 1e-3
# Below this total example weight the penalty grows in proportion, as if the loss were summed, not
# averaged: a model learnt from a handful of examples must stay unsure.
_L2_FULL_STRENGTH_WEIGHT = 500.0
_MAX_ITER = 150
_RELATIVE_TOLERANCE = 1e-5
_LBFGS_MEMORY = 8
# Temperature is fitted on held-out logits from this many folds, each refitted from the full model.
_CALIBRATION_FOLDS = 2
_FOLD_MAX_ITER = 15
_CALIBRATION_MIN_PER_ROUTE = 4
# Below that there is too little data to calibrate: a handful of examples should not sound certain.
_SMALL_DATA_TEMPERATURE = 1.0
# Confidence is shrunk towards uniform when fewer than this share of a message's words are known.
_FULL_TRUST_COVERAGE = 0.5


@dataclass(frozen=True)
class LabeledText:
    text: str
    route: str


@dataclass(frozen=True)
class Prediction:
    route: str
    confidence: float
    # Calibrated probability for every configured route, summing to 1.
    scores: Mapping[str, float]


# --------------------------------------------------------------------------- text to features

_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": "", "\u00b4": ""})
_SLACK_LINK = re.compile(r"<(?:https?://|mailto:)[^>|]*\|([^>]*)>")
_SLACK_MARKUP = re.compile(r"<[@#!][^>]*>|<(?:https?://|mailto:)[^>]*>|https?://\S+")
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):")
_WORD = re.compile(r"[^\W_]+")

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
    return _terms_of(words(text))


def _terms_of(tokens: list[str]) -> Terms:
    word_terms = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    char_terms = [gram for token in tokens for gram in _char_grams(token)]
    return word_terms, char_terms


@functools.lru_cache(maxsize=65_536)
def _char_grams(token: str) -> tuple[str, ...]:
    """The token's character n-grams, padded with spaces; cached, as most tokens are common words."""
    padded = f" {token} "
    return tuple(padded[i : i + n] for n in _CHAR_NGRAMS for i in range(len(padded) - n + 1))


@dataclass(frozen=True)
class _Vocabulary:
    """Term -> feature index for both groups, and the inverse document frequencies; feature 0 is the bias."""

    index: tuple[Mapping[str, int], Mapping[str, int]]
    idf: FloatArray

    @property
    def size(self) -> int:
        return len(self.idf)

    @classmethod
    def fit(cls, documents: Sequence[Terms]) -> tuple[_Vocabulary, tuple[IntArray, IntArray, FloatArray]]:
        """The vocabulary of `documents` and their encoding, counted in one pass."""
        word_table: dict[str, int] = {}
        char_table: dict[str, int] = {}
        word_rows: list[int] = []
        word_ids: list[int] = []
        char_rows: list[int] = []
        char_ids: list[int] = []
        for row, (word_terms, char_terms) in enumerate(documents):
            word_ids += [word_table.setdefault(term, len(word_table)) for term in word_terms]
            word_rows += [row] * len(word_terms)
            char_ids += [char_table.setdefault(term, len(char_table)) for term in char_terms]
            char_rows += [row] * len(char_terms)
        n_words, n_chars = len(word_table), len(char_table)
        # Feature 0 is the bias, then the words, then the character n-grams.
        rows = np.array(word_rows + char_rows, dtype=np.int64)
        raw = np.concatenate([np.array(word_ids, dtype=np.int64) + 1,
                              np.array(char_ids, dtype=np.int64) + 1 + n_words])
        width = 1 + n_words + n_chars
        pairs, counts = np.unique(rows * width + raw, return_counts=True)
        pair_rows, pair_terms = pairs // width, pairs % width
        df = np.bincount(pair_terms, minlength=width).astype(np.float64)
        # Character n-grams seen in one text only are mostly noise, and there are many of them.
        min_char_df = 2 if len(documents) >= 200 else 1
        keep = np.ones(width, dtype=bool)
        keep[1 + n_words :] = df[1 + n_words :] >= min_char_df
        new_id = np.cumsum(keep) - 1
        idf = np.log((1.0 + len(documents)) / (1.0 + df[keep])) + 1.0
        idf[0] = 1.0
        char_index = {term: int(new_id[1 + n_words + i]) for term, i in char_table.items()
                      if keep[1 + n_words + i]}
        word_index = {term: i + 1 for term, i in word_table.items()}
        vocabulary = cls(index=(word_index, char_index), idf=idf)
        kept = keep[pair_terms]
        entries = (pair_rows[kept], new_id[pair_terms[kept]], counts[kept])
        return vocabulary, vocabulary._weigh(len(documents), *entries)

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

    def _weigh(self, n_rows: int, rows: IntArray, cols: IntArray, counts: IntArray) -> tuple[
        IntArray, IntArray, FloatArray
    ]:
        """Sublinear TF-IDF values, each group L2-normalised and weighted, with a bias entry per row."""
        n_words = len(self.index[0])
        group = np.where(cols <= n_words, 0, 1)
        values = (1.0 + np.log(counts.astype(np.float64))) * self.idf[cols]
        cell = rows * 2 + group
        norms = np.sqrt(np.bincount(cell, weights=values * values, minlength=2 * n_rows))
        values *= np.array([_WORD_GROUP_WEIGHT, _CHAR_GROUP_WEIGHT])[group] / norms[cell]
        # Prepend the bias to every row, keeping rows grouped and in order.
        all_rows = np.concatenate([np.arange(n_rows, dtype=np.int64), rows])
        order = np.argsort(all_rows, kind="stable")
        all_cols = np.concatenate([np.zeros(n_rows, dtype=np.int64), cols])
        all_values = np.concatenate([np.ones(n_rows), values])
        return all_rows[order], all_cols[order], all_values[order]


@dataclass(frozen=True)
class _SparseRows:
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
    def build(cls, n_rows: int, rows: IntArray, cols: IntArray, values: FloatArray) -> _SparseRows:
        """Entries must be grouped by row in order, and every row must have one (the bias does that)."""
        row_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        by_col = np.argsort(cols, kind="stable")
        col_ids, col_starts = np.unique(cols[by_col], return_index=True)
        return cls(n_rows, rows, cols, values, row_starts, rows[by_col], values[by_col],
                   col_ids, col_starts.astype(np.int64))

    def subset(self, keep: IntArray) -> _SparseRows:
        """The rows in `keep` (sorted), renumbered from zero."""
        wanted = np.zeros(self.n_rows, dtype=bool)
        wanted[keep] = True
        new_number = np.cumsum(wanted) - 1
        entries = wanted[self.rows]
        return _SparseRows.build(len(keep), new_number[self.rows[entries]], self.cols[entries],
                                 self.values[entries])

    def dot(self, weights: FloatArray) -> FloatArray:
        """X @ W for W of shape (features, classes)."""
        # np.take is several times faster than fancy indexing for gathering rows.
        products = np.take(weights, self.cols, axis=0)
        products *= self.values[:, None]
        result: FloatArray = np.add.reduceat(products, self.row_starts, axis=0)
        return result

    def transpose_dot(self, gradient: FloatArray, n_features: int) -> FloatArray:
        """X.T @ G for G of shape (rows, classes)."""
        products = np.take(gradient, self.rows_by_col, axis=0)
        products *= self.values_by_col[:, None]
        result = np.zeros((n_features, gradient.shape[1]))
        result[self.col_ids] = np.add.reduceat(products, self.col_starts, axis=0)
        return result


# --------------------------------------------------------------------------- fitting
#
# Vector products go through np.einsum, not `@`: on a busy two-core machine OpenBLAS's threads
# turn a 60k-element dot product from microseconds into milliseconds, and training into seconds.


def _inner(a: FloatArray, b: FloatArray) -> float:
    return float(np.einsum("i,i->", a, b))


Objective = Callable[[FloatArray], tuple[float, FloatArray]]


@dataclass
class _Curvature:
    """L-BFGS memory: recent steps s and gradient changes y (stacked, s rows then y rows), their products."""

    pairs: FloatArray
    sy: FloatArray  # sy[i, j] = s_i . y_j, in buffer slots
    yy: FloatArray
    order: list[int]  # buffer slots, oldest first

    @classmethod
    def empty(cls, memory: int, dim: int) -> _Curvature:
        return cls(np.zeros((2 * memory, dim)), np.zeros((memory, memory)), np.zeros((memory, memory)), [])

    def copy(self) -> _Curvature:
        return _Curvature(self.pairs.copy(), self.sy.copy(), self.yy.copy(), list(self.order))

    def direction(self, g: FloatArray) -> FloatArray:
        """-H g in the compact form of Byrd, Nocedal and Schnabel (1994): two BLAS products, no Python loop."""
        if not self.order:
            return -g / max(math.sqrt(_inner(g, g)), 1e-12)
        memory = len(self.sy)
        idx = np.array(self.order)
        newest = self.order[-1]
        gamma = self.sy[newest, newest] / self.yy[newest, newest]
        projections = np.einsum("ij,j->i", self.pairs, g)
        block = self.sy[np.ix_(idx, idx)]
        upper = np.triu(block)
        u = np.linalg.solve(upper, projections[idx])
        rhs = (np.diag(np.diag(block)) + gamma * self.yy[np.ix_(idx, idx)]) @ u - gamma * projections[memory + idx]
        coefficients = np.zeros(2 * memory)
        coefficients[idx] = np.linalg.solve(upper.T, rhs)
        coefficients[memory + idx] = -gamma * u
        result: FloatArray = -(gamma * g + np.einsum("i,ij->j", coefficients, self.pairs))
        return result

    def remember(self, s_vec: FloatArray, y_vec: FloatArray) -> None:
        if _inner(s_vec, y_vec) <= 1e-12:
            return
        memory = len(self.sy)
        slot = self.order.pop(0) if len(self.order) == memory else len(self.order)
        self.order.append(slot)
        self.pairs[slot], self.pairs[memory + slot] = s_vec, y_vec
        with_s = np.einsum("ij,j->i", self.pairs, s_vec)
        with_y = np.einsum("ij,j->i", self.pairs, y_vec)
        self.sy[slot, :] = with_s[memory:]
        self.sy[:, slot] = with_y[:memory]
        self.yy[slot, :] = self.yy[:, slot] = with_y[memory:]


def _lbfgs(objective: Objective, x0: FloatArray, max_iter: int, curvature: _Curvature) -> FloatArray:
    """Minimise a smooth convex objective by L-BFGS with a backtracking Armijo line search.

    `curvature` is updated in place; passing the memory of a fit on nearly the same data makes a
    warm-started refit converge in a few steps.
    """
    x = x0
    f, g = objective(x)
    for _ in range(max_iter):
        direction = curvature.direction(g)
        slope = _inner(g, direction)
        if slope >= 0:
            curvature.order.clear()
            direction = curvature.direction(g)
            slope = _inner(g, direction)
        step = 1.0
        while True:
            candidate = x + step * direction
            f_new, g_new = objective(candidate)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        curvature.remember(candidate - x, g_new - g)
        converged = abs(f - f_new) < _RELATIVE_TOLERANCE * max(1.0, abs(f))
        x, f, g = candidate, f_new, g_new
        if converged:
            break
    return x


def _fit_logistic(
    x: _SparseRows,
    labels: IntArray,
    sample_weights: FloatArray,
    n_features: int,
    n_classes: int,
    l2: float,
    curvature: _Curvature,
    start: FloatArray | None = None,
    max_iter: int = _MAX_ITER,
) -> FloatArray:
    """Multinomial logistic regression, L2-penalised (bias excepted), weights of shape (features, classes)."""
    target = np.zeros((x.n_rows, n_classes))
    target[np.arange(x.n_rows), labels] = 1.0
    weights = sample_weights / sample_weights.sum()
    penalty = np.full((n_features, 1), l2)
    penalty[0] = 0.0

    def loss_and_gradient(flat: FloatArray) -> tuple[float, FloatArray]:
        w = flat.reshape(n_features, n_classes)
        logits = x.dot(w)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        penalised = w * penalty
        loss = -float(np.einsum("ij,ij,i->", log_probs, target, weights)) + 0.5 * _inner(penalised.ravel(), flat)
        residual = (np.exp(log_probs) - target) * weights[:, None]
        gradient = x.transpose_dot(residual, n_features) + penalised
        return loss, gradient.ravel()

    initial = np.zeros(n_features * n_classes) if start is None else start.ravel().copy()
    return _lbfgs(loss_and_gradient, initial, max_iter, curvature).reshape(n_features, n_classes)


def _fit_temperature(logits: FloatArray, labels: IntArray, sample_weights: FloatArray) -> float:
    """The temperature minimising the weighted log-loss of held-out logits (golden-section search on log T)."""
    weights = sample_weights / sample_weights.sum()
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return -_inner(weights, log_probs[rows, labels])

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(30):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2.0)


def _stratified_folds(labels: IntArray, groups: Sequence[object], folds: int) -> list[IntArray]:
    """Deterministic stratified folds that keep copies of one text together (else held-out is not held out)."""
    assignment = np.zeros(len(labels), dtype=np.int64)
    fold_of: dict[tuple[int, object], int] = {}
    seen_per_label: Counter[int] = Counter()
    for row, (label, group) in enumerate(zip(labels.tolist(), groups, strict=True)):
        key = (label, group)
        if key not in fold_of:
            fold_of[key] = seen_per_label[label] % folds
            seen_per_label[label] += 1
        assignment[row] = fold_of[key]
    return [np.flatnonzero(assignment == f) for f in range(folds)]


def _softmax(logits: FloatArray) -> FloatArray:
    exp = np.exp(logits - logits.max())
    result: FloatArray = exp / exp.sum()
    return result


# --------------------------------------------------------------------------- the classifier


class LocalClassifier:
    """Routes a text to one of `routes`; `Prediction.scores` are calibrated probabilities."""

    def __init__(
        self,
        routes: Sequence[str],
        trained_routes: Sequence[str],
        fallback: str,
        vocabulary: _Vocabulary | None = None,
        weights: FloatArray | None = None,
        temperature: float = _SMALL_DATA_TEMPERATURE,
    ) -> None:
        self.routes = tuple(routes)
        # Routes with at least one example; the others always score 0.
        self.trained_routes = tuple(trained_routes)
        self.fallback = fallback
        self.temperature = temperature
        self._vocabulary = vocabulary
        self._weights = weights

    @classmethod
    def train(
        cls,
        examples: Sequence[LabeledText],
        routes: Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        fallback: str | None = None,
    ) -> LocalClassifier:
        """Fit on `examples`, each scaled by its weight; examples of a route not in `routes` are ignored.

        `fallback` (default: the first route) takes texts the classifier knows nothing about.
        """
        route_list = list(dict.fromkeys(routes))
        if not route_list:
            raise ValueError("a classifier needs at least one route")
        chosen_fallback = fallback if fallback in route_list else route_list[0]
        given = [1.0] * len(examples) if weights is None else [float(w) for w in weights]
        if len(given) != len(examples):
            raise ValueError(f"got {len(given)} weights for {len(examples)} examples")
        usable = [(e, w) for e, w in zip(examples, given, strict=True) if e.route in route_list and w > 0]
        present = {e.route for e, _ in usable}
        trained_routes = [route for route in route_list if route in present]
        if len(trained_routes) < 2:
            # One route or none: nothing to tell apart.
            return cls(route_list, trained_routes, chosen_fallback)

        documents = [terms(example.text) for example, _ in usable]
        vocabulary, encoded = _Vocabulary.fit(documents)
        x = _SparseRows.build(len(documents), *encoded)
        class_of = {route: i for i, route in enumerate(trained_routes)}
        labels = np.array([class_of[e.route] for e, _ in usable], dtype=np.int64)
        base = np.array([w for _, w in usable])
        # Balance routes, so that a route with few examples still carries its share of the loss.
        totals = np.bincount(labels, weights=base, minlength=len(trained_routes))
        balanced = base * (totals.sum() / (len(trained_routes) * totals[labels]))
        n_features, n_classes = vocabulary.size, len(trained_routes)
        l2 = _L2 * max(1.0, _L2_FULL_STRENGTH_WEIGHT / float(base.sum()))
        curvature = _Curvature.empty(_LBFGS_MEMORY, n_features * n_classes)
        fitted = _fit_logistic(x, labels, balanced, n_features, n_classes, l2, curvature)
        temperature = _SMALL_DATA_TEMPERATURE
        if int(np.bincount(labels).min()) >= _CALIBRATION_MIN_PER_ROUTE:
            texts = [tuple(word_terms) for word_terms, _ in documents]
            temperature = cls._calibrate(x, labels, texts, balanced, fitted, l2, curvature)
        return cls(route_list, trained_routes, chosen_fallback, vocabulary, fitted, temperature)

    @staticmethod
    def _calibrate(
        x: _SparseRows, labels: IntArray, texts: Sequence[object], weights: FloatArray, fitted: FloatArray,
        l2: float, curvature: _Curvature,
    ) -> float:
        """Temperature scaling on out-of-fold logits; each fold's model is refitted from the full one."""
        n_features, n_classes = fitted.shape
        held_out = np.zeros((len(labels), n_classes))
        everything = np.arange(len(labels))
        for fold in _stratified_folds(labels, texts, _CALIBRATION_FOLDS):
            if not 0 < len(fold) < len(labels):
                return _SMALL_DATA_TEMPERATURE
            rest = np.setdiff1d(everything, fold)
            fold_weights = _fit_logistic(
                x.subset(rest), labels[rest], weights[rest], n_features, n_classes, l2,
                curvature.copy(), start=fitted, max_iter=_FOLD_MAX_ITER,
            )
            held_out[fold] = x.subset(fold).dot(fold_weights)
        return _fit_temperature(held_out, labels, weights)

    def predict(self, text: str) -> Prediction:
        found = self._logits(text)
        if found is None:
            # Nothing learnt, or nothing known in the text: no route is favoured and the fallback takes it.
            pool = self.trained_routes if len(self.trained_routes) > 1 else self.routes
            scores = {route: (1.0 / len(pool) if route in pool else 0.0) for route in self.routes}
            route = self.fallback if self.fallback in pool else pool[0]
            return Prediction(route=route, confidence=scores[route], scores=scores)
        logits, coverage = found
        probabilities = _softmax(logits / self.temperature)
        # The classifier can be no surer than the share of the message it recognises: gibberish,
        # another language or a new topic drift towards "no idea" and, in hybrid mode, to Claude.
        trust = min(1.0, coverage / _FULL_TRUST_COVERAGE)
        probabilities = trust * probabilities + (1.0 - trust) / len(probabilities)
        scores = dict.fromkeys(self.routes, 0.0)
        scores.update(zip(self.trained_routes, probabilities.tolist(), strict=True))
        best = self.trained_routes[int(np.argmax(logits))]
        return Prediction(route=best, confidence=scores[best], scores=scores)

    def predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        return [self.predict(text) for text in texts]

    def _logits(self, text: str) -> tuple[FloatArray, float] | None:
        """The text's logits, and the share of its words the vocabulary knows; None when nothing is known."""
        if self._vocabulary is None or self._weights is None:
            return None
        tokens = words(text)
        _, cols, values = self._vocabulary.encode([_terms_of(tokens)])
        if len(cols) == 1:
            return None
        known = self._vocabulary.index[0]
        coverage = sum(token in known for token in tokens) / len(tokens)
        logits: FloatArray = np.einsum("i,ij->j", values, self._weights[cols])
        return logits, coverage


# --------------------------------------------------------------------------- data and the router


def shipped_training_data() -> list[LabeledText]:
    """The attributed training set shipped in `bot/router/data/training.jsonl` (see the README there)."""
    raw = resources.files("bot.router").joinpath("data", SHIPPED_DATA_RESOURCE).read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [LabeledText(text=str(row["text"]), route=str(row["route"])) for row in rows]


def config_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """The routes' `examples` from the config, weighted as the operator's own words."""
    return [
        (LabeledText(text=example, route=name), CONFIG_EXAMPLE_WEIGHT)
        for name, route in config.routes.items()
        for example in route.examples
    ]


def training_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """What `LocalRouter.from_config` trains on, weighted: the routes' examples, then the shipped rows."""
    examples = config_examples(config)
    if config.router.use_shipped_training_data:
        examples.extend((row, 1.0) for row in shipped_training_data() if row.route in config.routes)
    return examples


class LocalRouter:
    """The `Router` for mode "local": the classifier trained on config examples, shipped data and corrections."""

    name = "local"

    def __init__(
        self,
        classifier: LocalClassifier,
        examples: Sequence[tuple[LabeledText, float]] = (),
        corrections: Sequence[LabeledText] = (),
    ) -> None:
        self.classifier = classifier
        self.corrections = tuple(corrections)
        self._examples = tuple(examples)
        self._corrected = {normalized_key(c.text): c.route for c in self.corrections}

    @classmethod
    def from_config(cls, config: Config, corrections: Sequence[LabeledText] = ()) -> LocalRouter:
        return cls.from_examples(
            config.route_names, training_examples(config),
            fallback=config.fallback_route, corrections=corrections,
        )

    @classmethod
    def from_examples(
        cls,
        routes: Sequence[str],
        examples: Sequence[tuple[LabeledText, float]],
        *,
        fallback: str,
        corrections: Sequence[LabeledText] = (),
    ) -> LocalRouter:
        """Train on weighted `examples` and `corrections`; a correction replaces examples of the same text."""
        valid = [c for c in corrections if c.route in routes]
        kept = list(examples)
        if valid:
            overridden = {normalized_key(c.text) for c in valid}
            kept = [(e, w) for e, w in kept if normalized_key(e.text) not in overridden]
        classifier = LocalClassifier.train(
            [e for e, _ in kept] + valid,
            routes,
            weights=[w for _, w in kept] + [CORRECTION_WEIGHT] * len(valid),
            fallback=fallback,
        )
        return cls(classifier, examples, valid)

    def retrain(self, corrections: Sequence[LabeledText]) -> LocalRouter:
        """A new router trained with `corrections`, the complete current list (earlier ones not in it are dropped).

        Training takes a few hundred milliseconds: call it in a worker thread, not on the event loop.
        """
        return self.from_examples(
            self.classifier.routes, self._examples,
            fallback=self.classifier.fallback, corrections=corrections,
        )

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        started = time.perf_counter()
        corrected = self._corrected.get(normalized_key(text)) if self._corrected else None
        if corrected is not None:
            return RouteDecision(
                route=corrected,
                confidence=1.0,
                decided_by="local",
                reason=f"local classifier: {corrected} (a reviewer corrected this exact message)",
                scores={route: float(route == corrected) for route in self.classifier.routes},
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        prediction = self.classifier.predict(text)
        return RouteDecision(
            route=prediction.route,
            confidence=prediction.confidence,
            decided_by="local",
            reason=describe(prediction),
            scores=prediction.scores,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def describe(prediction: Prediction) -> str:
    """The decision's reason, e.g. "local classifier: billing 0.91 (next technical 0.05)"."""
    reason = f"local classifier: {prediction.route} {prediction.confidence:.2f}"
    others = sorted(((p, r) for r, p in prediction.scores.items() if r != prediction.route), reverse=True)
    if others:
        reason += f" (next {others[0][1]} {others[0][0]:.2f})"
    return reason
