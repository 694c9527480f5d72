"""The local router: a small numpy TF-IDF + logistic-regression classifier, trained at start-up, with calibrated confidence."""

from __future__ import annotations

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
# Reviewer corrections are ground truth; route examples from the config are the operator's own words.
CORRECTION_WEIGHT = 6.0
CONFIG_EXAMPLE_WEIGHT = 2.0
SHIPPED_DATA_RESOURCE = "training.jsonl"

# Model settings chosen with benchmarks/router_quality.py (see its README section in the report).
_WORD_GROUP_WEIGHT = 1.0
_CHAR_GROUP_WEIGHT = 1.0
_L2 = 1e-3
_MAX_ITER = 150
_CALIBRATION_FOLDS = 4
_CALIBRATION_MIN_PER_ROUTE = 4
# With too little data to calibrate, stay modest: a handful of examples should not sound certain.
_SMALL_DATA_TEMPERATURE = 1.0


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


def _terms(tokens: list[str]) -> tuple[Counter[str], Counter[str]]:
    """Word unigrams and bigrams, and character 3- to 5-grams inside each word (typos, inflections)."""
    word_terms: Counter[str] = Counter(tokens)
    word_terms.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
    char_terms: Counter[str] = Counter()
    for token in tokens:
        padded = f" {token} "
        size = len(padded)
        for n in (3, 4, 5):
            if n > size:
                break
            char_terms.update(padded[i : i + n] for i in range(size - n + 1))
    return word_terms, char_terms


@dataclass(frozen=True)
class _Vocabulary:
    word_index: Mapping[str, int]
    char_index: Mapping[str, int]
    idf: FloatArray
    size: int

    @classmethod
    def build(cls, documents: Sequence[tuple[Counter[str], Counter[str]]]) -> _Vocabulary:
        word_df: Counter[str] = Counter()
        char_df: Counter[str] = Counter()
        for word_terms, char_terms in documents:
            word_df.update(word_terms.keys())
            char_df.update(char_terms.keys())
        # Feature 0 is the bias; character n-grams seen once are mostly noise and cost memory.
        min_char_df = 2 if len(documents) >= 200 else 1
        word_index = {term: i + 1 for i, term in enumerate(sorted(word_df))}
        kept_chars = sorted(term for term, df in char_df.items() if df >= min_char_df)
        char_index = {term: i + 1 + len(word_index) for i, term in enumerate(kept_chars)}
        size = 1 + len(word_index) + len(char_index)
        df = np.ones(size)
        for term, i in word_index.items():
            df[i] = word_df[term]
        for term, i in char_index.items():
            df[i] = char_df[term]
        n = len(documents)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        idf[0] = 1.0
        return cls(word_index=word_index, char_index=char_index, idf=idf, size=size)

    def vectorize(self, terms: tuple[Counter[str], Counter[str]]) -> tuple[IntArray, FloatArray]:
        """Sparse TF-IDF row: each group L2-normalised, then weighted; index 0 is the constant bias."""
        indices: list[int] = [0]
        values: list[float] = [1.0]
        for counts, index, group_weight in (
            (terms[0], self.word_index, _WORD_GROUP_WEIGHT),
            (terms[1], self.char_index, _CHAR_GROUP_WEIGHT),
        ):
            group_idx = [index[t] for t in counts if t in index]
            if not group_idx:
                continue
            tf = np.array([1.0 + math.log(counts[t]) for t in counts if t in index])
            ids = np.array(group_idx, dtype=np.int64)
            weights = tf * self.idf[ids]
            weights *= group_weight / float(np.sqrt(weights @ weights))
            indices.extend(group_idx)
            values.extend(weights.tolist())
        return np.array(indices, dtype=np.int64), np.array(values)


@dataclass(frozen=True)
class _SparseRows:
    """Rows of a sparse matrix as flat arrays, with the orderings numpy needs for both products."""

    cols: IntArray
    values: FloatArray
    n_rows: int
    row_starts: IntArray
    # The same entries ordered by column, for the transposed product.
    rows_by_col: IntArray
    values_by_col: FloatArray
    col_ids: IntArray
    col_starts: IntArray

    @classmethod
    def build(cls, vectors: Sequence[tuple[IntArray, FloatArray]]) -> _SparseRows:
        lengths = np.array([len(idx) for idx, _ in vectors], dtype=np.int64)
        rows = np.repeat(np.arange(len(vectors), dtype=np.int64), lengths)
        cols = np.concatenate([idx for idx, _ in vectors])
        values = np.concatenate([val for _, val in vectors])
        row_starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        col_order = np.argsort(cols, kind="stable")
        sorted_cols = cols[col_order]
        col_ids, col_starts = np.unique(sorted_cols, return_index=True)
        return cls(cols, values, len(vectors), row_starts, rows[col_order], values[col_order],
                   col_ids, col_starts.astype(np.int64))

    def subset(self, keep: IntArray) -> _SparseRows:
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[keep] = True
        vectors = []
        for r in np.flatnonzero(mask):
            start = self.row_starts[r]
            end = self.row_starts[r + 1] if r + 1 < self.n_rows else len(self.cols)
            vectors.append((self.cols[start:end], self.values[start:end]))
        return _SparseRows.build(vectors)

    def dot(self, weights: FloatArray) -> FloatArray:
        """X @ W for W of shape (features, classes); every row has the bias so none is empty."""
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


