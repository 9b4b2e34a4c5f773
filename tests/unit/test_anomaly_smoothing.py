"""The fast smoother fits what statsmodels' ETSModel fits, at least as well."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from apps.anomaly.smoothing import fit_smoother


def series(kind: int, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(kind)
    walk = np.cumsum(rng.normal(size=n)) if kind % 2 else 0.0
    trend = 0.05 * np.arange(n) if kind > 1 else 0.0
    return 50 + walk + trend + rng.normal(size=n)


@pytest.mark.parametrize("damped", [False, True])
@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_the_fit_matches_statsmodels(kind: int, damped: bool) -> None:
    y = series(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ETSModel(
            y, error="add", trend="add" if damped else None, damped_trend=damped
        ).fit(disp=False)
    fit = fit_smoother(y, damped=damped)
    reference_sse = float(np.sum(np.asarray(reference.resid) ** 2))
    assert float(fit.resid @ fit.resid) <= reference_sse * (1 + 1e-4)
    assert fit.level == pytest.approx(float(np.asarray(reference.level)[-1]), rel=1e-3)
    assert 1e-4 <= fit.alpha <= 1 - 1e-4
    if damped:
        assert fit.beta <= fit.alpha + 1e-12 and 0.8 <= fit.phi <= 0.98
    else:
        assert fit.beta == fit.phi == fit.slope == 0.0
