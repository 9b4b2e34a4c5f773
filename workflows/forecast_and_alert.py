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
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
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
    SeriesWatch,
)
from workflows.outlooks import can_forecast, history_of, outlook
from workflows.services import Services

log = logging.getLogger("workflows.forecast_and_alert")

NAME = FORECAST_AND_ALERT
SERIES_READ = "series_read"
SERIES_FORECAST = "series_forecast"
OUTLOOK_PUBLISH = "outlook_publish"


@dataclass(frozen=True)
class Dependencies:
    """What the workflow and its activities use, set by `configure` before they run."""

    services: Services
    #: The retry policy of every activity call (None: no retries).
    policy: RetryPolicy | None = None
    #: The most recent points of a series a forecast is fitted on.
    max_points: int = 1000


_dependencies: Dependencies | None = None


def configure(
    services: Services, policy: RetryPolicy | None = None, max_points: int = 1000
) -> None:
    """Give the workflow and its activities their services, retry policy and window.

    Args:
        services: how activities reach the anomaly and forecast services and pub/sub.
        policy: the retry policy of every activity call.
        max_points: the most recent points of a series a forecast is fitted on.
    """
    global _dependencies
    _dependencies = Dependencies(services, policy, max_points)


def dependencies() -> Dependencies:
    """What `configure` set; a RuntimeError before it was called."""
    if _dependencies is None:
        raise RuntimeError(f"{NAME}: configure() was not called before its activities ran")
    return _dependencies


def register(
    runtime: WorkflowRuntime, services: Services, policy: RetryPolicy, max_points: int
) -> None:
    """Configure forecast_and_alert and register it and its activities with `runtime`.

    Args:
        runtime: the app's workflow runtime (before it starts).
        services: how activities reach the anomaly and forecast services and pub/sub.
        policy: the retry policy of every activity call.
        max_points: the most recent points of a series a forecast is fitted on.
    """
    configure(services, policy, max_points)
    runtime.register_workflow(forecast_and_alert, name=NAME)
    for name, activity in ACTIVITIES.items():
        runtime.register_activity(activity, name=name)


def forecast_and_alert(ctx: DaprWorkflowContext, raw: Any) -> Generator[Any, Any, Any]:
    """The workflow: read, forecast and publish the outlook of every series in the run."""
    wired = dependencies()
    policy = wired.policy
    run = ForecastRunInput.model_validate(raw)
    ctx.set_custom_status("reading")
    reads: list[Any] = [
        ctx.call_activity(
            SERIES_READ,
            input=SeriesRead(series=w.series, max_points=wired.max_points),
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
                SERIES_FORECAST, input=_forecast_request(run, w, h), retry_policy=policy
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
    return ForecastRunResult(run_id=ctx.instance_id, outlooks=outlooks, alerts=alerts).model_dump(
        mode="json"
    )


def _forecast_request(
    run: ForecastRunInput, watch: SeriesWatch, history: SeriesHistory
) -> ForecastRequest:
    return ForecastRequest(
        series=[
            SeriesIn(
                id=watch.series,
                values=history.values,
                period=history.period,
                horizon=run.horizon,
                model=run.model,
            )
        ]
    )


async def series_read(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """A series' latest points and anomaly scores (the anomaly service), or `found=False`."""
    services = dependencies().services
    read = SeriesRead.model_validate(raw)
    snapshot = await services.get_model(
        services.targets.anomaly, f"v1/metrics/{read.series}", SeriesSnapshot
    )
    if snapshot is None:
        return SeriesHistory(series=read.series, found=False).model_dump(mode="json")
    return history_of(snapshot, read.max_points).model_dump(mode="json")


async def series_forecast(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """One series' forecast with its intervals (the forecast service)."""
    services = dependencies().services
    request = ForecastRequest.model_validate(raw)
    response = await services.call_model(
        services.targets.forecast,
        "v1/forecasts",
        ForecastResponse,
        json=request.model_dump(mode="json"),
        timeout_s=services.forecast_timeout_s,
    )
    (result,) = response.forecasts
    return result.model_dump(mode="json")


async def outlook_publish(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Log a series outlook's alerts and publish it on `forecasts.published`."""
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
    event_id = await dependencies().services.publish(
        FORECASTS_PUBLISHED, found, event_id=f"{found.run_id}:{found.series}"
    )
    return Published(event_id=event_id).model_dump()


#: The activities by the names they are registered (and recorded in histories) under.
ACTIVITIES: dict[str, Callable[[WorkflowActivityContext, Any], Awaitable[dict[str, Any]]]] = {
    SERIES_READ: series_read,
    SERIES_FORECAST: series_forecast,
    OUTLOOK_PUBLISH: outlook_publish,
}