# --------------------------------------------------------------------------- the model


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: FloatArray = exp / exp.sum(axis=1, keepdims=True)
    return result


def _fit_logistic(
    x: _SparseRows,
    labels: IntArray,
    sample_weights: FloatArray,
    n_features: int,
    n_classes: int,
    start: FloatArray | None = None,
    max_iter: int = _MAX_ITER,
) -> FloatArray:
    """Multinomial logistic regression with an L2 penalty (bias unpenalised), minimised by L-BFGS."""
    target = np.zeros((x.n_rows, n_classes))
    target[np.arange(x.n_rows), labels] = 1.0
    weights = sample_weights / sample_weights.sum()
    penalty = np.ones((n_features, 1))
    penalty[0] = 0.0

    def loss_and_gradient(flat: FloatArray) -> tuple[float, FloatArray]:
        w = flat.reshape(n_features, n_classes)
        logits = x.dot(w)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        loss = -float(weights @ (log_probs * target).sum(axis=1))
        loss += 0.5 * _L2 * float(((w * penalty) ** 2).sum())
        residual = (np.exp(log_probs) - target) * weights[:, None]
        grad = x.transpose_dot(residual, n_features) + _L2 * w * penalty
        return loss, grad.ravel()

    initial = np.zeros(n_features * n_classes) if start is None else start.ravel().copy()
    solution = _lbfgs(loss_and_gradient, initial, max_iter=max_iter)
    return solution.reshape(n_features, n_classes)


def _lbfgs(
    objective: Objective, x0: FloatArray, max_iter: int, memory: int = 8, tolerance: float = 1e-6
) -> FloatArray:
    """Limited-memory BFGS in its compact matrix form (Byrd, Nocedal and Schnabel 1994).

    The matrix form does the two-loop recursion's work in a few BLAS calls, which matters in numpy;
    a backtracking Armijo line search is enough for a smooth convex loss.
    """
    x = x0
    f, g = objective(x)
    dim = len(x)
    s_rows = np.zeros((memory, dim))
    y_rows = np.zeros((memory, dim))
    sy = np.zeros((memory, memory))  # sy[i, j] = s_i . y_j, in buffer order
    yy = np.zeros((memory, memory))
    order: list[int] = []  # buffer slots, oldest first
    for _ in range(max_iter):
        if float(np.abs(g).max()) < tolerance:
            break
        if order:
            idx = np.array(order)
            newest = order[-1]
            gamma = sy[newest, newest] / yy[newest, newest]
            a = s_rows[idx] @ g if len(order) < memory else (s_rows @ g)[idx]
            b = y_rows[idx] @ g if len(order) < memory else (y_rows @ g)[idx]
            block = sy[np.ix_(idx, idx)]
            r = np.triu(block)
            u = np.linalg.solve(r, a)
            top = np.linalg.solve(r.T, (np.diag(np.diag(block)) + gamma * yy[np.ix_(idx, idx)]) @ u
                                  - gamma * b)
            direction = -(gamma * g + top @ s_rows[idx] - gamma * (u @ y_rows[idx]))
        else:
            direction = -g / max(float(np.abs(g).sum()), 1e-12)
        slope = float(g @ direction)
        if slope >= 0:
            order.clear()
            direction = -g / max(float(np.abs(g).sum()), 1e-12)
            slope = float(g @ direction)
        step = 1.0
        while True:
            candidate = x + step * direction
            f_new, g_new = objective(candidate)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s_vec, y_vec = candidate - x, g_new - g
        if float(s_vec @ y_vec) > 1e-12:
            slot = order.pop(0) if len(order) == memory else len(order)
            order.append(slot)
            s_rows[slot], y_rows[slot] = s_vec, y_vec
            sy[slot, :] = y_rows @ s_vec
            sy[:, slot] = s_rows @ y_vec
            yy[slot, :] = yy[:, slot] = y_rows @ y_vec
        converged = abs(f - f_new) < 1e-7 * max(1.0, abs(f))
        x, f, g = candidate, f_new, g_new
        if converged:
            break
    return x


