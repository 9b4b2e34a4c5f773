"""Spectral residual saliency of the newest point of a window (Ren et al., KDD 2019).

Plain domain code: numpy only. The method, as the paper gives it (section 4.2): take the
window's Fourier transform, its log amplitude A and phase P; the spectral residual is A
less its local average (a mean filter of width `q`); back in the time domain with the
original phase, |IFFT(exp(R + iP))| is the saliency map S, where what the spectrum does
not expect (a spike, the onset of a shift) stands out. A point's raw score is how far its
saliency is above the local average of the saliency map (the `z` points before it),
relative to that average: (S - mean) / mean.

Causal, as the paper's online mode: the window holds the newest point and the ones before
it, never later ones. Because the transform treats the window as one period of a cycle,
the newest point would sit on its edge; the paper appends `m` points extrapolated from the
last ones' slopes (section 4.2, "we add several estimated points after x_n") so it does
not. The cost is one FFT of the window a point: O(w log w) for a fixed window, O(1) in the
series' length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

#: Width of the mean filter on the log amplitude (the paper's q).
AMPLITUDE_FILTER = 3
#: Saliency points averaged before the newest (the paper's z).
SCORE_WINDOW = 21
#: Points extrapolated after the newest (the paper's m), and the points their slope uses.
EXTENSION = 5
#: Amplitudes at or below this are treated as zero (flat stretches have no spectrum).
EPS = 1e-8


def _extension(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """`EXTENSION` copies of the next value estimated from slopes (the paper's equation
    7, x[k+1] = x[k-m+1] + m * the mean slope from each of the m points before x[k] to
    x[k]), with k the point *before* the newest, as the authors' implementation
    (`microsoft/anomalydetector`, `extend_series`) does: so the newest point's own
    deviation is not carried into the points after it, where it would hide itself."""
    if len(y) < EXTENSION + 2:
        return np.full(EXTENSION, y[-1])
    points = y[-EXTENSION - 2 : -1]
    slopes = (points[-1] - points[:-1]) / np.arange(EXTENSION, 0, -1)
    return np.full(EXTENSION, points[1] + float(np.sum(slopes)))


def saliency(values: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    """The saliency map of `values` (the window, extended), one value a point.

    Args:
        values: the window, oldest first, at least 4 points.
    """
    y = np.asarray(values, dtype=float)
    y = np.concatenate((y, _extension(y)))
    spectrum = np.fft.fft(y - y.mean())
    amplitude = np.abs(spectrum)
    empty = amplitude <= EPS
    log_amplitude = np.log(np.where(empty, 1.0, amplitude))
    kernel = np.ones(AMPLITUDE_FILTER) / AMPLITUDE_FILTER
    padded = np.pad(log_amplitude, AMPLITUDE_FILTER // 2, mode="edge")
    residual = log_amplitude - np.convolve(padded, kernel, mode="valid")
    # exp(R + iP) = exp(R) * spectrum / |spectrum|; empty frequencies stay empty.
    scaled = np.where(empty, 0.0, np.exp(residual) / np.where(empty, 1.0, amplitude))
    return np.abs(np.fft.ifft(spectrum * scaled))


def newest_score(values: Sequence[float] | NDArray[np.float64]) -> float:
    """The raw spectral residual score of the window's newest point: (S - mean) / mean,
    the mean over the `SCORE_WINDOW` saliency values before it; 0 on a flat window.

    Args:
        values: the window, oldest first, the newest point last, at least 4 points.
    """
    n = len(values)
    s = saliency(values)
    point = s[n - 1]
    mean = float(np.mean(s[max(0, n - 1 - SCORE_WINDOW) : n - 1]))
    if mean <= EPS:
        return 0.0
    return float((point - mean) / mean)


def newest_statistic(values: Sequence[float] | NDArray[np.float64]) -> float:
    """`newest_score` in the series' units: times the window's mean absolute deviation.

    The paper's score is a ratio, blind to scale: on a quantized series (counts that are
    mostly 10 and now and then 11) every move by one quantum is as salient as a real jump
    would be on a smooth one. In the series' units the detector's scale floor (one quantum,
    1e-4 of the level) applies to it as to the other families, and a one-quantum move in a
    window that hardly moves stays small.

    Args:
        values: the window, oldest first, the newest point last, at least 4 points.
    """
    y = np.asarray(values, dtype=float)
    return newest_score(y) * float(np.mean(np.abs(y - y.mean())))
