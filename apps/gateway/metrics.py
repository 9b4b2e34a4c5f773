"""Metric series and their anomalies at the gateway: `/v1/metrics/...` and `/v1/anomalies...`.

Points reach the anomaly service two ways: scored at once through service invocation (the
answer carries each point's score), or, with `wait=false`, published as a
`metrics.observed` event and scored by the series' actor shortly after (202). Anomalies
come back as `anomalies.detected` events; the most recent ones are kept here, in the
state store, for `GET /v1/anomalies`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from apps.gateway.calls import ERRORS, SidecarDep, forward, kit, log, settings
from consort.contracts.anomaly import (
    ANOMALIES_DETECTED,
    METRICS_OBSERVED,
    SERIES_ID_PATTERN,
    AnomaliesDetected,
    DetectRequest,
    DetectResult,
    MetricsObserved,
    PointsIn,
    ScoresOut,
    SeriesSnapshot,
)
from consort.contracts.events import PUBSUB
from consort.kit.events import (
    Bulk,
    Subscription,
    fold_delivery,
    read_tracked,
)

RECENT_KEY = "anomalies:recent"

router = APIRouter(prefix="/v1", responses=ERRORS)
SeriesId = Annotated[
    str, PathParam(pattern=SERIES_ID_PATTERN, description="The series id (1 to 200 characters).")
]


class PointsAccepted(BaseModel):
    """Points published for scoring (`wait=false`)."""

    series: str
    points: int
    event_id: str = Field(description="The `metrics.observed` event's id.")


class RecentAnomalies(BaseModel):
    """The most recent `anomalies.detected` events, newest first."""

    anomalies: list[AnomaliesDetected]


@router.post(
    "/metrics/{series}/points",
    response_model=ScoresOut,
    tags=["metrics"],
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
    applies when the series is new.
    """
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
    reply = await forward(
        sc,
        settings.anomaly_app_id,
        f"v1/metrics/{series}/points",
        json=request.model_dump(mode="json"),
        timeout_s=settings.anomaly_timeout_s,
    )
    return reply.json()


@router.get("/metrics/{series}", response_model=SeriesSnapshot, tags=["metrics"])
async def get_series(series: SeriesId, sc: SidecarDep) -> Any:
    """A series' window of points, the score of each, and its model."""
    reply = await forward(sc, settings.anomaly_app_id, f"v1/metrics/{series}", http_method="GET")
    return reply.json()


@router.delete("/metrics/{series}", status_code=204, tags=["metrics"])
async def delete_series(series: SeriesId, sc: SidecarDep) -> Response:
    """Forget a series: its points, model and refit reminder."""
    await forward(sc, settings.anomaly_app_id, f"v1/metrics/{series}", http_method="DELETE")
    return Response(status_code=204)


@router.post("/anomalies/detect", response_model=DetectResult, tags=["anomalies"])
async def detect(request: DetectRequest, sc: SidecarDep) -> Any:
    """Score a whole series at once (offline mode): equally spaced values, oldest first.

    Each value is scored from the values before it only, as the online detector would; the
    season is estimated when `period` is not given.
    """
    reply = await forward(
        sc,
        settings.anomaly_app_id,
        "v1/anomalies/detect",
        json=request.model_dump(mode="json"),
        timeout_s=settings.anomaly_timeout_s,
    )
    return reply.json()


@router.get("/anomalies", response_model=RecentAnomalies, tags=["anomalies"])
async def recent_anomalies(
    sc: SidecarDep,
    series: Annotated[
        str | None, Query(pattern=SERIES_ID_PATTERN, description="Only this series.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many (1 to 200).")] = 50,
) -> RecentAnomalies:
    """The most recent anomalies detected (fed by `anomalies.detected` events), newest first."""
    stored = await read_tracked(sc, settings.statestore_name, RECENT_KEY, RecentAnomalies)
    found = [a for a in (stored.anomalies if stored else []) if series in (None, a.series)]
    return RecentAnomalies(anomalies=found[:limit])


SUBSCRIPTIONS = [
    Subscription(PUBSUB, ANOMALIES_DETECTED, "/events/anomalies-detected", bulk=Bulk())
]


def install_events(app: FastAPI) -> None:
    @app.post("/events/anomalies-detected", include_in_schema=False)
    async def on_anomalies_detected(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        """Keep the most recent anomalies; a redelivered event is kept once."""

        def keep(
            current: RecentAnomalies | None, fresh: list[AnomaliesDetected]
        ) -> RecentAnomalies:
            newest = sorted(fresh, key=lambda a: a.detected_at, reverse=True)
            kept = [*newest, *(current.anomalies if current else [])]
            return RecentAnomalies(anomalies=kept[: settings.anomalies_kept])

        return await fold_delivery(
            body,
            sidecar=kit.sidecar,
            store=settings.statestore_name,
            topic=ANOMALIES_DETECTED,
            payload=AnomaliesDetected,
            key=RECENT_KEY,
            model=RecentAnomalies,
            update=keep,
            log=log,
        )
