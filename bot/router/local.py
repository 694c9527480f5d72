"""The local tiers: a topic classifier and a severity detector (numpy TF-IDF, logistic regression), calibrated held out.

Topic says which persona fits (the configured routes other than the escalation route); severity says
whether a person must come now (the escalation route's examples against every other one). Both read
the same features, are trained at start-up, and are calibrated on cross-validated held-out logits with
a temperature that rises as a message looks less like anything they learnt from: a message in another
language, a long incident report or a new domain's vocabulary comes out unsure and, in hybrid mode,
goes to Claude. Severity overrides topic: the escalation route's probability is the severity, every
other route gets its topic probability times (1 - severity).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import structlog

from bot.config import Config
from bot.router import store
from bot.router.base import RouteDecision, RoutingContext
from bot.router.features import (
    FloatArray,
    IntArray,
    NeighbourIndex,
    SparseRows,
    Vocabulary,
    normalized_key,
    terms,
    terms_of,
    words,
)
from bot.router.fitting import (
    LBFGS_MEMORY,
    Calibration,
    Curvature,
    fit_calibration,
    fit_logistic,
    stratified_folds,
)
from bot.router.training import LabeledText, training_examples

log = structlog.get_logger(__name__)

__all__ = ["CORRECTION_WEIGHT", "LabeledText", "LocalClassifier", "LocalRouter", "Prediction", "describe"]

# Reviewer corrections are ground truth.
CORRECTION_WEIGHT = 6.0

# Why numpy and not scikit-learn (`benchmarks/router_quality.py --compare-sklearn`): importing its text and
# linear-model modules takes 0.8 s on this 2-core machine, longer than training this model, and the same
# pipeline in scikit-learn trains several times slower and takes milliseconds, not ~0.1 ms, per message.
_L2 = 5e-4
# Below this total example weight the penalty grows in proportion, as if the loss were summed, not
# averaged: a model learnt from a handful of examples must stay unsure.
_L2_FULL_STRENGTH_WEIGHT = 500.0
# Calibration is fitted on held-out logits of this many folds, each model trained without its fold.
_CALIBRATION_FOLDS = 2
_FOLD_MAX_ITER = 60
_FULL_MAX_ITER = 150
# Escalations share few words with one another (a leaked key, a locked door, a CEO on the line): the
# severity detector is penalised less than the topic classifier, so that rarer cues still count.
_SEVERITY_L2 = 0.3
_CALIBRATION_MIN_PER_ROUTE = 20
_CALIBRATION_SAMPLE = 1000
# What "familiar" is made of: a constant, the cosine similarity to the nearest training text, the share
# of the message's words the vocabulary knows, and how long the message is (up to _LONG_WORDS words).
_FAMILIARITY_FEATURES = 4
_LONG_WORDS = 120
# Below this severity (the detector does not escalate) the reason does not name the words that raised it.
_SIGNAL_FLOOR = 0.5
_SIGNAL_WORDS = 3
# Words in more than about one text in twenty (idf below this) are too common to name as a reason.
_SIGNAL_MIN_IDF = 4.0
# From this many examples up, training runs in a child process (see _train_apart).
_APART_FROM = 500
# Trained classifiers kept for re-use: tests, `eval` and benchmarks build the same router many times.
_TRAINED_CACHE_SIZE = 2


@dataclass(frozen=True)
class Prediction:
    route: str
    confidence: float
    # Probability for every configured route, summing to 1.
    scores: Mapping[str, float]
    # The persona that fits, whatever the severity, and how sure the topic classifier is of it.
    topic: str
    topic_confidence: float
    # Probability that a person must come now; None when the routes have no escalation route to learn.
    severity: float | None = None
    # Cosine similarity of the message to the closest training text (0: nothing in common).
    nearest: float = 0.0
    # The words that raised the severity most, for the reason in the logs.
    signals: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Model:
    """Everything learnt: features, one weight matrix (topic columns, then the two severity columns)."""

    vocabulary: Vocabulary
    weights: npt.NDArray[np.float32]
    word_terms: tuple[str, ...]
    neighbours: NeighbourIndex
    topic_calibration: Calibration
    severity_calibration: Calibration


class LocalClassifier:
    """Routes a text to one of `routes`; `Prediction.scores` are calibrated probabilities."""

    def __init__(
        self,
        routes: Sequence[str],
        topic_routes: Sequence[str],
        fallback: str,
        escalation_route: str | None = None,
        model: _Model | None = None,
    ) -> None:
        self.routes = tuple(routes)
        # Routes with at least one example, the escalation route excepted; the others score 0 on topic.
        self.topic_routes = tuple(topic_routes)
        self.fallback = fallback
        # Set when the escalation route has examples to learn severity from.
        self.escalation_route = escalation_route
        self._model = model

    @classmethod
    def train(
        cls,
        examples: Sequence[LabeledText],
        routes: Sequence[str],
        *,
        weights: Sequence[float] | None = None,
        fallback: str | None = None,
        escalation_route: str | None = None,
    ) -> LocalClassifier:
        """Fit on `examples`, each scaled by its weight; examples of a route not in `routes` are ignored.

        `fallback` (default: the first route) takes texts the classifier knows nothing about. Examples of
        `escalation_route` teach the severity detector, all others the topic classifier (and severity's
        negatives). The same inputs give the same classifier, so a recent one is re-used.
        """
        route_list = list(dict.fromkeys(routes))
        if not route_list:
            raise ValueError("a classifier needs at least one route")
        given = [1.0] * len(examples) if weights is None else [float(w) for w in weights]
        if len(given) != len(examples):
            raise ValueError(f"got {len(given)} weights for {len(examples)} examples")
        rows = [(e.text, e.route, w) for e, w in zip(examples, given, strict=True)]
        digest = hashlib.sha256(json.dumps(
            [store.code_version(), route_list, fallback, escalation_route, rows]).encode()).hexdigest()
        cached = _TRAINED.get(digest)
        if cached is None:
            arguments = (list(examples), route_list, given, fallback, escalation_route)
            if len(examples) < _APART_FROM:
                cached = cls._train(*arguments)
            else:
                restored = cls._restored(digest)
                cached = restored or _train_apart(*arguments)
                if restored is None:
                    cached.store(digest)
            _TRAINED[digest] = cached
            while len(_TRAINED) > _TRAINED_CACHE_SIZE:
                _TRAINED.popitem(last=False)
        _TRAINED.move_to_end(digest)
        return cached

    @classmethod
    def _train(
        cls, examples: Sequence[LabeledText], route_list: list[str], given: list[float], fallback: str | None,
        escalation_route: str | None,
    ) -> LocalClassifier:
        chosen_fallback = fallback if fallback in route_list else route_list[0]
        usable = [(e, w) for e, w in zip(examples, given, strict=True) if e.route in route_list and w > 0]
        present = {e.route for e, _ in usable}
        escalation = escalation_route if escalation_route in present else None
        topic_routes = [route for route in route_list if route in present and route != escalation]
        has_negatives = any(e.route != escalation for e, _ in usable)
        if len(topic_routes) < 2 and not (escalation and has_negatives):
            # Nothing to tell apart.
            return cls(route_list, topic_routes, chosen_fallback)

        vocabulary, encoded = Vocabulary.fit(terms(example.text) for example, _ in usable)
        x = SparseRows.build(len(usable), *encoded)
        neighbours = NeighbourIndex.build(len(usable), len(vocabulary.index[0]), *encoded)
        base = np.array([w for _, w in usable])
        routes_of = np.array([route_list.index(e.route) for e, _ in usable], dtype=np.int64)
        topic_of = {route: i for i, route in enumerate(topic_routes)}
        topic_labels = np.array([topic_of.get(e.route, -1) for e, _ in usable], dtype=np.int64)
        severity_labels = np.array([int(e.route == escalation) for e, _ in usable], dtype=np.int64)
        l2 = _L2 * max(1.0, _L2_FULL_STRENGTH_WEIGHT / float(base.sum()))
        n_topics = len(topic_routes) if len(topic_routes) >= 2 else 0
        trainer = _Trainer(x, vocabulary.size, base, l2, topic_labels, severity_labels, n_topics,
                           escalation is not None and has_negatives)
        # Until calibrated: the escalations' share of the data is the prior of a text nothing is known about.
        share = float(base[severity_labels == 1].sum() / base.sum())
        prior = math.log(share / (1.0 - share)) if 0.0 < share < 1.0 else 0.0
        calibrations = (_untrusted(np.zeros(max(n_topics, 1))), _untrusted(np.array([0.0, prior])))
        starts: tuple[FloatArray | None, FloatArray | None] = (None, None)
        counts = np.bincount(routes_of)
        if int(counts[counts > 0].min()) >= _CALIBRATION_MIN_PER_ROUTE:
            folds = stratified_folds(routes_of, [normalized_key(e.text) for e, _ in usable], _CALIBRATION_FOLDS)
            # A few hundred held-out rows pin down a calibration's handful of parameters; measuring every
            # row's familiarity would take longer than training.
            sample = np.arange(0, x.n_rows, max(1, x.n_rows // _CALIBRATION_SAMPLE))
            familiarity = _held_out_familiarity(x, neighbours, [e.text for e, _ in usable], folds, sample)
            fitted, starts = trainer.calibrate(folds, familiarity, sample)
            calibrations = (fitted[0] or calibrations[0], fitted[1] or calibrations[1])
        weights = trainer.fit_all(starts)
        word_terms = tuple(sorted(vocabulary.index[0], key=vocabulary.index[0].__getitem__))
        model = _Model(vocabulary, weights, word_terms, neighbours, *calibrations)
        return cls(route_list, topic_routes, chosen_fallback, escalation, model)

    def store(self, key: str) -> None:
        """Save the model under `key` in the on-disk store (see bot/router/store.py)."""
        model = self._model
        if model is None:
            return
        words, chars = model.vocabulary.index
        meta = {"routes": list(self.routes), "topic_routes": list(self.topic_routes), "fallback": self.fallback,
                "escalation_route": self.escalation_route, "words": list(model.word_terms),
                "chars": sorted(chars, key=chars.__getitem__), "n_rows": model.neighbours.n_rows}
        store.save(key, meta, {
            "idf": model.vocabulary.idf, "weights": model.weights, "col_starts": model.neighbours.col_starts,
            "rows": model.neighbours.rows, "values": model.neighbours.values,
            "topic_scale": model.topic_calibration.scale, "topic_offsets": model.topic_calibration.offsets,
            "severity_scale": model.severity_calibration.scale,
            "severity_offsets": model.severity_calibration.offsets})

    @classmethod
    def _restored(cls, key: str) -> LocalClassifier | None:
        """The classifier saved under `key`, or None when there is none or it does not fit together."""
        found = store.load(key)
        if found is None:
            return None
        meta, arrays = found
        try:
            words, chars = [str(t) for t in meta["words"]], [str(t) for t in meta["chars"]]
            word_index = {term: i + 1 for i, term in enumerate(words)}
            char_index = {term: len(words) + 1 + i for i, term in enumerate(chars)}
            vocabulary = Vocabulary(index=(word_index, char_index), idf=arrays["idf"].astype(np.float64))
            weights = arrays["weights"].astype(np.float32)
            n_rows = int(meta["n_rows"])
            neighbours = NeighbourIndex(n_rows, arrays["col_starts"].astype(np.int64),
                                        arrays["rows"].astype(np.int32), arrays["values"].astype(np.float32))
            if not (weights.shape[0] == vocabulary.size == 1 + len(words) + len(chars)
                    and len(neighbours.col_starts) == len(words) + 2 and len(neighbours.rows) == len(neighbours.values)
                    and (len(neighbours.rows) == 0 or int(neighbours.rows.max()) < n_rows)):
                raise ValueError("arrays of different sizes")
            model = _Model(vocabulary, weights, tuple(words), neighbours,
                           Calibration(arrays["topic_scale"], arrays["topic_offsets"]),
                           Calibration(arrays["severity_scale"], arrays["severity_offsets"]))
            return cls([str(r) for r in meta["routes"]], [str(r) for r in meta["topic_routes"]],
                       str(meta["fallback"]), meta["escalation_route"], model)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("router_store_unusable", key=key, error=str(exc)[:200])
            return None

    def predict(self, text: str) -> Prediction:
        model = self._model
        pool = self._topic_pool()
        if model is None:
            return self._uniform(pool)
        tokens = words(text)
        cols, values = model.vocabulary.encode_one(terms_of(tokens))
        nearest = float(model.neighbours.similarities(cols, values).max()) if len(cols) > 1 else 0.0
        known = model.vocabulary.index[0]
        coverage = sum(token in known for token in tokens) / len(tokens) if tokens else 0.0
        familiarity = np.array([1.0, nearest, coverage, min(1.0, len(tokens) / _LONG_WORDS)])
        logits: FloatArray = np.einsum("i,ij->j", values, model.weights[cols])
        n_topics = len(self.topic_routes) if len(self.topic_routes) >= 2 else 0
        if len(cols) == 1:
            # Nothing known in the text: no topic is favoured and the fallback takes it.
            topic_scores = {route: 1.0 / len(pool) for route in pool}
        elif n_topics:
            topic_probabilities = model.topic_calibration.probabilities(logits[:n_topics], familiarity)
            topic_scores = dict(zip(self.topic_routes, topic_probabilities.tolist(), strict=True))
        else:
            topic_scores = {pool[0]: 1.0}
        severity: float | None = None
        signals: tuple[str, ...] = ()
        if self.escalation_route is not None:
            severity = float(model.severity_calibration.probabilities(logits[-2:], familiarity)[1])
            if severity >= _SIGNAL_FLOOR:
                signals = self._signals(cols, values)
        return self._combine(topic_scores, severity, nearest, signals)

    def predict_many(self, texts: Iterable[str]) -> list[Prediction]:
        return [self.predict(text) for text in texts]

    def _topic_pool(self) -> tuple[str, ...]:
        """The routes a topic can be: those learnt, or, with fewer than two, every non-escalation route."""
        if len(self.topic_routes) >= 2:
            return self.topic_routes
        return tuple(r for r in self.routes if r != self.escalation_route) or self.routes

    def _combine(self, topic_scores: Mapping[str, float], severity: float | None, nearest: float,
                 signals: tuple[str, ...]) -> Prediction:
        best = max(topic_scores.values())
        # Ties (a text nothing is known about) go to the fallback route.
        tied = [route for route, p in topic_scores.items() if p == best]
        topic = self.fallback if self.fallback in tied else tied[0]
        calm = 1.0 - (severity or 0.0)
        scores = dict.fromkeys(self.routes, 0.0)
        scores.update({route: p * calm for route, p in topic_scores.items()})
        if self.escalation_route is not None and severity is not None:
            scores[self.escalation_route] = severity
        route = self.escalation_route if self.escalation_route and severity is not None and severity >= 0.5 else topic
        return Prediction(route=route, confidence=scores[route], scores=scores, topic=topic,
                          topic_confidence=topic_scores[topic], severity=severity, nearest=nearest,
                          signals=signals)

    def _uniform(self, pool: Sequence[str]) -> Prediction:
        """Nothing learnt: every topic equally likely, the fallback first, and no severity to tell."""
        return self._combine({route: 1.0 / len(pool) for route in pool}, None, 0.0, ())

    def _signals(self, cols: IntArray, values: FloatArray) -> tuple[str, ...]:
        """The telling words and word pairs of the text that push severity up the most ("and" is not telling)."""
        assert self._model is not None
        weights = self._model.weights
        n_words = len(self._model.word_terms)
        idf = self._model.vocabulary.idf
        push = values * (weights[cols, -1] - weights[cols, -2])
        ranked = [int(i) for i in np.argsort(-push)
                  if push[i] > 0 and 1 <= cols[i] <= n_words and idf[cols[i]] >= _SIGNAL_MIN_IDF]
        return tuple(self._model.word_terms[int(cols[i]) - 1] for i in ranked[:_SIGNAL_WORDS])


_TRAINED: OrderedDict[str, LocalClassifier] = OrderedDict()


def _train_apart(
    examples: list[LabeledText], routes: list[str], weights: list[float], fallback: str | None,
    escalation_route: str | None,
) -> LocalClassifier:
    """Train in a child process (see bot/router/training_child.py), or here when there is none to start."""
    from bot.router.training_child import ChildTrainingFailed, train_in_child

    arguments = (examples, routes, weights, fallback, escalation_route)
    try:
        return train_in_child(arguments)
    except ChildTrainingFailed as exc:
        log.warning("router_training_in_process", reason=f"training in a child process failed: {exc}")
        return LocalClassifier._train(*arguments)


def _untrusted(offsets: FloatArray) -> Calibration:
    """For data too small to calibrate on: the raw logits, trusted as far as the text's words are known.

    `offsets` carry the prior (a severity detector trained on balanced classes is told the real share of
    escalations), so that a text nothing is known about gets the base rate, not a coin toss.
    """
    scale = np.zeros(_FAMILIARITY_FEATURES)
    scale[2] = 1.0
    return Calibration(scale, offsets)


@dataclass
class _Trainer:
    """Fits the topic and severity models, on folds for calibration and on everything for use."""

    x: SparseRows
    n_features: int
    base: FloatArray
    l2: float
    topic_labels: IntArray
    severity_labels: IntArray
    n_topics: int
    has_severity: bool

    def fit(self, rows: IntArray, starts: tuple[FloatArray | None, FloatArray | None], max_iter: int) -> tuple[
        FloatArray | None, FloatArray | None
    ]:
        """(topic weights, severity weights) learnt from `rows` (sorted); None for a model not trained."""
        topic = severity = None
        if self.n_topics:
            topical = rows[self.topic_labels[rows] >= 0]
            labels = self.topic_labels[topical]
            # Balance routes, so that a route with few examples still carries its share of the loss.
            topic = fit_logistic(self.x.subset(topical), labels, _balanced(labels, self.base[topical]),
                                 self.n_features, self.n_topics, self.l2,
                                 Curvature.empty(LBFGS_MEMORY, self.n_features * self.n_topics),
                                 start=starts[0], max_iter=max_iter)
        if self.has_severity:
            labels = self.severity_labels[rows]
            severity = fit_logistic(self.x.subset(rows), labels, _balanced(labels, self.base[rows]),
                                    self.n_features, 2, self.l2 * _SEVERITY_L2,
                                    Curvature.empty(LBFGS_MEMORY, self.n_features * 2),
                                    start=starts[1], max_iter=max_iter)
        return topic, severity

    def calibrate(self, folds: list[IntArray], familiarity: FloatArray, sample: IntArray) -> tuple[
        tuple[Calibration | None, Calibration | None], tuple[FloatArray | None, FloatArray | None]
    ]:
        """Calibrations fitted on every fold's held-out logits, and the fold models' mean as a warm start."""
        everything = np.arange(self.x.n_rows)
        topic_logits = np.zeros((self.x.n_rows, max(self.n_topics, 1)))
        severity_logits = np.zeros((self.x.n_rows, 2))
        sums: list[FloatArray | None] = [None, None]
        for fold in folds:
            rest = np.setdiff1d(everything, fold)
            fitted = self.fit(rest, (None, None), _FOLD_MAX_ITER)
            held_out = self.x.subset(fold)
            for index, weights in enumerate(fitted):
                if weights is None:
                    continue
                (topic_logits if index == 0 else severity_logits)[fold] = held_out.dot(weights)
                total = sums[index]
                sums[index] = weights if total is None else total + weights
        topic_calibration = severity_calibration = None
        if self.n_topics:
            topical = self.topic_labels[sample] >= 0
            rows = sample[topical]
            topic_calibration = fit_calibration(topic_logits[rows], familiarity[topical], self.topic_labels[rows],
                                                self.base[rows])
        if self.has_severity:
            severity_calibration = fit_calibration(severity_logits[sample], familiarity, self.severity_labels[sample],
                                                   self.base[sample])
        starts = tuple(None if s is None else s / len(folds) for s in sums)
        return (topic_calibration, severity_calibration), (starts[0], starts[1])

    def fit_all(self, starts: tuple[FloatArray | None, FloatArray | None]) -> npt.NDArray[np.float32]:
        """One weight matrix: the topic columns (none when there is no topic to tell), then severity's two."""
        topic, severity = self.fit(np.arange(self.x.n_rows), starts, _FULL_MAX_ITER)
        parts = [topic if topic is not None else np.zeros((self.n_features, 0)),
                 severity if severity is not None else np.zeros((self.n_features, 2))]
        # Single precision is plenty for routing, and halves the model in memory.
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)


