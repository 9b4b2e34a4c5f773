"""The anomaly service: transport only. Each series is a `MetricSeriesActor` (actors/),
scored by the detector in `detector`.

Points arrive by `POST /v1/metrics/{series}/points` (scores in the answer) or as
`metrics.observed` events (bulk delivery; the points of one series in a delivery go to its
actor in one call, series in parallel). Both go through this app's sidecar to the series'
actor, wherever placement puts it. Anomalous points leave as `anomalies.detected` events.
`POST /v1/anomalies/detect` scores a whole series at once, without actors (offline mode).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import ValidationError

from actors.interfaces import METRIC_SERIES_ACTOR, ObserveCommand, ObserveResult, TimedValue
from actors.metric_series import MetricSeriesActor, SeriesServices, detector_config
from apps.anomaly.detector import detect, model_info
from apps.anomaly.settings import AnomalySettings
from consort.contracts.anomaly import (
    METRICS_OBSERVED,
    SERIES_ID_PATTERN,
    DetectRequest,
    DetectResult,
    MetricPoint,
    MetricsObserved,
    PointsIn,
    ScoresOut,
    ScoreStatus,
    SeriesConfig,
    SeriesSnapshot,
)
from consort.contracts.events import PUBSUB
from consort.kit.actors import actor_runtime_config, mount_actor_runtime, register_actor
from consort.kit.dapr import SidecarError
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.events import (
    Bulk,
    CloudEvent,
    Delivery,
    Subscription,
    declare_subscriptions,
    deliveries,
    delivery_response,
)
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("anomaly")
T = TypeVar("T")
tracer = get_tracer("anomaly")
settings = AnomalySettings()
kit = ServiceKit(settings, version="1.0.0")

SeriesId = Annotated[
    str, PathParam(pattern=SERIES_ID_PATTERN, description="The series id (1 to 200 characters).")
]


def _start_fitter() -> ProcessPoolExecutor:
    # One BLAS thread per worker: the workers are the parallelism (as in forecast).
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    pool = ProcessPoolExecutor(
        settings.fit_processes, mp_context=multiprocessing.get_context("spawn")
    )
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from dapr.actor import ActorRuntime

    ActorRuntime.set_actor_config(
        actor_runtime_config(
            idle_timeout_s=settings.actor_idle_timeout_s,
            scan_interval_s=settings.actor_scan_interval_s,
        )
    )
    services = SeriesServices(
        sidecar=kit.sidecar,
        pubsub=settings.pubsub_name,
        source=settings.app_id,
        default_config=settings.default_series,
        refit_interval=timedelta(seconds=settings.refit_interval_s),
        offload=offload,
    )
    await register_actor(
        MetricSeriesActor,
        kit.sidecar,
        actor_factory=lambda ctx, actor_id: MetricSeriesActor(ctx, actor_id, services),
    )
    yield
    if (pool := fitters.loaded) is not None:
        pool.shutdown(wait=False, cancel_futures=True)


app = create_app(
    kit,
    title="Consort anomaly",
    description=(
        "Online anomaly scoring, one Dapr actor per metric series (STL season, robust "
        "exponential smoothing, adaptive robust-z threshold), and offline scoring of a series."
    ),
    lifespan=lifespan,
)
mount_actor_runtime(app)
kit.extra_models.append(model_info(detector_config(settings.default_series)))

POINTS = Counter(
    "consort_anomaly_points",
    "Points taken by series actors, by verdict (scored, warming_up, duplicate, late).",
    ["status"],
    registry=kit.metrics.registry,
)

# Serialise offline detections: each holds the GIL for up to seconds.
_detect_slot = asyncio.Semaphore(1)


async def _call_actor(series: str, method: str, body: Any = None) -> Any:
    return await kit.sidecar.invoke_actor(
        METRIC_SERIES_ACTOR, series, method, json=body, timeout_s=settings.actor_call_timeout_s
    )


async def observe(
    series: str, points: list[MetricPoint], config: SeriesConfig | None
) -> ObserveResult:
    command = ObserveCommand(
        points=[TimedValue(t=p.timestamp.timestamp(), v=p.value) for p in points], config=config
    )
    result = ObserveResult.model_validate(
        await _call_actor(series, "Observe", command.model_dump(mode="json"))
    )
    for status, count in collections.Counter(s.status.value for s in result.scores).items():
        POINTS.labels(status).inc(count)
    return result


@app.post("/v1/metrics/{series}/points", response_model=ScoresOut, tags=["metrics"])
async def add_points(series: SeriesId, request: PointsIn) -> ScoresOut:
    """Score points of a series online and keep them in its window.

    Points are taken oldest first. A point older than the series' newest is `late` and
    rejected; the same timestamp and value again is a `duplicate` and changes nothing.
    """
    with tracer.start_as_current_span("series.observe", attributes={"points": len(request.points)}):
        result = await observe(series, request.points, request.config)
    if result.conflict:
        raise ProblemError(409, "Series config conflict", result.conflict, slug="series-conflict")
    config = request.config or settings.default_series
    by_time = {p.timestamp.timestamp(): i for i, p in enumerate(request.points)}
    # In the order the points were sent.
    scores = sorted(result.scores, key=lambda s: by_time.get(s.timestamp, 0))
    return ScoresOut(series=series, scores=scores, model=model_info(detector_config(config)))


@app.get("/v1/metrics/{series}", response_model=SeriesSnapshot, tags=["metrics"])
async def get_series(series: SeriesId) -> Any:
    """The series' window of points, their scores and its model."""
    snapshot = await _call_actor(series, "Snapshot")
    if snapshot is None:
        raise ProblemError(
            404, "Unknown series", f"series {series!r} has no points", slug="not-found"
        )
    return snapshot


