"""forecast_and_alert: forecast every tracked series and publish its outlook.

    series_read (each series, from anomaly) ─> series_forecast (each with data, forecast)
        ─> outlook (forecast beside recent anomaly scores, alerts on bound crossings)
        ─> outlook_publish (each: `forecasts.published`)

One run is one bounded workflow. Runs are started on a schedule by a Dapr job (see the
orchestrator's `/job/forecast-and-alert`), on demand through the API, each with its own
instance id; a run that fails leaves the next one to try again.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import UTC
from typing import Any

from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
)

from consort.contracts.anomaly import SeriesSnapshot
from consort.contracts.forecast import ForecastRequest, ForecastResponse, SeriesForecast, SeriesIn
from consort.contracts.workflows import (
    FORECAST_AND_ALERT,
    FORECASTS_PUBLISHED,
    ForecastRunInput,
    ForecastRunResult,
    Published,
    SeriesHistory,
    SeriesOutlook,
    SeriesRead,
)
from workflows.outlooks import can_forecast, history_of, outlook
from workflows.services import Services

log = logging.getLogger("workflows.forecast_and_alert")

NAME = FORECAST_AND_ALERT
SERIES_READ = "series_read"
SERIES_FORECAST = "series_forecast"
OUTLOOK_PUBLISH = "outlook_publish"


def register(
    runtime: WorkflowRuntime, services: Services, policy: RetryPolicy, max_points: int
) -> None:
    """Register forecast_and_alert and its activities with `runtime`.

    Args:
        max_points: the most recent points of a series a forecast is fitted on.
    """
    targets = services.targets

    def forecast_and_alert(ctx: DaprWorkflowContext, raw: Any) -> Generator[Any, Any, Any]:
        run = ForecastRunInput.model_validate(raw)
        ctx.set_custom_status("reading")
        reads: list[Any] = [
            ctx.call_activity(
                SERIES_READ,
                input=SeriesRead(series=w.series, max_points=max_points),
                retry_policy=policy,
            )
            for w in run.series
        ]
        histories = [SeriesHistory.model_validate(h) for h in (yield when_all(reads))]
        ready = [(w, h) for w, h in zip(run.series, histories, strict=True) if can_forecast(h)]
        forecasts: dict[str, SeriesForecast] = {}
        if ready:
            ctx.set_custom_status("forecasting")
            requests: list[Any] = [
                ctx.call_activity(
                    SERIES_FORECAST,
                    input=ForecastRequest(
                        series=[
                            SeriesIn(
                                id=w.series,
                                values=h.values,
                                period=h.period,
                                horizon=run.horizon,
                                model=run.model,
                            )
                        ]
                    ),
                    retry_policy=policy,
                )
                for w, h in ready
            ]
            for raw_forecast in (yield when_all(requests)):
                found = SeriesForecast.model_validate(raw_forecast)
                forecasts[found.id] = found
        generated_at = ctx.current_utc_datetime.replace(tzinfo=UTC)
        outlooks = [
            outlook(ctx.instance_id, w, h, forecasts.get(w.series), run.horizon, generated_at)
            for w, h in zip(run.series, histories, strict=True)
        ]
        ctx.set_custom_status("publishing")
        yield when_all(
            [ctx.call_activity(OUTLOOK_PUBLISH, input=o, retry_policy=policy) for o in outlooks]
        )
        alerts = sum(len(o.alerts) for o in outlooks)
        if alerts and not ctx.is_replaying:
            log.warning("run %s: %d alerts", ctx.instance_id, alerts)
        return ForecastRunResult(
            run_id=ctx.instance_id, outlooks=outlooks, alerts=alerts
        ).model_dump(mode="json")

    async def series_read(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
        read = SeriesRead.model_validate(raw)
        snapshot = await services.get_model(
            targets.anomaly, f"v1/metrics/{read.series}", SeriesSnapshot
        )
        if snapshot is None:
            return SeriesHistory(series=read.series, found=False).model_dump(mode="json")
        return history_of(snapshot, read.max_points).model_dump(mode="json")

    async def series_forecast(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
        request = ForecastRequest.model_validate(raw)
        response = await services.call_model(
            targets.forecast,
            "v1/forecasts",
            ForecastResponse,
            json=request.model_dump(mode="json"),
            timeout_s=services.forecast_timeout_s,
        )
        (result,) = response.forecasts
        return result.model_dump(mode="json")

    async def outlook_publish(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
        found = SeriesOutlook.model_validate(raw)
        for alert in found.alerts:
            log.warning(
                "alert: %s forecast %s %s bound %g at step %d (%g)%s",
                found.series,
                alert.level.value,
                alert.bound,
                alert.limit,
                alert.step,
                alert.value,
                ", continuing recent anomalies" if alert.confirmed_by_anomalies else "",
            )
        event_id = await services.publish(
            FORECASTS_PUBLISHED, found, event_id=f"{found.run_id}:{found.series}"
        )
        return Published(event_id=event_id).model_dump()

    runtime.register_workflow(forecast_and_alert, name=NAME)
    runtime.register_activity(series_read, name=SERIES_READ)
    runtime.register_activity(series_forecast, name=SERIES_FORECAST)
    runtime.register_activity(outlook_publish, name=OUTLOOK_PUBLISH)
