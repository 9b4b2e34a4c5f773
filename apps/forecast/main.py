"""The forecast service: transport only. The statistical methods live in `methods`.

Series are fitted in FORECAST_WORKER_PROCESSES worker processes (`workers`), a request's at
most FORECAST_MAX_PARALLEL_SERIES at a time (one fewer than the workers, so one is left to
other requests), within the request's time budget
(FORECAST_TIME_BUDGET_S). Past it only that request fails: the workers running its fits are
killed and replaced, the other requests' fits go on, and it gets a 503 of type
`over-budget` (no Retry-After: the same request would run out again). A 503 with
Retry-After means the service itself cannot work now (every worker restarting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from apps.forecast.methods import LIBRARY, ForecastError, forecast
from apps.forecast.settings import ForecastSettings
from apps.forecast.workers import Workers
from consort.contracts.forecast import ForecastRequest, ForecastResponse, SeriesForecast, SeriesIn
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("forecast")
tracer = get_tracer("forecast")
settings = ForecastSettings()
kit = ServiceKit(settings, version="1.0.0")


workers = kit.load_model(
    "statsmodels",
    lambda: Workers(
        settings.worker_processes,
        warm_up=(forecast, ([1.0, 2.0, 3.0, 4.0], 1, 1, "ets")),
        preload=["apps.forecast.methods"],
    ),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if (pool := workers.loaded) is not None:
        pool.close()


app = create_app(
    kit,
    title="Consort forecast",
    description="Forecasts with prediction intervals: ETS, Theta, ARIMA and their combination.",
    lifespan=lifespan,
)
kit.extra_models.append(LIBRARY)  # the models are fitted per request, from this library


def _future_times(series: SeriesIn) -> list[datetime] | None:
    """The times of the forecast steps, when the request labelled its points."""
    import pandas as pd

    if series.timestamps is not None and len(series.timestamps) >= 2:
        step = series.timestamps[1] - series.timestamps[0]
        last = series.timestamps[-1]
        try:
            return [last + step * k for k in range(1, series.horizon + 1)]
        except OverflowError as exc:
            raise invalid_field(
                "body.series.timestamps",
                "too late to extend",
                detail=f"series {series.id!r}: the forecast steps would pass the year 9999",
            ) from exc
    if series.start is not None and series.frequency is not None:
        try:
            index = pd.date_range(
                series.start, periods=len(series.values) + series.horizon, freq=series.frequency
            )
        except ValueError as exc:
            raise invalid_field(
                "body.series.frequency",
                str(exc),
                detail=f"frequency {series.frequency!r} is not a pandas offset alias "
                "(D, h, MS, QS, YS)",
            ) from exc
        return [t.to_pydatetime() for t in index[len(series.values) :]]
    return None


@app.post("/v1/forecasts", response_model=ForecastResponse, tags=["forecast"])
async def create_forecasts(request: ForecastRequest) -> ForecastResponse:
    """Point forecasts and prediction intervals for one or many series."""
    pool = workers.get()
    if not pool.ready:
        # Fail fast rather than queue behind workers that are still starting.
        raise unavailable(
            "Restarting",
            "Every forecast worker is restarting; retry in a few seconds.",
            slug="workers-restarting",
            retry_after_s=3,
        )
    labels = [_future_times(s) for s in request.series]
    jobs = [(s.values, s.period, s.horizon, s.model, s.levels, s.id) for s in request.series]
    with tracer.start_as_current_span("model.infer", attributes={"series": len(jobs)}):
        try:
            async with asyncio.timeout(settings.time_budget_s):
                results: list[SeriesForecast] = await pool.map(
                    forecast, jobs, lanes=settings.max_parallel_series
                )
        except TimeoutError as exc:
            # Its fits were killed with their workers; other requests' fits go on.
            raise ProblemError(
                503,
                "Over budget",
                f"{len(jobs)} series did not finish within the {settings.time_budget_s:g} s "
                "budget of one request: send fewer series (or shorter ones) per request. "
                "The same request would run out again.",
                slug="over-budget",
            ) from exc
        except ForecastError as exc:
            raise ProblemError(422, "Cannot forecast", str(exc), slug="cannot-forecast") from exc
    for result, times in zip(results, labels, strict=True):
        result.timestamps = times
        kit.metrics.inference.labels(result.model.name).observe(result.seconds)
    return ForecastResponse(forecasts=results)
