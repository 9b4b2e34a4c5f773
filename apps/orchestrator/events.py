"""What the orchestrator subscribes to: an anomaly of a tracked series starts its forecast
run at once, not at the next scheduled run."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from grpc.aio import AioRpcError
from pydantic import ValidationError

from apps.orchestrator import schedule
from apps.orchestrator.engine import engine
from consort.contracts.anomaly import ANOMALIES_DETECTED, AnomaliesDetected
from consort.contracts.events import PUBSUB
from consort.contracts.workflows import FORECAST_AND_ALERT, ForecastRunInput
from consort.kit.dapr import SidecarError
from consort.kit.events import CloudEvent, Delivery, Subscription, delivery

log = logging.getLogger("orchestrator")

SUBSCRIPTIONS = [Subscription(PUBSUB, ANOMALIES_DETECTED, "/events/anomalies-detected")]

router = APIRouter(include_in_schema=False)


@router.post("/events/anomalies-detected")
async def on_anomaly(envelope: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """An anomalous point of a tracked series: forecast that series now, not at the next
    scheduled run (once per series and schedule period, however many anomalies come)."""
    try:
        anomaly = AnomaliesDetected.model_validate(CloudEvent.model_validate(envelope).data)
    except ValidationError as exc:
        log.error("poison anomalies.detected event, dropped to dead letter: %s", exc)
        return delivery(Delivery.DROP)
    try:
        every = await schedule.current_schedule()
        tracked = {w.series: w for w in every.series} if every else {}
        watch = tracked.get(anomaly.series)
        if every is None or watch is None:
            return delivery(Delivery.SUCCESS)  # not a tracked series
        period = int(anomaly.timestamp.timestamp()) // every.every_s * every.every_s
        instance_id = f"forecast-and-alert-{anomaly.series}-{period}"
        run = ForecastRunInput(series=[watch], horizon=every.horizon, model=every.model)
        started = await engine.start_once(FORECAST_AND_ALERT, instance_id, run)
    except (SidecarError, AioRpcError) as exc:
        log.warning("anomaly of %s not acted on yet: %s", anomaly.series, exc)
        return delivery(Delivery.RETRY)
    if started.created:
        log.info("anomaly in %s: forecast run %s started", anomaly.series, instance_id)
        await schedule.remember_run(instance_id)
    return delivery(Delivery.SUCCESS)