def _balanced(labels: IntArray, weights: FloatArray) -> FloatArray:
    totals = np.bincount(labels, weights=weights)
    present = totals > 0
    result: FloatArray = weights * (totals.sum() / (int(present.sum()) * totals[labels]))
    return result


def _held_out_familiarity(
    x: SparseRows, neighbours: NeighbourIndex, texts: Sequence[str], folds: list[IntArray], sample: IntArray,
) -> FloatArray:
    """The `sample` rows' familiarity as their fold's model sees it: similarity to other folds' texts only."""
    fold_of = np.zeros(x.n_rows, dtype=np.int64)
    for number, fold in enumerate(folds):
        fold_of[fold] = number
    ends = np.r_[x.row_starts[1:], len(x.cols)]
    result = np.ones((len(sample), _FAMILIARITY_FEATURES))
    for position, row in enumerate(sample.tolist()):
        start, end = x.row_starts[row], ends[row]
        similarity = neighbours.similarities(x.cols[start:end], x.values[start:end])
        similarity[fold_of == fold_of[row]] = 0.0
        result[position, 1] = float(similarity.max())
    folds_of_word: dict[str, set[int]] = {}
    for text, fold_number in zip(texts, fold_of.tolist(), strict=True):
        for token in set(words(text)):
            folds_of_word.setdefault(token, set()).add(fold_number)
    for position, row in enumerate(sample.tolist()):
        # A word is known to a fold's model when some text of another fold has it.
        tokens = words(texts[row])
        known = sum(bool(folds_of_word[t] - {int(fold_of[row])}) for t in tokens)
        result[position, 2] = known / len(tokens) if tokens else 0.0
        result[position, 3] = min(1.0, len(tokens) / _LONG_WORDS)
    return result


