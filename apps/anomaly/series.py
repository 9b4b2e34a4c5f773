"""What the anomaly app's routes and event handler share: its settings and kit, the fit
worker processes, and calls to the series actors through the sidecar (no web framework)."""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from prometheus_client import Counter

from actors.interfaces import METRIC_SERIES_ACTOR, ObserveCommand, ObserveResult, TimedValue
from apps.anomaly.detector import detect
from apps.anomaly.settings import AnomalySettings
from consort.contracts.anomaly import MetricPoint, SeriesConfig
from consort.kit.service import ServiceKit
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("anomaly")
T = TypeVar("T")
tracer = get_tracer("anomaly")
settings = AnomalySettings()
kit = ServiceKit(settings, version="1.0.0")


def _start_fitter() -> ProcessPoolExecutor:
    # One BLAS thread per worker: the workers are the parallelism (as in forecast).
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    # Forks of a fork server that imported the detector (statsmodels) once, not fresh
    # interpreters importing it each (about 4 CPU seconds a worker at start-up), nor forks
    # of this process with its threads and sockets.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["apps.anomaly.detector"])
    pool = ProcessPoolExecutor(settings.fit_processes, mp_context=context)
    # Warm up: the first fit should not pay for importing statsmodels in each worker.
    warm = [
        pool.submit(detect, [1.0, 2.0, 3.0, 2.0] * 5, 1, 5.0) for _ in range(settings.fit_processes)
    ]
    for future in warm:
        future.result()
    return pool


fitters = kit.load_model("fit-workers", _start_fitter)


async def offload(function: Callable[..., T], *args: Any) -> T:
    """Run `function(*args)` in a fit worker process (waiting for the workers at start-up)."""
    pool = await fitters.wait()
    return await asyncio.get_running_loop().run_in_executor(pool, function, *args)


POINTS = Counter(
    "consort_anomaly_points",
    "Points taken by series actors, by verdict (scored, warming_up, duplicate, late).",
    ["status"],
    registry=kit.metrics.registry,
)


async def call_actor(series: str, method: str, body: Any = None) -> Any:
    """Call `method` of the series' actor, within the actor call timeout."""
    return await kit.sidecar.invoke_actor(
        METRIC_SERIES_ACTOR, series, method, json=body, timeout_s=settings.actor_call_timeout_s
    )


async def observe(
    series: str, points: list[MetricPoint], config: SeriesConfig | None, reset: bool = False
) -> ObserveResult:
    """Hand points to the series' actor; its scores, counted by verdict in the metrics."""
    command = ObserveCommand(
        points=[TimedValue(t=p.timestamp.timestamp(), v=p.value) for p in points],
        config=config,
        reset=reset,
    )
    result = ObserveResult.model_validate(
        await call_actor(series, "Observe", command.model_dump(mode="json"))
    )
    for status, count in collections.Counter(s.status.value for s in result.scores).items():
        POINTS.labels(status).inc(count)
    return result
