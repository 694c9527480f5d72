"""The hand-written optimiser of the local router: its gradient is the loss's derivative, and L-BFGS finds the
minimum it should, from scratch and warm-started."""

from __future__ import annotations

import numpy as np

from bot.router.features import SparseRows
from bot.router.fitting import LBFGS_MEMORY, Curvature, lbfgs, logistic_objective


def dense_rows(matrix: np.ndarray) -> SparseRows:
    """A small dense matrix (first column the bias) in the router's sparse form."""
    rows, cols = np.nonzero(matrix)
    return SparseRows.build(matrix.shape[0], rows.astype(np.int64), cols.astype(np.int64),
                            matrix[rows, cols].astype(np.float64))


def problem(seed: int = 3) -> tuple[SparseRows, np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    features, classes, n = 6, 3, 40
    data = np.hstack([np.ones((n, 1)), rng.normal(size=(n, features - 1))])
    truth = rng.normal(size=(features, classes)) * 2
    labels = np.argmax(data @ truth + rng.gumbel(size=(n, classes)), axis=1).astype(np.int64)
    return dense_rows(data), labels, rng.uniform(0.5, 2.0, size=n), features, classes


def test_the_gradient_is_the_derivative_of_the_loss() -> None:
    x, labels, weights, features, classes = problem()
    objective = logistic_objective(x, labels, weights, features, classes, l2=0.05)
    point = np.random.default_rng(7).normal(size=features * classes)
    _, gradient = objective(point)
    step = 1e-6
    numeric = np.array([(objective(point + step * e)[0] - objective(point - step * e)[0]) / (2 * step)
                        for e in np.eye(len(point))])
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_lbfgs_finds_the_minimum_of_a_quadratic() -> None:
    rng = np.random.default_rng(11)
    basis = rng.normal(size=(8, 8))
    hessian = basis @ basis.T + 8 * np.eye(8)  # positive definite, not too ill-conditioned
    minimum = rng.normal(size=8)

    def quadratic(point: np.ndarray) -> tuple[float, np.ndarray]:
        offset = point - minimum
        return 0.5 * float(offset @ hessian @ offset), hessian @ offset

    found = lbfgs(quadratic, np.zeros(8), 200, Curvature.empty(LBFGS_MEMORY, 8))
    np.testing.assert_allclose(found, minimum, atol=1e-3)


def test_the_fit_stops_where_the_gradient_vanishes_and_a_warm_start_is_quick() -> None:
    x, labels, weights, features, classes = problem()
    objective = logistic_objective(x, labels, weights, features, classes, l2=0.01)
    curvature = Curvature.empty(LBFGS_MEMORY, features * classes)
    fitted = lbfgs(objective, np.zeros(features * classes), 500, curvature)
    loss, gradient = objective(fitted)
    assert np.linalg.norm(gradient) < 1e-3
    assert loss < objective(np.zeros(features * classes))[0] / 2

    calls = 0

    def counted(point: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        return objective(point)

    again = lbfgs(counted, fitted, 500, curvature)
    # Started at the optimum with the curvature it learnt, the refit ends almost at once, no worse.
    assert calls <= 3 and objective(again)[0] <= loss + 1e-9
