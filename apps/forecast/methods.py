"""Forecasting methods on statsmodels: automatic ETS, Theta, automatic ARIMA and their mean.

Plain domain code: no web framework, no Dapr. `forecast` fits one series and returns its
point forecasts and prediction intervals; it is what the service runs per series (in a
process pool) and what `bench/eval_timeseries.py` scores on the M1 and Tourism data.

Choices, and why:
- ETS: every admissible (error, trend, seasonal) form of Hyndman et al. (2002), fitted with
  statsmodels' `ETSModel` and chosen by AICc. Multiplicative forms only for positive data;
  additive error with multiplicative season is left out (numerically unstable, as in R's
  `forecast::ets`); a form is tried only when the series has more points than its
  parameters plus four. States start from the heuristic of Hyndman and Athanasopoulos
  (fpp, 2.6) where the series is long enough: several times faster than estimating them,
  and on the M1/Tourism data no less accurate.
- Theta: statsmodels' `ThetaModel` (Assimakopoulos and Nikolopoulos 2000, in the SES-with-
  drift form of Hyndman and Billah 2003), deseasonalised by classical decomposition when
  its seasonality test says so.
- ARIMA: d by repeated KPSS tests (5%), D = 1 when STL's seasonal strength exceeds 0.64
  (Wang, Smith and Hyndman 2006, the rule of `forecast::nsdiffs`), p and q at most 2 found
  by a stepwise AICc search (after Hyndman and Khandakar 2008), seasonal MA(1) when D = 1.
  The search fits the differenced series (small state space); the chosen model is then
  run on the original series with the same parameters, for forecasts in its units.
- Combination: the mean of the three point forecasts; interval bounds are the means of
  the members' bounds (quantile averaging, Lichtendahl, Grushka-Cockayne and Winkler 2013,
  Management Science 59(7)), so 95% still contains 80%.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.stats import norm
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.forecasting.theta import ThetaModel
from statsmodels.tsa.seasonal import STL
from statsmodels.tsa.statespace.sarimax import SARIMAX
from statsmodels.tsa.stattools import kpss

from consort.contracts.common import ModelInfo
from consort.contracts.forecast import (
    DEFAULT_LEVELS,
    MIN_POINTS,
    FittedModel,
    ForecastModel,
    Interval,
    SeriesForecast,
)

Array = NDArray[np.float64]
P = ParamSpec("P")
R = TypeVar("R")

#: The library every model here is fitted with.
LIBRARY = ModelInfo(name="statsmodels", version=version("statsmodels"))

#: Largest p and q the ARIMA search tries.
MAX_ARMA_ORDER = 2
#: Seasonal strength above which ARIMA takes a seasonal difference (forecast::nsdiffs).
SEASONAL_STRENGTH_FOR_D = 0.64
#: Simulated paths behind the intervals of ETS forms without closed-form variances.
ETS_SIMULATIONS = 500


@dataclass
class Fit:
    """A fitted model's forecast: point, bounds per level, name and parameters."""

    name: str
    point: Array
    bounds: dict[int, tuple[Array, Array]]
    parameters: dict[str, Any] = field(default_factory=dict)
    aicc: float | None = None
    members: list[Fit] = field(default_factory=list)

    def describe(self) -> FittedModel:
        """The contract's view of this fit."""
        return FittedModel(
            name=self.name,
            parameters=self.parameters,
            aicc=None if self.aicc is None or not math.isfinite(self.aicc) else self.aicc,
            members=[m.describe() for m in self.members],
        )


class ForecastError(ValueError):
    """A series this module cannot forecast as asked (the service answers 422)."""


def _z(level: int) -> float:
    """The normal quantile of a two-sided interval at `level` percent."""
    return float(norm.ppf(0.5 + level / 200))


