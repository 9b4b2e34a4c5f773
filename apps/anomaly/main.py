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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Response
from fastapi import Path as PathParam

from actors.metric_series import MetricSeriesActor, SeriesServices, detector_config
from apps.anomaly import events
from apps.anomaly.detector import detect, model_info
from apps.anomaly.series import (
    call_actor,
    fitters,
    kit,
    observe,
    offload,
    settings,
    tracer,
)
from consort.contracts.anomaly import (
    SERIES_ID_PATTERN,
    BatchPointsIn,
    BatchScoresOut,
    DetectRequest,
    DetectResult,
    PointsIn,
    ScoresOut,
    SeriesOutcome,
    SeriesPoints,
    SeriesSnapshot,
)
from consort.contracts.common import Problem
from consort.kit.actors import actor_runtime_config, mount_actor_runtime, register_actor
from consort.kit.dapr import SidecarError
from consort.kit.errors import ProblemError, unavailable
from consort.kit.events import declare_subscriptions
from consort.kit.service import create_app

SeriesId = Annotated[
    str, PathParam(pattern=SERIES_ID_PATTERN, description="The series id (1 to 200 characters).")
]


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
        "Online anomaly scoring, one Dapr actor per metric series (detectors: robust STL and "
        "exponential smoothing, robust z of changes, spectral residual, their ensemble), and "
        "offline scoring of a series."
    ),
    lifespan=lifespan,
)
mount_actor_runtime(app)
kit.extra_models.append(model_info(detector_config(settings.default_series)))

# Serialise offline detections: each holds the GIL for up to seconds.
_detect_slot = asyncio.Semaphore(1)


@app.post("/v1/metrics/{series}/points", response_model=ScoresOut, tags=["metrics"])
async def add_points(series: SeriesId, request: PointsIn) -> ScoresOut:
    """Score points of a series online and keep them in its window.

    Points are taken oldest first. A point older than the series' newest is `late` and
    rejected; the same timestamp and value again is a `duplicate` and changes nothing.
    """
    with tracer.start_as_current_span("series.observe", attributes={"points": len(request.points)}):
        result = await observe(series, request.points, request.config, request.reset)
    if result.conflict:
        raise ProblemError(409, "Series config conflict", result.conflict, slug="series-conflict")
    config = request.config or settings.default_series
    by_time = {p.timestamp.timestamp(): i for i, p in enumerate(request.points)}
    # In the order the points were sent.
    scores = sorted(result.scores, key=lambda s: by_time.get(s.timestamp, 0))
    return ScoresOut(series=series, scores=scores, model=model_info(detector_config(config)))


#: Series of one batch whose actors are called at once.
BATCH_FAN_OUT = 16


@app.post("/v1/metrics/points", response_model=BatchScoresOut, tags=["metrics"])
async def add_batch(request: BatchPointsIn) -> BatchScoresOut:
    """Score points of many series in one request: each series' points go to its own
    actor, up to 16 actors at a time. A series that cannot be scored (a config conflict,
    its actor unreachable) gets its problem in its outcome; the others are scored."""
    gate = asyncio.Semaphore(BATCH_FAN_OUT)

    async def one(item: SeriesPoints) -> SeriesOutcome:
        async with gate:
            try:
                result = await observe(item.series, item.points, item.config)
            except SidecarError as exc:
                problem = Problem(
                    title="Series unavailable", status=503, detail=f"{item.series}: {exc}"
                )
                return SeriesOutcome(series=item.series, problem=problem)
        if result.conflict:
            problem = Problem(title="Series config conflict", status=409, detail=result.conflict)
            return SeriesOutcome(series=item.series, problem=problem)
        by_time = {p.timestamp.timestamp(): i for i, p in enumerate(item.points)}
        scores = sorted(result.scores, key=lambda s: by_time.get(s.timestamp, 0))
        return SeriesOutcome(series=item.series, scores=scores)

    with tracer.start_as_current_span(
        "series.observe-batch", attributes={"series": len(request.series)}
    ):
        outcomes = await asyncio.gather(*(one(item) for item in request.series))
    return BatchScoresOut(
        results=list(outcomes),
        model=model_info(detector_config(settings.default_series)),
        points=sum(len(o.scores or []) for o in outcomes),
    )


@app.get("/v1/metrics/{series}", response_model=SeriesSnapshot, tags=["metrics"])
async def get_series(series: SeriesId) -> Any:
    """The series' window of points, their scores and its model."""
    snapshot = await call_actor(series, "Snapshot")
    if snapshot is None:
        raise ProblemError(
            404, "Unknown series", f"series {series!r} has no points", slug="not-found"
        )
    return snapshot


@app.delete("/v1/metrics/{series}", status_code=204, tags=["metrics"])
async def delete_series(series: SeriesId) -> Response:
    """Forget a series: its points, model and refit reminder."""
    if not await call_actor(series, "Forget"):
        raise ProblemError(
            404, "Unknown series", f"series {series!r} has no points", slug="not-found"
        )
    return Response(status_code=204)


@app.post("/v1/metrics/{series}/refit", response_model=SeriesSnapshot, tags=["metrics"])
async def refit_series(series: SeriesId) -> Any:
    """Fit the series' model to its window now (what its reminder does periodically)."""
    if not await call_actor(series, "Refit"):
        raise ProblemError(
            409,
            "Cannot fit yet",
            f"series {series!r} has too few points to fit (or none)",
            slug="too-few-points",
        )
    return await call_actor(series, "Snapshot")


@app.post("/v1/anomalies/detect", response_model=DetectResult, tags=["anomalies"])
async def detect_anomalies(request: DetectRequest) -> DetectResult:
    """Score a whole series at once (offline mode): streamed through the online detector,
    so each value is scored from the values before it only, as online."""
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
                    request.timestamps,
                    request.score_threshold or settings.score_threshold,
                    request.detector or settings.detector,
                )
    except TimeoutError as exc:
        raise unavailable(
            "Time budget exceeded",
            f"scoring did not finish within {settings.detect_time_budget_s:g} s: send a "
            "shorter series",
            slug="time-budget-exceeded",
            retry_after_s=5,
        ) from exc


declare_subscriptions(app, events.SUBSCRIPTIONS)
app.include_router(events.router)
