"""Metric-series routes: points in (scored at once, or published), a series' window, its
deletion. The anomaly service keeps each series in an actor.

Points reach the anomaly service two ways: scored at once through service invocation (the
answer carries each point's score), or, with `wait=false`, published as a
`metrics.observed` event and scored by the series' actor shortly after (202).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from apps.gateway.calls import SidecarDep, forward, relay, settings
from apps.gateway.edge import requires
from consort.contracts.anomaly import (
    METRICS_OBSERVED,
    SERIES_ID_PATTERN,
    BatchPointsIn,
    BatchScoresOut,
    MetricsObserved,
    PointsIn,
    ScoresOut,
    SeriesSnapshot,
)
from consort.contracts.events import topic
from consort.contracts.gateway import BatchAccepted, PointsAccepted
from consort.kit.errors import invalid_field, unavailable

router = APIRouter(prefix="/metrics", tags=["metrics"], dependencies=[requires("timeseries")])

SeriesId = Annotated[
    str, PathParam(pattern=SERIES_ID_PATTERN, description="The series id (1 to 200 characters).")
]


@router.post(
    "/points",
    response_model=BatchScoresOut,
    responses={202: {"model": BatchAccepted, "description": "Published (`wait=false`)."}},
)
async def add_batch(
    request: BatchPointsIn,
    sc: SidecarDep,
    wait: Annotated[
        bool, Query(description="false: publish one `metrics.observed` per series, answer 202.")
    ] = True,
) -> Any:
    """Add points to many series at once and score them online, each series by its own
    actor, in parallel (up to 1,000 series and 10,000 points in all).

    Each series' outcome is its scores, or the problem that kept it from being scored (a
    config conflict: 409; its actor unreachable: 503), without failing the others.
    """
    if not wait:
        events = {
            str(uuid.uuid4()): MetricsObserved(
                series=s.series, points=s.points, config=s.config
            ).model_dump(mode="json")
            for s in request.series
        }
        failed = await sc.publish_bulk(
            settings.pubsub_name,
            METRICS_OBSERVED,
            events,
            source=settings.app_id,
            event_type=topic(METRICS_OBSERVED).event_type,
        )
        if failed:
            raise unavailable(
                "Not accepted",
                f"{len(failed)} of {len(events)} series were not published; send them again.",
                retry_after_s=1,
            )
        accepted = BatchAccepted(
            series=len(events), points=sum(len(s.points) for s in request.series)
        )
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    return await relay(
        sc,
        settings.anomaly_app_id,
        "v1/metrics/points",
        request,
        timeout_s=settings.anomaly_timeout_s,
    )


@router.post(
    "/{series}/points",
    response_model=ScoresOut,
    responses={202: {"model": PointsAccepted, "description": "Published (`wait=false`)."}},
)
async def add_points(
    series: SeriesId,
    request: PointsIn,
    sc: SidecarDep,
    wait: Annotated[
        bool, Query(description="false: publish as `metrics.observed` and answer 202.")
    ] = True,
) -> Any:
    """Add points to a series and score them online (its window and model are kept).

    A point older than the series' newest is `late` and rejected; the same timestamp and
    value again is a `duplicate` and changes nothing. `config` (period, step, threshold)
    applies when the series is new, or with `reset` (which needs `wait`).
    """
    if request.reset and not wait:
        raise invalid_field("body.reset", "needs wait=true: a reset is answered, not queued")
    if not wait:
        event = MetricsObserved(series=series, points=request.points, config=request.config)
        event_id = await sc.publish_event(
            settings.pubsub_name,
            METRICS_OBSERVED,
            event,
            event_id=str(uuid.uuid4()),
            source=settings.app_id,
        )
        accepted = PointsAccepted(series=series, points=len(request.points), event_id=event_id)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
    return await relay(
        sc,
        settings.anomaly_app_id,
        f"v1/metrics/{series}/points",
        request,
        timeout_s=settings.anomaly_timeout_s,
    )


@router.get("/{series}", response_model=SeriesSnapshot)
async def get_series(series: SeriesId, sc: SidecarDep) -> Any:
    """A series' window of points, the score of each, and its model."""
    reply = await forward(sc, settings.anomaly_app_id, f"v1/metrics/{series}", http_method="GET")
    return reply.json()


@router.delete("/{series}", status_code=204)
async def delete_series(series: SeriesId, sc: SidecarDep) -> Response:
    """Forget a series: its points, model and refit reminder."""
    await forward(sc, settings.anomaly_app_id, f"v1/metrics/{series}", http_method="DELETE")
    return Response(status_code=204)