def _quietly(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` without statsmodels' warnings.

    statsmodels warns on every optimiser hiccup and interpolated test p-value; candidates
    are compared by AICc (or fall back), which is what matters here.
    """

    @functools.wraps(fn)
    def quiet(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return quiet


def _finite(fit: Fit) -> bool:
    return bool(np.all(np.isfinite(fit.point))) and all(
        bool(np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) for lo, hi in fit.bounds.values()
    )


def naive(y: Array, horizon: int, levels: Sequence[int], reason: str) -> Fit:
    """The last value carried forward, with random-walk intervals (zero-width when constant)."""
    steps = np.arange(1, horizon + 1, dtype=float)
    sigma = float(np.std(np.diff(y), ddof=1)) if len(y) > 2 else 0.0
    point = np.full(horizon, y[-1], dtype=float)
    bounds = {
        level: (
            point - _z(level) * sigma * np.sqrt(steps),
            point + _z(level) * sigma * np.sqrt(steps),
        )
        for level in levels
    }
    return Fit(name="Naive", point=point, bounds=bounds, parameters={"reason": reason})


# --- ETS ------------------------------------------------------------------------------


def _ets_forms(
    n: int, period: int, positive: bool
) -> list[tuple[str, str | None, bool, str | None]]:
    """Admissible (error, trend, damped, seasonal) forms for a series of `n` points."""
    errors = ["add", "mul"] if positive else ["add"]
    trends: list[tuple[str | None, bool]] = [(None, False), ("add", False), ("add", True)]
    seasonals: list[str | None] = [None]
    if period > 1 and n >= 2 * period + 2:
        seasonals += ["add", "mul"] if positive else ["add"]
    forms = []
    for error in errors:
        for trend, damped in trends:
            for seasonal in seasonals:
                if error == "add" and seasonal == "mul":
                    continue
                # Smoothing parameters plus initial states, R's rule: n > parameters + 4.
                npar = 2 + (2 if trend else 0) + (1 if damped else 0)
                npar += period if seasonal else 0
                if n <= npar + 4:
                    continue
                forms.append((error, trend, damped, seasonal))
    return forms


def _ets_name(error: str, trend: str | None, damped: bool, seasonal: str | None) -> str:
    letter = {"add": "A", "mul": "M", None: "N"}
    t = "N" if trend is None else ("Ad" if damped else "A")
    return f"ETS({letter[error]},{t},{letter[seasonal]})"


@_quietly
def fit_ets(y: Array, period: int, horizon: int, levels: Sequence[int], seed: int = 0) -> Fit:
    """ETS with the form chosen by AICc among the admissible ones.

    Args:
        y: the series, oldest first.
        period: seasonal period in steps; 1 for none.
        horizon: steps ahead.
        levels: interval levels in percent.
        seed: for the simulated intervals of forms without closed-form variances.
    """
    n = len(y)
    positive = bool(np.min(y) > 0)
    # A pandas series: ETS prediction intervals in statsmodels 0.15 fail on plain arrays.
    endog = pd.Series(y)
    best: tuple[float, Any, tuple[str, str | None, bool, str | None]] | None = None
    for form in _ets_forms(n, period, positive):
        error, trend, damped, seasonal = form
        heuristic = n >= 10 and (seasonal is None or n >= max(2 * period, 10 + 2 * (period // 2)))
        model = ETSModel(
            endog,
            error=error,
            trend=trend,
            damped_trend=damped,
            seasonal=seasonal,
            seasonal_periods=period if seasonal else None,
            initialization_method="heuristic" if heuristic else "estimated",
        )
        try:
            result = model.fit(disp=False, maxiter=200)
        except (ValueError, np.linalg.LinAlgError):
            continue
        aicc = float(result.aicc)
        if math.isfinite(aicc) and (best is None or aicc < best[0]):
            best = (aicc, result, form)
    if best is None:
        return naive(y, horizon, levels, "no ETS form could be fitted")
    aicc, result, form = best
    rng = np.random.default_rng(seed)
    prediction = result.get_prediction(
        start=n, end=n + horizon - 1, simulate_repetitions=ETS_SIMULATIONS, rng=rng
    )
    point = np.asarray(prediction.predicted_mean, dtype=float)
    bounds = {}
    for level in levels:
        frame = np.asarray(prediction.pred_int(alpha=1 - level / 100))
        bounds[level] = (frame[:, 0].astype(float), frame[:, 1].astype(float))
    names = {"smoothing_level": "alpha", "smoothing_trend": "beta"}
    names |= {"smoothing_seasonal": "gamma", "damping_trend": "phi"}
    parameters: dict[str, Any] = {
        short: round(float(result.params[i]), 6)
        for i, name in enumerate(result.param_names)
        if (short := names.get(name))
    }
    if form[3]:
        parameters["period"] = period
    return Fit(_ets_name(*form), point, bounds, parameters, aicc)


# --- Theta ----------------------------------------------------------------------------


@_quietly
def fit_theta(y: Array, period: int, horizon: int, levels: Sequence[int]) -> Fit:
    """The Theta method (SES with drift), deseasonalised when the data show seasonality."""
    seasonal = period > 1 and len(y) >= 2 * period
    model = ThetaModel(y, period=period if seasonal else 1, deseasonalize=seasonal)
    result = model.fit()
    point = np.asarray(result.forecast(horizon), dtype=float)
    bounds = {}
    for level in levels:
        frame = result.prediction_intervals(horizon, alpha=1 - level / 100)
        bounds[level] = (
            np.asarray(frame["lower"], dtype=float),
            np.asarray(frame["upper"], dtype=float),
        )
    params = result.params
    parameters: dict[str, Any] = {
        "theta": 2.0,
        "b0": round(float(params.iloc[0]), 6),
        "alpha": round(float(params.iloc[1]), 6),
        "deseasonalized": model._has_seasonality if seasonal else False,
    }
    if seasonal and model._has_seasonality:
        parameters["decomposition"] = "multiplicative" if model.method == "mul" else "additive"
        parameters["period"] = period
    return Fit("Theta", point, bounds, parameters)


# --- ARIMA ----------------------------------------------------------------------------


@_quietly
def seasonal_strength(y: Array, period: int) -> float:
    """STL's seasonal strength, max(0, 1 - Var(R) / Var(S + R)) (Wang, Smith, Hyndman 2006)."""
    if period < 2 or len(y) < 2 * period + 1:
        return 0.0
    result = STL(y, period=period, robust=True).fit()
    remainder = np.asarray(result.resid)
    detrended = np.asarray(result.seasonal) + remainder
    spread = float(np.var(detrended))
    return max(0.0, 1.0 - float(np.var(remainder)) / spread) if spread > 0 else 0.0


@_quietly
def differences(y: Array, max_d: int = 2) -> int:
    """How many first differences make `y` level-stationary by KPSS tests at 5%."""
    d = 0
    x = y
    while d < max_d and len(x) > 4 and float(np.ptp(x)) > 0:
        p_value = kpss(x, regression="c", nlags="auto")[1]
        if p_value >= 0.05:
            break
        x = np.diff(x)
        d += 1
    return d


def _arima_name(order: tuple[int, int, int], seasonal: tuple[int, int, int, int]) -> str:
    name = "ARIMA({},{},{})".format(*order)
    if seasonal[3] > 1:
        name += "({},{},{})[{}]".format(*seasonal)
    return name


def _stepwise(
    fits: dict[tuple[int, int, bool], tuple[float, Any]],
    trial: Callable[[int, int, bool], float],
    constant: bool,
) -> tuple[int, int, bool]:
    """Hyndman and Khandakar's stepwise search over (p, q): the key of the best fit."""
    # They start from (2,2) as well; (1,1) costs far less to fit and the steps below
    # reach (2,2) when it is better.
    for p, q in ((1, 1), (0, 0), (1, 0), (0, 1)):
        trial(p, q, constant)
    while True:
        best = min(fits, key=lambda k: fits[k][0])
        p, q, _ = best
        moves = [
            (p + dp, q + dq)
            for dp in (-1, 0, 1)
            for dq in (-1, 0, 1)
            if (dp, dq) != (0, 0)
            and 0 <= p + dp <= MAX_ARMA_ORDER
            and 0 <= q + dq <= MAX_ARMA_ORDER
            and (p + dp, q + dq, constant) not in fits
        ]
        if not moves:
            break
        for move in moves:
            trial(*move, constant)
        if min(fits, key=lambda k: fits[k][0]) == best:
            break
    best = min(fits, key=lambda k: fits[k][0])
    if constant:
        trial(best[0], best[1], False)
        best = min(fits, key=lambda k: fits[k][0])
    return best


def _arima_forecast(
    y: Array,
    order: tuple[int, int, int],
    seasonal_order: tuple[int, int, int, int],
    with_constant: bool,
    result: Any,
    aicc: float,
    horizon: int,
    levels: Sequence[int],
) -> Fit:
    """The forecast of the chosen order, with the parameters the search fitted."""
    # The search ran on the differenced series; the same parameters on the full model give
    # forecasts and intervals in the series' own units.
    full = SARIMAX(
        y,
        order=order,
        seasonal_order=seasonal_order,
        trend="c" if with_constant else "n",
        concentrate_scale=True,
    )
    filtered = full.filter(result.params)
    prediction = filtered.get_forecast(horizon)
    point = np.asarray(prediction.predicted_mean, dtype=float)
    bounds = {}
    for level in levels:
        frame = np.asarray(prediction.conf_int(alpha=1 - level / 100))
        bounds[level] = (frame[:, 0].astype(float), frame[:, 1].astype(float))
    parameters: dict[str, Any] = {
        "order": list(order),
        "seasonal_order": list(seasonal_order),
        "constant": with_constant,
    }
    for name, value in zip(result.param_names, result.params, strict=True):
        parameters[name] = round(float(value), 6)
    return Fit(_arima_name(order, seasonal_order), point, bounds, parameters, aicc)


@_quietly
def fit_arima(y: Array, period: int, horizon: int, levels: Sequence[int]) -> Fit:
    """ARIMA with d, D by tests and p, q (at most 2) by a stepwise AICc search."""
    n = len(y)
    seasonal_d = 0
    if period > 1 and n >= 3 * period + 2:
        seasonal_d = int(seasonal_strength(y, period) > SEASONAL_STRENGTH_FOR_D)
    deseasoned = y[period:] - y[:-period] if seasonal_d else y
    d = differences(deseasoned, max_d=1 if seasonal_d else 2)
    seasonal_order = (0, 1, 1, period) if seasonal_d else (0, 0, 0, 0)
    usable = n - d - seasonal_d * period
    fits: dict[tuple[int, int, bool], tuple[float, Any]] = {}

    def trial(p: int, q: int, constant: bool) -> float:
        key = (p, q, constant)
        if key in fits:
            return fits[key][0]
        aicc = math.inf
        result = None
        if usable > p + q + seasonal_d + int(constant) + 3:
            model = SARIMAX(
                y,
                order=(p, d, q),
                seasonal_order=seasonal_order,
                trend="c" if constant else "n",
                simple_differencing=True,
                concentrate_scale=True,
            )
            try:
                result = model.fit(disp=False, maxiter=50)
                aicc = float(result.aicc)
            except (ValueError, np.linalg.LinAlgError):
                aicc = math.inf
            if not math.isfinite(aicc):
                aicc = math.inf
        fits[key] = (aicc, result)
        return aicc

    constant = d + seasonal_d <= 1
    best = _stepwise(fits, trial, constant)
    aicc, result = fits[best]
    if result is None:
        return naive(y, horizon, levels, "no ARIMA order could be fitted")
    p, q, with_constant = best
    return _arima_forecast(
        y, (p, d, q), seasonal_order, with_constant, result, aicc, horizon, levels
    )


# --- Combination and entry point ------------------------------------------------------


def combine(members: Sequence[Fit], levels: Sequence[int]) -> Fit:
    """The mean of the members' point forecasts and of their interval bounds."""
    point = np.mean([m.point for m in members], axis=0)
    bounds = {
        level: (
            np.mean([m.bounds[level][0] for m in members], axis=0),
            np.mean([m.bounds[level][1] for m in members], axis=0),
        )
        for level in levels
    }
    return Fit(
        "Combination",
        point,
        bounds,
        {"rule": "mean of points and of interval bounds", "members": len(members)},
        members=list(members),
    )


FITTERS: dict[ForecastModel, Callable[[Array, int, int, Sequence[int]], Fit]] = {
    ForecastModel.ETS: fit_ets,
    ForecastModel.THETA: fit_theta,
    ForecastModel.ARIMA: fit_arima,
}


def fit(
    values: Sequence[float] | Array,
    period: int,
    horizon: int,
    model: ForecastModel | str = ForecastModel.AUTO,
    levels: Sequence[int] = DEFAULT_LEVELS,
) -> Fit:
    """Fit `model` to one series and forecast `horizon` steps (the numbers, no labels).

    Args:
        values: the series, oldest first, finite, at least MIN_POINTS of them.
        period: seasonal period in steps, 1 for none; ignored when the series holds fewer
            than two full periods (too little to estimate a season from).
        horizon: steps ahead, at least 1.
        model: one of ForecastModel; `auto` is the combination.
        levels: interval levels in percent.

    Raises:
        ForecastError: too few points, a non-finite value or a horizon below 1.
    """
    y = np.asarray(values, dtype=float)
    kind = ForecastModel(model)
    levels = sorted(set(levels))
    if len(y) < MIN_POINTS:
        raise ForecastError(f"a series needs at least {MIN_POINTS} points, got {len(y)}")
    if not np.all(np.isfinite(y)):
        raise ForecastError("values must be finite numbers")
    if horizon < 1:
        raise ForecastError("horizon must be at least 1")
    if period < 1:
        raise ForecastError("period must be at least 1")
    if float(np.ptp(y)) == 0.0:
        return naive(y, horizon, levels, "constant series")
    if len(y) < 2 * period:
        period = 1
    if kind in (ForecastModel.AUTO, ForecastModel.COMBINATION):
        members = []
        for fitter in FITTERS.values():
            try:
                member = fitter(y, period, horizon, levels)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if _finite(member):
                members.append(member)
        if not members:
            return naive(y, horizon, levels, "no member of the combination could be fitted")
        return combine(members, levels) if len(members) > 1 else members[0]
    result = FITTERS[kind](y, period, horizon, levels)
    if not _finite(result):
        return naive(y, horizon, levels, f"{kind.value} gave non-finite forecasts")
    return result


def forecast(
    values: Sequence[float] | Array,
    period: int,
    horizon: int,
    model: ForecastModel | str = ForecastModel.AUTO,
    levels: Sequence[int] = DEFAULT_LEVELS,
    series_id: str = "series",
) -> SeriesForecast:
    """Forecast one series: the contract's result (point, intervals, model, library).

    Args: as `fit`, plus `series_id`, echoed in the result. Timestamps of the forecast
    steps are the transport's business (it knows the request's labels).
    """
    started = time.perf_counter()
    result = fit(values, period, horizon, model, levels)
    return SeriesForecast(
        id=series_id,
        point=result.point.tolist(),
        intervals=[
            Interval(level=level, lower=lo.tolist(), upper=hi.tolist())
            for level, (lo, hi) in sorted(result.bounds.items())
        ],
        model=result.describe(),
        library=LIBRARY,
        seconds=round(time.perf_counter() - started, 4),
    )
