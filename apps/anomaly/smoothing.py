"""Simple and damped-Holt exponential smoothing with additive errors, fitted fast.

Plain domain code: no web framework, no Dapr. The same models and the same estimate as
statsmodels' `ETSModel(error="add", trend=None | "add", damped_trend=...)` with estimated
initial states (least squares of the one-step errors, which is maximum likelihood for
additive errors), and the same bounds (smoothing weights in [1e-4, 1 - 1e-4], beta at most
alpha, phi in [0.8, 0.98]), but tens of times cheaper: the anomaly detector refits every
50 points, and an offline series of 10,000 points means 200 fits of several forms.

Why it is cheap. For fixed weights the one-step errors are a linear filter of the series
(an ARIMA(0,1,1) or (1,1,2) in innovations form), run by `scipy.signal.lfilter` in C, plus
a linear function of the initial states, which least squares then solves exactly. Only the
weights (one, or three) are left to a numerical optimiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.signal import lfilter

Array = NDArray[np.float64]

#: statsmodels' bounds for smoothing weights and damping (ETSModel defaults).
WEIGHT_BOUNDS = (1e-4, 1 - 1e-4)
PHI_BOUNDS = (0.8, 0.98)


@dataclass
class Smoothed:
    """A fitted smoother: its weights, final states and one-step errors."""

    alpha: float
    beta: float
    phi: float
    level: float
    slope: float
    resid: Array
    damped: bool


def _errors(y: Array, alpha: float, beta: float, phi: float) -> tuple[Array, Array]:
    """One-step errors with zero initial states, and their response to each initial state
    (columns: level, slope) with a zero series: errors are `e0 + G @ (l0, b0)`."""
    n = len(y)
    a1, a2 = alpha + phi * beta - 1.0 - phi, phi * (1.0 - alpha)
    ar = np.array([1.0, a1, a2])
    e0 = np.asarray(lfilter([1.0, -(1.0 + phi), phi], ar, y), dtype=float)
    # The first two errors by hand (initial level 1 or slope 1, a zero series), then the
    # filter's recursion on a zero input, from those two as its past outputs.
    e1 = np.array([-1.0, -phi])
    level1 = np.array([1.0, phi]) + alpha * e1
    slope1 = np.array([0.0, phi]) + beta * e1
    e2 = -(level1 + phi * slope1)
    responses = np.empty((n, 2))
    responses[0] = e1
    if n > 1:
        responses[1] = e2
    if n > 2:
        # Direct form II transposed: the state that continues outputs ..., e1, e2.
        zi = np.array([-a1 * e2 - a2 * e1, -a2 * e2])
        responses[2:], _ = lfilter([1.0], ar, np.zeros((n - 2, 2)), axis=0, zi=zi)
    return e0, responses


def _solve(
    y: Array, alpha: float, beta: float, phi: float, damped: bool
) -> tuple[float, Array, Array]:
    """Sum of squared errors, errors and initial states for fixed weights."""
    e0, responses = _errors(y, alpha, beta, phi)
    if damped:
        gram = responses.T @ responses
        rhs = -(responses.T @ e0)
        try:
            x0 = np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:
            x0, *_ = np.linalg.lstsq(responses, -e0, rcond=None)
        e = e0 + responses @ x0
        states = np.asarray(x0, dtype=np.float64)
    else:
        g = responses[:, 0]
        level = -float(g @ e0) / float(g @ g)
        e = e0 + g * level
        states = np.array([level, 0.0])
    return float(e @ e), e, states


def fit_smoother(y: Array, *, damped: bool) -> Smoothed:
    """Fit simple (damped False) or damped-Holt exponential smoothing to `y`.

    Args:
        y: the series, oldest first, at least 4 points.
        damped: a damped local trend (three weights) rather than a level alone (one).
    """
    y = np.asarray(y, dtype=float)
    lo, hi = WEIGHT_BOUNDS
    if not damped:
        best = minimize_scalar(
            lambda a: _solve(y, a, 0.0, 0.0, False)[0],
            bounds=WEIGHT_BOUNDS,
            method="bounded",
            options={"xatol": 1e-5},
        )
        alpha, beta, phi = float(best.x), 0.0, 0.0
    else:
        # beta = alpha * ratio keeps beta <= alpha within box bounds.
        def sse(p: Array) -> float:
            value = _solve(y, p[0], p[0] * p[1], p[2], True)[0]
            return value if math.isfinite(value) else 1e300

        starts = [np.array([a, r, 0.9]) for a in (0.1, 0.3, 0.6, 0.9) for r in (0.01, 0.1, 0.5)]
        start = min(starts, key=sse)
        result = minimize(
            sse,
            start,
            method="L-BFGS-B",
            bounds=[WEIGHT_BOUNDS, (lo, 1.0), PHI_BOUNDS],
        )
        a, r, p = (float(v) for v in result.x)
        alpha, beta, phi = a, a * r, p
    _, e, (level, slope) = _solve(y, alpha, beta, phi, damped)
    # Run the states forward: b_t = phi b_{t-1} + beta e_t; l_t = l_{t-1} + phi b_{t-1}
    # + alpha e_t.
    if damped:
        slopes, _ = lfilter([beta], [1.0, -phi], e, zi=[phi * slope])
        previous = np.concatenate(([slope], slopes[:-1]))
        final_level = level + phi * float(np.sum(previous)) + alpha * float(np.sum(e))
        final_slope = float(slopes[-1])
    else:
        final_level = level + alpha * float(np.sum(e))
        final_slope = 0.0
    return Smoothed(alpha, beta, phi, float(final_level), final_slope, e, damped)