Objective = Callable[[FloatArray], tuple[float, FloatArray]]


def _fit_temperature(logits: FloatArray, labels: IntArray, sample_weights: FloatArray) -> float:
    """The temperature that minimises the weighted log-loss of held-out logits (golden-section on log T)."""
    weights = sample_weights / sample_weights.sum()

    def nll(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        shifted = scaled - scaled.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -float(weights @ log_probs[np.arange(len(labels)), labels])

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2.0)


def _stratified_folds(labels: IntArray, folds: int) -> list[IntArray]:
    """Deterministic stratified folds: the i-th example of each class goes to fold i mod folds."""
    assignment = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        assignment[members] = np.arange(len(members)) % folds
    return [np.flatnonzero(assignment == f) for f in range(folds)]


class LocalClassifier:
    """Routes a text to one of `routes`; `Prediction.scores` are calibrated probabilities."""

    def __init__(
        self,
        routes: Sequence[str],
        vocabulary: _Vocabulary | None,
        weights: FloatArray,
        trained_routes: Sequence[str],
        temperature: float,
        fallback: str,
    ) -> None:
        self.routes = tuple(routes)
        self.trained_routes = tuple(trained_routes)
        self.temperature = temperature
        self.fallback = fallback
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
        """Fit on `examples` (those naming a route outside `routes` are ignored); `weights` scale examples."""
        if not routes:
            raise ValueError("a classifier needs at least one route")
        route_list = list(dict.fromkeys(routes))
        chosen_fallback = fallback if fallback in route_list else route_list[0]
        given = [1.0] * len(examples) if weights is None else [float(w) for w in weights]
        if len(given) != len(examples):
            raise ValueError("weights must have one value per example")
        usable = [
            (example, weight)
            for example, weight in zip(examples, given, strict=True)
            if example.route in route_list and weight > 0
        ]
        trained_routes = [r for r in route_list if any(e.route == r for e, _ in usable)]
        if len(trained_routes) < 2:
            empty = np.zeros((1, max(len(trained_routes), 1)))
            return cls(route_list, None, empty, trained_routes, 1.0, chosen_fallback)

        documents = [_terms(words(example.text)) for example, _ in usable]
        vocabulary = _Vocabulary.build(documents)
        x = _SparseRows.build([vocabulary.vectorize(doc) for doc in documents])
        class_of = {route: i for i, route in enumerate(trained_routes)}
        labels = np.array([class_of[e.route] for e, _ in usable], dtype=np.int64)
        base = np.array([w for _, w in usable])
        # Balance routes so that a route with few examples still gets its share of the loss.
        totals = np.bincount(labels, weights=base, minlength=len(trained_routes))
        balanced = base * (totals.sum() / (len(trained_routes) * totals[labels]))
        n_features, n_classes = vocabulary.size, len(trained_routes)
        fitted = _fit_logistic(x, labels, balanced, n_features, n_classes)

        counts = np.bincount(labels, minlength=n_classes)
        temperature = _SMALL_DATA_TEMPERATURE
        if int(counts.min()) >= _CALIBRATION_MIN_PER_ROUTE:
            held_out_logits = np.zeros((len(labels), n_classes))
            for fold in _stratified_folds(labels, _CALIBRATION_FOLDS):
                train_rows = np.setdiff1d(np.arange(len(labels)), fold)
                fold_weights = _fit_logistic(
                    x.subset(train_rows), labels[train_rows], balanced[train_rows],
                    n_features, n_classes, start=fitted, max_iter=_MAX_ITER // 3,
                )
                held_out_logits[fold] = x.subset(fold).dot(fold_weights)
            temperature = _fit_temperature(held_out_logits, labels, balanced)
        return cls(route_list, vocabulary, fitted, trained_routes, temperature, chosen_fallback)

    def predict(self, text: str) -> Prediction:
        probabilities = self._probabilities(text)
        if probabilities is None:
            # Nothing known in the text (or nothing learnt): no route is favoured, the fallback takes it.
            share = 1.0 / len(self.trained_routes) if self.trained_routes else 1.0 / len(self.routes)
            pool = self.trained_routes or self.routes
            scores = {route: (share if route in pool else 0.0) for route in self.routes}
            route = self.fallback if self.fallback in pool else pool[0]
            return Prediction(route=route, confidence=scores[route], scores=scores)
        scores = dict.fromkeys(self.routes, 0.0)
        for route, probability in zip(self.trained_routes, probabilities.tolist(), strict=True):
            scores[route] = probability
        best = max(self.trained_routes, key=lambda r: scores[r])
        return Prediction(route=best, confidence=scores[best], scores=scores)

    def predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        return [self.predict(text) for text in texts]

    def _probabilities(self, text: str) -> FloatArray | None:
        if self._vocabulary is None:
            return None
        indices, values = self._vocabulary.vectorize(_terms(words(text)))
        if len(indices) == 1:
            return None
        logits = values @ self._weights[indices]
        return _softmax((logits / self.temperature)[None, :])[0]


