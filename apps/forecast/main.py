"""The forecast service: transport only. The statistical methods live in `methods`.

Series of one request are fitted in parallel in worker processes (statsmodels holds the
GIL while fitting), at most FORECAST_MAX_PARALLEL_SERIES at a time, within the request's
time budget (FORECAST_TIME_BUDGET_S): past it the workers are killed and restarted (warm
before they take work; meanwhile requests get a quick 503 to retry), and
the service answers 503 and says so.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from multiprocessing.pool import Pool
from typing import Any

from fastapi import FastAPI

from apps.forecast.methods import LIBRARY, ForecastError, forecast
from apps.forecast.settings import ForecastSettings
from consort.contracts.forecast import ForecastRequest, ForecastResponse, SeriesForecast, SeriesIn
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("forecast")
tracer = get_tracer("forecast")
settings = ForecastSettings()
kit = ServiceKit(settings, version="1.0.0")


class Workers:
    """Worker processes that fit series; a request past its budget gets them killed.

    A `multiprocessing` pool, not a `concurrent.futures` one: it can be terminated, so
    fits that outlive their request's budget do not hold the workers from the next one.
    """

    def __init__(self, size: int) -> None:
        # One BLAS thread each: the workers are the parallelism, and BLAS threads on top
        # of them made fits 10 to 50 times slower on two cores. Spawned workers inherit it.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = "1"
        self.size = size
        #: Clear while fresh workers import statsmodels (seconds on a busy machine).
        self.ready = threading.Event()
        self._restarting = threading.Lock()
        self._pool = self._start()
        self._warm_up()

    def _warm_up(self) -> None:
        # The first request should not pay for importing statsmodels: a request queued
        # behind cold workers could run out of its budget, and its timeout would restart
        # the workers again, cold, for the next one.
        self._pool.starmap(forecast, [([1.0, 2.0, 3.0, 4.0], 1, 1, "ets")] * self.size)
        self.ready.set()

    def _start(self) -> Pool:
        # Fresh interpreters, not forks of this one with its threads and sockets.
        return multiprocessing.get_context("spawn").Pool(self.size)

    def submit(self, *args: Any) -> asyncio.Future[SeriesForecast]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SeriesForecast] = loop.create_future()

        def settle(outcome: Any, failed: bool) -> None:
            if future.done():  # cancelled: the request gave up
                return
            if failed:
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self._pool.apply_async(
            forecast,
            args,
            callback=lambda r: loop.call_soon_threadsafe(settle, r, False),
            error_callback=lambda e: loop.call_soon_threadsafe(settle, e, True),
        )
        return future

    def restart(self) -> None:
        """Kill every worker (and the fits they run) and start fresh ones; a restart
        asked for while one is under way is that one."""
        if not self._restarting.acquire(blocking=False):
            return
        try:
            self.ready.clear()
            old, self._pool = self._pool, self._start()
            old.terminate()
            old.join()
            self._warm_up()
        finally:
            self._restarting.release()

    def close(self) -> None:
        self._pool.terminate()


_background: set[asyncio.Task[None]] = set()
workers = kit.load_model("statsmodels", lambda: Workers(settings.max_parallel_series))


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
    if not pool.ready.is_set():
        # Fail fast rather than queue behind workers that are still starting.
        raise unavailable(
            "Restarting",
            "The forecast workers are restarting after a request ran out of its time "
            "budget; retry in a few seconds.",
            slug="workers-restarting",
            retry_after_s=3,
        )
    labels = [_future_times(s) for s in request.series]
    jobs = [
        pool.submit(s.values, s.period, s.horizon, s.model, s.levels, s.id) for s in request.series
    ]
    with tracer.start_as_current_span("model.infer", attributes={"series": len(jobs)}):
        try:
            results: list[SeriesForecast] = await asyncio.wait_for(
                asyncio.gather(*jobs), timeout=settings.time_budget_s
            )
        except TimeoutError as exc:
            for job in jobs:
                job.cancel()
            # Stop the fits still running; this request answers now, not after the
            # fresh workers have warmed up.
            restart = asyncio.create_task(asyncio.to_thread(pool.restart))
            _background.add(restart)
            restart.add_done_callback(_background.discard)
            raise unavailable(
                "Time budget exceeded",
                f"{len(jobs)} series did not finish within the {settings.time_budget_s:g} s "
                "budget of one request: send fewer series (or shorter ones) per request.",
                slug="time-budget-exceeded",
                retry_after_s=1,
            ) from exc
        except ForecastError as exc:
            raise ProblemError(422, "Cannot forecast", str(exc), slug="cannot-forecast") from exc
    for result, times in zip(results, labels, strict=True):
        result.timestamps = times
        kit.metrics.inference.labels(result.model.name).observe(result.seconds)
    return ForecastResponse(forecasts=results)
