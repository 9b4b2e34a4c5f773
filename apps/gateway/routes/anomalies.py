"""Anomaly routes: score a whole series at once (offline), and the anomalies detected
recently. `anomalies.detected` events feed the recent ones (`apps.gateway.events`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from apps.gateway.calls import SidecarDep, relay, settings
from apps.gateway.edge import requires
from apps.gateway.read_models import RECENT_ANOMALIES_KEY
from consort.contracts.anomaly import SERIES_ID_PATTERN, DetectRequest, DetectResult
from consort.contracts.gateway import RecentAnomalies
from consort.kit.events import read_tracked

router = APIRouter(prefix="/anomalies", tags=["anomalies"], dependencies=[requires("timeseries")])


@router.post("/detect", response_model=DetectResult)
async def detect(request: DetectRequest, sc: SidecarDep) -> Any:
    """Score a whole series at once (offline mode): equally spaced values, oldest first.

    Each value is scored from the values before it only, as the online detector would; the
    season is estimated when `period` is not given.
    """
    return await relay(
        sc,
        settings.anomaly_app_id,
        "v1/anomalies/detect",
        request,
        timeout_s=settings.anomaly_timeout_s,
    )


@router.get("", response_model=RecentAnomalies)
async def recent_anomalies(
    sc: SidecarDep,
    series: Annotated[
        str | None, Query(pattern=SERIES_ID_PATTERN, description="Only this series.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many (1 to 200).")] = 50,
) -> RecentAnomalies:
    """The most recent anomalies detected (fed by `anomalies.detected` events), newest first."""
    stored = await read_tracked(sc, settings.statestore_name, RECENT_ANOMALIES_KEY, RecentAnomalies)
    found = [a for a in (stored.anomalies if stored else []) if series in (None, a.series)]
    return RecentAnomalies(anomalies=found[:limit])
