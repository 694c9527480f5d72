"""Model fitting for the local router: multinomial logistic regression by L-BFGS, and held-out calibration."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.router.features import FloatArray, IntArray, SparseRows

MAX_ITER = 150
_RELATIVE_TOLERANCE = 1e-5
LBFGS_MEMORY = 8

# Vector products go through np.einsum, not `@`: on a busy two-core machine OpenBLAS's threads
# turn a 60k-element dot product from microseconds into milliseconds, and training into seconds.


def inner(a: FloatArray, b: FloatArray) -> float:
    return float(np.einsum("i,i->", a, b))


Objective = Callable[[FloatArray], tuple[float, FloatArray]]


@dataclass
class Curvature:
    """L-BFGS memory: recent steps s and gradient changes y (stacked, s rows then y rows), their products."""

    pairs: FloatArray
    sy: FloatArray  # sy[i, j] = s_i . y_j, in buffer slots
    yy: FloatArray
    order: list[int]  # buffer slots, oldest first

    @classmethod
    def empty(cls, memory: int, dim: int) -> Curvature:
        return cls(np.zeros((2 * memory, dim)), np.zeros((memory, memory)), np.zeros((memory, memory)), [])

    def copy(self) -> Curvature:
        return Curvature(self.pairs.copy(), self.sy.copy(), self.yy.copy(), list(self.order))

    def direction(self, g: FloatArray) -> FloatArray:
        """-H g in the compact form of Byrd, Nocedal and Schnabel (1994): two BLAS products, no Python loop."""
        if not self.order:
            return -g / max(math.sqrt(inner(g, g)), 1e-12)
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
        if inner(s_vec, y_vec) <= 1e-12:
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


def lbfgs(objective: Objective, x0: FloatArray, max_iter: int, curvature: Curvature) -> FloatArray:
    """Minimise a smooth convex objective by L-BFGS with a backtracking Armijo line search.

    `curvature` is updated in place; passing the memory of a fit on nearly the same data makes a
    warm-started refit converge in a few steps.
    """
    x = x0
    f, g = objective(x)
    for _ in range(max_iter):
        direction = curvature.direction(g)
        slope = inner(g, direction)
        if slope >= 0:
            curvature.order.clear()
            direction = curvature.direction(g)
            slope = inner(g, direction)
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


def fit_logistic(
    x: SparseRows,
    labels: IntArray,
    sample_weights: FloatArray,
    n_features: int,
    n_classes: int,
    l2: float,
    curvature: Curvature,
    start: FloatArray | None = None,
    max_iter: int = MAX_ITER,
) -> FloatArray:
    """Multinomial logistic regression, L2-penalised (bias excepted), weights of shape (features, classes)."""
    objective = logistic_objective(x, labels, sample_weights, n_features, n_classes, l2)
    initial = np.zeros(n_features * n_classes) if start is None else start.ravel().copy()
    return lbfgs(objective, initial, max_iter, curvature).reshape(n_features, n_classes)


def logistic_objective(
    x: SparseRows, labels: IntArray, sample_weights: FloatArray, n_features: int, n_classes: int, l2: float,
) -> Objective:
    """The weighted mean cross-entropy plus the L2 penalty (bias excepted), and its gradient, of flat weights."""
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
        loss = -float(np.einsum("ij,ij,i->", log_probs, target, weights)) + 0.5 * inner(penalised.ravel(), flat)
        residual = (np.exp(log_probs) - target) * weights[:, None]
        gradient = x.transpose_dot(residual, n_features) + penalised
        return loss, gradient.ravel()

    return loss_and_gradient


@dataclass(frozen=True)
class Calibration:
    """Held-out calibration: logits scaled by how familiar the text is, plus one offset per class.

    With `familiarity` = (1, f1, f2, …) the probabilities are softmax(logits * max(familiarity . scale, 0)
    + offsets): temperature scaling whose temperature rises as a text looks less like the training data,
    so a message far from everything learnt drifts towards the prior instead of sounding certain.
    """

    scale: FloatArray
    offsets: FloatArray

    @classmethod
    def neutral(cls, n_features: int, n_classes: int) -> Calibration:
        """Scale 1 and no offsets: the raw model, for data too small to calibrate on."""
        scale = np.zeros(n_features)
        scale[0] = 1.0
        return cls(scale, np.zeros(n_classes))

    def probabilities(self, logits: FloatArray, familiarity: FloatArray) -> FloatArray:
        """Calibrated probabilities for one row of logits (or a matrix of rows)."""
        factor = np.maximum(familiarity @ self.scale, 0.0)
        scaled = logits * (factor[..., None] if np.ndim(factor) else factor) + self.offsets
        scaled = scaled - scaled.max(axis=-1, keepdims=True)
        exp = np.exp(scaled)
        result: FloatArray = exp / exp.sum(axis=-1, keepdims=True)
        return result


def fit_calibration(
    logits: FloatArray, familiarity: FloatArray, labels: IntArray, sample_weights: FloatArray
) -> Calibration:
    """The `Calibration` minimising the weighted log-loss of held-out logits."""
    n, n_classes = logits.shape
    n_features = familiarity.shape[1]
    target = np.zeros((n, n_classes))
    target[np.arange(n), labels] = 1.0
    weights = sample_weights / sample_weights.sum()
    # A little ridge keeps the offsets identifiable and the scale sane on small data.
    ridge = 1e-4

    def loss_and_gradient(flat: FloatArray) -> tuple[float, FloatArray]:
        scale, offsets = flat[:n_features], flat[n_features:]
        factor = familiarity @ scale
        scaled = logits * factor[:, None] + offsets
        scaled -= scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        loss = -float(np.einsum("ij,ij,i->", log_probs, target, weights)) + 0.5 * ridge * inner(flat, flat)
        residual = (np.exp(log_probs) - target) * weights[:, None]
        gradient = np.concatenate([familiarity.T @ (residual * logits).sum(axis=1), residual.sum(axis=0)])
        return loss, gradient + ridge * flat

    start = Calibration.neutral(n_features, n_classes)
    fitted = lbfgs(loss_and_gradient, np.concatenate([start.scale, start.offsets]), 200,
                   Curvature.empty(LBFGS_MEMORY, n_features + n_classes))
    return Calibration(fitted[:n_features], fitted[n_features:])


def stratified_folds(labels: IntArray, groups: Sequence[object], folds: int) -> list[IntArray]:
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


def softmax(logits: FloatArray) -> FloatArray:
    exp = np.exp(logits - logits.max())
    result: FloatArray = exp / exp.sum()
    return result