# --------------------------------------------------------------------------- data and the router


def shipped_training_data() -> list[LabeledText]:
    """The attributed training set shipped in `bot/router/data/training.jsonl` (see its README)."""
    raw = resources.files("bot.router").joinpath("data", SHIPPED_DATA_RESOURCE).read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [LabeledText(text=str(row["text"]), route=str(row["route"])) for row in rows]


def normalized_key(text: str) -> str:
    """The text as the classifier sees it, for spotting the same message written differently."""
    return " ".join(words(text))


def config_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """The routes' `examples` from the config, weighted as the operator's own words."""
    return [
        (LabeledText(text=example, route=name), CONFIG_EXAMPLE_WEIGHT)
        for name, route in config.routes.items()
        for example in route.examples
    ]


def training_examples(config: Config) -> list[tuple[LabeledText, float]]:
    """What `LocalRouter.from_config` trains on, with weights: the routes' examples, then the shipped rows."""
    routes = config.route_names
    examples = config_examples(config)
    if config.router.use_shipped_training_data:
        examples.extend((row, 1.0) for row in shipped_training_data() if row.route in routes)
    return examples


class LocalRouter:
    """The `Router` for mode "local": the classifier above, trained on config examples, shipped data and corrections."""

    name = "local"

    def __init__(
        self,
        classifier: LocalClassifier,
        base_examples: Sequence[tuple[LabeledText, float]],
        corrections: Sequence[LabeledText] = (),
    ) -> None:
        self.classifier = classifier
        self._base = tuple(base_examples)
        self._corrections = tuple(corrections)
        self._corrected = {normalized_key(c.text): c.route for c in corrections}

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
        """Train on weighted `examples` plus `corrections`, which outweigh and override examples of the same text."""
        valid = [c for c in corrections if c.route in routes]
        overridden = {normalized_key(c.text) for c in valid}
        kept = [(example, weight) for example, weight in examples if normalized_key(example.text) not in overridden]
        classifier = LocalClassifier.train(
            [e for e, _ in kept] + valid,
            routes,
            weights=[w for _, w in kept] + [CORRECTION_WEIGHT] * len(valid),
            fallback=fallback,
        )
        return cls(classifier, examples, valid)

    def retrain(self, corrections: Sequence[LabeledText]) -> LocalRouter:
        """A new router trained with `corrections`, the complete current list (earlier ones not in it are dropped).

        Training takes a few hundred milliseconds: call it from a worker thread, not the event loop.
        """
        return self.from_examples(
            self.classifier.routes, self._base,
            fallback=self.classifier.fallback, corrections=corrections,
        )

    async def route(self, text: str, context: RoutingContext | None = None) -> RouteDecision:
        started = time.perf_counter()
        corrected = self._corrected.get(normalized_key(text)) if self._corrected else None
        if corrected is not None:
            scores = {r: (1.0 if r == corrected else 0.0) for r in self.classifier.routes}
            return RouteDecision(
                route=corrected, confidence=1.0, decided_by="local",
                reason=f"local classifier: {corrected} (a reviewer corrected this exact message)",
                scores=scores, latency_ms=(time.perf_counter() - started) * 1000,
            )
        prediction = self.classifier.predict(text)
        return RouteDecision(
            route=prediction.route,
            confidence=prediction.confidence,
            decided_by="local",
            reason=describe_prediction(prediction),
            scores=prediction.scores,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def describe_prediction(prediction: Prediction) -> str:
    ranked = sorted(prediction.scores.items(), key=lambda item: -item[1])
    runner_up = next(((r, p) for r, p in ranked if r != prediction.route), None)
    text = f"local classifier: {prediction.route} {prediction.confidence:.2f}"
    if runner_up is not None:
        text += f" (next {runner_up[0]} {runner_up[1]:.2f})"
    return text
