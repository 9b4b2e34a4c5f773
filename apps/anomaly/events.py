"""The anomaly app's event handler: `metrics.observed` in bulk, one actor call per series."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from apps.anomaly.series import log, observe, settings
from consort.contracts.anomaly import METRICS_OBSERVED, MetricsObserved, ScoreStatus
from consort.contracts.events import PUBSUB
from consort.kit.dapr import SidecarError
from consort.kit.events import (
    Bulk,
    CloudEvent,
    Delivery,
    Subscription,
    deliveries,
    delivery_response,
)

router = APIRouter(include_in_schema=False)
SUBSCRIPTIONS = [Subscription(PUBSUB, METRICS_OBSERVED, "/events/metrics-observed", bulk=Bulk())]


@router.post("/events/metrics-observed")
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