# --------------------------------------------------------------------------- the router


ExampleSource = Callable[[], Sequence[tuple[LabeledText, float]]]


class LocalRouter:
    """The `Router` for mode "local": the classifiers trained on config examples, shipped data and corrections."""

    name = "local"

    def __init__(
        self,
        classifier: LocalClassifier,
        examples: ExampleSource = tuple,
        corrections: Sequence[LabeledText] = (),
    ) -> None:
        self.classifier = classifier
        self.corrections = tuple(corrections)
        # How to get the training examples again for a retrain: read anew rather than kept, as the
        # thousands of texts would stay in memory for the life of the server.
        self._examples = examples
        self._corrected = {normalized_key(c.text): c.route for c in self.corrections}

    @classmethod
    def from_config(cls, config: Config, corrections: Sequence[LabeledText] = ()) -> LocalRouter:
        return cls._build(config.route_names, functools.partial(training_examples, config),
                          fallback=config.fallback_route, escalation_route=config.escalation_route,
                          corrections=corrections)

    @classmethod
    def from_examples(
        cls,
        routes: Sequence[str],
        examples: Sequence[tuple[LabeledText, float]],
        *,
        fallback: str,
        escalation_route: str | None = None,
        corrections: Sequence[LabeledText] = (),
    ) -> LocalRouter:
        """Train on weighted `examples` and `corrections`; a correction replaces examples of the same text."""
        kept = tuple(examples)
        return cls._build(routes, lambda: kept, fallback=fallback, escalation_route=escalation_route,
                          corrections=corrections)

    @classmethod
    def _build(
        cls, routes: Sequence[str], source: ExampleSource, *, fallback: str, escalation_route: str | None,
        corrections: Sequence[LabeledText],
    ) -> LocalRouter:
        valid = [c for c in corrections if c.route in routes]
        kept = list(source())
        if valid:
            overridden = {normalized_key(c.text) for c in valid}
            kept = [(e, w) for e, w in kept if normalized_key(e.text) not in overridden]
        classifier = LocalClassifier.train(
            [e for e, _ in kept] + valid,
            routes,
            weights=[w for _, w in kept] + [CORRECTION_WEIGHT] * len(valid),
            fallback=fallback,
            escalation_route=escalation_route,
        )
        return cls(classifier, source, valid)

    def retrain(self, corrections: Sequence[LabeledText]) -> LocalRouter:
        """A new router trained with `corrections`, the complete current list (earlier ones not in it are dropped).

        Training takes a few seconds: call it in a worker thread, not on the event loop.
        """
        return self._build(self.classifier.routes, self._examples, fallback=self.classifier.fallback,
                           escalation_route=self.classifier.escalation_route, corrections=corrections)

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
    """The decision's reason, e.g. "local classifier: billing 0.91 (next technical 0.05); severity 0.02"."""
    if prediction.severity is not None and prediction.route != prediction.topic:
        said = ", ".join(f"“{word}”" for word in prediction.signals)
        return (f"severity detector: {prediction.route} {prediction.severity:.2f}"
                + (f" (on {said})" if said else "")
                + f"; overrode the topic {prediction.topic} {prediction.topic_confidence:.2f}")
    reason = f"local classifier: {prediction.route} {prediction.confidence:.2f}"
    others = sorted(((p, r) for r, p in prediction.scores.items() if r != prediction.route), reverse=True)
    if others:
        reason += f" (next {others[0][1]} {others[0][0]:.2f})"
    if prediction.severity is not None:
        reason += f"; severity {prediction.severity:.2f}"
    return reason
