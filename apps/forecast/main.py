"""The forecast service: transport only. Models live in `models`.

Series of one request are fitted in parallel in worker processes (statsmodels holds the
GIL while fitting), at most FORECAST_MAX_PARALLEL_SERIES at a time, within the request's
time budget (FORECAST_TIME_BUDGET_S): past it the service answers 503 and says so.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from apps.forecast.models import LIBRARY, ForecastError, forecast
from apps.forecast.settings import ForecastSettings
from consort.contracts.common import FieldProblem
from consort.contracts.forecast import ForecastRequest, ForecastResponse, SeriesForecast, SeriesIn
from consort.errors import ProblemError
from consort.service import ServiceKit, create_app
from consort.telemetry import tracer as get_tracer

log = logging.getLogger("forecast")
tracer = get_tracer("forecast")
settings = ForecastSettings()
kit = ServiceKit(settings, version="1.0.0")
pool: ProcessPoolExecutor | None = None


def _start_pool() -> ProcessPoolExecutor:
    # Fresh interpreters (not forks of this one, with its threads and sockets), warmed up
    # with one tiny fit so the first request does not pay for importing statsmodels.
    # One BLAS thread each: the workers are the parallelism, and BLAS threads on top of
    # them made fits 10 to 50 times slower on two cores. Spawned workers inherit this.
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    executor = ProcessPoolExecutor(
        settings.max_parallel_series, mp_context=multiprocessing.get_context("spawn")
    )
    warm = [executor.submit(forecast, [1.0, 2.0, 3.0, 4.0], 1, 1, "ets") for _ in range(2)]
    for future in warm:
        future.result()
    return executor


pool_slot = kit.load_model("statsmodels", _start_pool)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if (executor := pool_slot.loaded) is not None:
        executor.shutdown(wait=False, cancel_futures=True)


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
            raise ProblemError(
                422,
                "Invalid request",
                f"series {series.id!r}: the forecast steps would pass the year 9999",
                slug="validation-error",
                errors=[FieldProblem(field="body.series.timestamps", message="too late to extend")],
            ) from exc
    if series.start is not None and series.frequency is not None:
        try:
            index = pd.date_range(
                series.start, periods=len(series.values) + series.horizon, freq=series.frequency
            )
        except ValueError as exc:
            raise ProblemError(
                422,
                "Invalid request",
                f"frequency {series.frequency!r} is not a pandas offset alias (D, h, MS, QS, YS)",
                slug="validation-error",
                errors=[FieldProblem(field="body.series.frequency", message=str(exc))],
            ) from exc
        return [t.to_pydatetime() for t in index[len(series.values) :]]
    return None


@app.post("/v1/forecasts", response_model=ForecastResponse, tags=["forecast"])
async def create_forecasts(request: ForecastRequest) -> ForecastResponse:
    """Point forecasts and prediction intervals for one or many series."""
    executor = pool_slot.get()
    loop = asyncio.get_running_loop()
    labels = [_future_times(s) for s in request.series]
    jobs = [
        loop.run_in_executor(
            executor, forecast, s.values, s.period, s.horizon, s.model, s.levels, s.id
        )
        for s in request.series
    ]
    with tracer.start_as_current_span("model.infer", attributes={"series": len(jobs)}):
        try:
            results: list[SeriesForecast] = await asyncio.wait_for(
                asyncio.gather(*jobs), timeout=settings.time_budget_s
            )
        except TimeoutError as exc:
            for job in jobs:
                job.cancel()
            raise ProblemError(
                503,
                "Time budget exceeded",
                f"{len(jobs)} series did not finish within the {settings.time_budget_s:g} s "
                "budget of one request: send fewer series (or shorter ones) per request.",
                slug="time-budget-exceeded",
                headers={"Retry-After": "1"},
            ) from exc
        except ForecastError as exc:
            raise ProblemError(422, "Cannot forecast", str(exc), slug="cannot-forecast") from exc
    for result, times in zip(results, labels, strict=True):
        result.timestamps = times
        kit.metrics.inference.labels(result.model.name).observe(result.seconds)
    return ForecastResponse(forecasts=results)