@app.delete("/v1/metrics/{series}", status_code=204, tags=["metrics"])
async def delete_series(series: SeriesId) -> Response:
    """Forget a series: its points, model and refit reminder."""
    if not await _call_actor(series, "Forget"):
        raise ProblemError(
            404, "Unknown series", f"series {series!r} has no points", slug="not-found"
        )
    return Response(status_code=204)


@app.post("/v1/metrics/{series}/refit", response_model=SeriesSnapshot, tags=["metrics"])
async def refit_series(series: SeriesId) -> Any:
    """Fit the series' model to its window now (what its reminder does periodically)."""
    if not await _call_actor(series, "Refit"):
        raise ProblemError(
            409,
            "Cannot fit yet",
            f"series {series!r} has too few points to fit (or none)",
            slug="too-few-points",
        )
    return await _call_actor(series, "Snapshot")


@app.post("/v1/anomalies/detect", response_model=DetectResult, tags=["anomalies"])
async def detect_anomalies(request: DetectRequest) -> DetectResult:
    """Score a whole series at once (offline mode), as the online detector would have."""
    try:
        async with asyncio.timeout(settings.detect_time_budget_s), _detect_slot:
            with tracer.start_as_current_span(
                "model.infer", attributes={"values": len(request.values)}
            ):
                return await offload(
                    detect,
                    request.values,
                    request.period,
                    request.threshold or settings.threshold,
                )
    except ValueError as exc:
        raise invalid_field("body.values", "too short for the period", detail=str(exc)) from exc
    except TimeoutError as exc:
        raise unavailable(
            "Time budget exceeded",
            f"scoring did not finish within {settings.detect_time_budget_s:g} s: send a "
            "shorter series, or a shorter period",
            slug="time-budget-exceeded",
            retry_after_s=5,
        ) from exc


# -- events -----------------------------------------------------------------------------------
declare_subscriptions(
    app, [Subscription(PUBSUB, METRICS_OBSERVED, "/events/metrics-observed", bulk=Bulk())]
)


@app.post("/events/metrics-observed", include_in_schema=False)
async def on_metrics_observed(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Score delivered points, series by series; malformed events go to the dead letters.

    Idempotent: a redelivered event's points are duplicates for the actor.
    """
    statuses: dict[str | None, Delivery] = {}
    by_series: dict[str, list[tuple[str | None, MetricsObserved]]] = {}
    for entry_id, raw in deliveries(body):
        try:
            event = MetricsObserved.model_validate(CloudEvent.model_validate(raw).data)
        except ValidationError as exc:
            log.error("poison metrics.observed event, dropped to dead letter: %s", exc)
            statuses[entry_id] = Delivery.DROP
            continue
        by_series.setdefault(event.series, []).append((entry_id, event))
    slots = asyncio.Semaphore(settings.ingest_parallel_series)

    async def score(series: str, events: list[tuple[str | None, MetricsObserved]]) -> None:
        configs = {e.config for _, e in events if e.config is not None}
        if len(configs) > 1:  # unusual: one call per event sorts out which conflict
            for entry in events:
                await score(series, [entry])
            return
        entries = [entry for entry, _ in events]
        try:
            async with slots:
                result = await observe(
                    series, [p for _, e in events for p in e.points], next(iter(configs), None)
                )
        except SidecarError as exc:
            log.warning("series %s not scored yet, will be redelivered: %s", series, exc)
            statuses.update(dict.fromkeys(entries, Delivery.RETRY))
            return
        if result.conflict:
            log.error("metrics.observed of %s dropped to dead letter: %s", series, result.conflict)
            statuses.update(dict.fromkeys(entries, Delivery.DROP))
            return
        late = sum(s.status is ScoreStatus.LATE for s in result.scores)
        if late:
            log.warning("series %s: %d late points rejected", series, late)
        statuses.update(dict.fromkeys(entries, Delivery.SUCCESS))

    await asyncio.gather(*(score(s, events) for s, events in by_series.items()))
    return delivery_response(statuses)
