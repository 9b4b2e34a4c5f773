"""Forecasting models of the forecast service (no sidecar): accuracy, intervals, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from apps.forecast.methods import LIBRARY, ForecastError, fit, forecast
from consort.contracts.forecast import ForecastModel, SeriesForecast

PERIOD = 12


def seasonal_series(n: int = 96, seed: int = 0) -> np.ndarray:
    """Monthly-like: level 100, a gentle trend, a yearly season of amplitude 10, noise 1."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, 1, n)
    return 100 + 0.2 * t + 10 * np.sin(2 * np.pi * t / PERIOD) + noise


def truth(start: int, horizon: int) -> np.ndarray:
    t = np.arange(start, start + horizon)
    return 100 + 0.2 * t + 10 * np.sin(2 * np.pi * t / PERIOD)


@pytest.mark.parametrize("model", ["ets", "theta", "arima", "combination"])
def test_a_seasonal_series_is_forecast_within_tolerance(model: str) -> None:
    y = seasonal_series()
    result = fit(y, PERIOD, 24, model)
    error = np.mean(np.abs(result.point - truth(len(y), 24)))
    # The season's amplitude is 10 and the noise 1: a model that misses the season errs by
    # about 6 on average, one that has it by about 1.
    assert error < 2.5, (result.name, error)


@pytest.mark.parametrize("model", ["ets", "theta", "arima", "combination"])
def test_intervals_nest_and_widen_with_the_horizon(model: str) -> None:
    y = np.cumsum(np.random.default_rng(1).normal(0.5, 2, 80)) + 50
    result = fit(y, 1, 12, model, levels=(80, 95))
    lo80, hi80 = result.bounds[80]
    lo95, hi95 = result.bounds[95]
    assert np.all(lo95 <= lo80) and np.all(hi80 <= hi95)
    assert np.all(lo80 <= result.point) and np.all(result.point <= hi80)
    width = hi95 - lo95
    assert np.all(np.diff(width) >= -1e-9), width
    assert width[-1] > width[0]


def test_ets_picks_a_seasonal_form_for_seasonal_data() -> None:
    result = fit(seasonal_series(), PERIOD, 12, "ets")
    assert result.name.startswith("ETS(") and not result.name.endswith(",N)"), result.name
    assert {"alpha", "gamma"} <= set(result.parameters)


def test_multiplicative_forms_are_not_tried_on_non_positive_data() -> None:
    y = seasonal_series() - 110  # crosses zero
    result = fit(y, PERIOD, 12, "ets")
    assert "M" not in result.name, result.name


def test_arima_takes_a_seasonal_difference_for_a_strong_season() -> None:
    result = fit(seasonal_series(), PERIOD, 12, "arima")
    assert result.parameters["seasonal_order"] == [0, 1, 1, PERIOD], result.name


def test_a_constant_series_gets_a_flat_forecast_and_no_spread() -> None:
    result = fit([5.0] * 30, PERIOD, 6, "auto")
    assert result.name == "Naive"
    assert result.point.tolist() == [5.0] * 6
    for lower, upper in result.bounds.values():
        assert lower.tolist() == [5.0] * 6 and upper.tolist() == [5.0] * 6


@pytest.mark.parametrize("model", list(ForecastModel))
def test_short_series_are_handled(model: ForecastModel) -> None:
    # Three points, and a period longer than the series: the season is dropped.
    result = fit([1.0, 2.0, 4.0], PERIOD, 5, model)
    assert len(result.point) == 5 and np.all(np.isfinite(result.point))


def test_too_few_points_is_a_clear_error() -> None:
    with pytest.raises(ForecastError, match="at least 3 points"):
        fit([1.0, 2.0], 1, 3)


def test_non_finite_values_are_a_clear_error() -> None:
    with pytest.raises(ForecastError, match="finite"):
        fit([1.0, float("nan"), 2.0, 3.0], 1, 3)


def test_the_combination_is_the_mean_of_its_members() -> None:
    result = fit(seasonal_series(), PERIOD, 6, "combination")
    assert result.name == "Combination" and len(result.members) == 3
    assert np.allclose(result.point, np.mean([m.point for m in result.members], axis=0))
    lower = np.mean([m.bounds[95][0] for m in result.members], axis=0)
    assert np.allclose(result.bounds[95][0], lower)


def test_forecast_returns_the_contract_with_model_and_library() -> None:
    result = forecast(seasonal_series(), PERIOD, 6, "theta", (80, 95), series_id="s-1")
    assert isinstance(result, SeriesForecast)
    assert result.id == "s-1" and len(result.point) == 6
    assert [i.level for i in result.intervals] == [80, 95]
    assert result.model.name == "Theta" and result.library == LIBRARY
    # The whole result is JSON: what the service returns.
    assert SeriesForecast.model_validate_json(result.model_dump_json()) == result
