"""The forecast_and_alert schedule: a Dapr job on the scheduler, and the latest runs.

The job calls `/job/forecast-and-alert` (routes/schedule.py) every `every_s` seconds; each
call starts the run of its period, so however often the job fires, a period runs once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from apps.orchestrator.engine import engine, kit, settings
from consort.contracts.workflows import FORECAST_AND_ALERT, ForecastRunInput, ForecastSchedule
from consort.kit.dapr import SidecarError

log = logging.getLogger("orchestrator")

#: The scheduler job that starts forecast_and_alert runs.
FORECAST_JOB = "forecast-and-alert"
#: Where the ids of the latest scheduled runs are kept (newest first).
RECENT_RUNS_KEY = "forecast:recent-runs"
RECENT_RUNS_KEPT = 20


async def schedule(every: ForecastSchedule) -> None:
    """Register (or replace) the job that runs forecast_and_alert on `every`."""
    await kit.sidecar.schedule_job(
        FORECAST_JOB,
        schedule=f"@every {every.every_s}s",
        data=every.model_dump(mode="json"),
    )
    log.info(
        "forecast_and_alert scheduled every %d s for %d series",
        every.every_s,
        len(every.series),
    )


async def schedule_from_settings() -> None:
    """Schedule the settings' tracked series (at start-up); a failure is logged."""
    every = ForecastSchedule(
        series=settings.tracked_series,
        horizon=settings.forecast_horizon,
        every_s=settings.forecast_every_s,
    )
    try:
        await schedule(every)
    except SidecarError as exc:
        log.error("could not schedule forecast_and_alert: %s", exc)


async def current_schedule() -> ForecastSchedule | None:
    """The schedule the job carries, or None when there is no job."""
    job = await kit.sidecar.get_job(FORECAST_JOB)
    if job is None:
        return None
    data = job.get("data", {})
    # daprd answers the job's data wrapped as a protobuf Value.
    return ForecastSchedule.model_validate(data.get("value", data))


async def delete_schedule() -> None:
    """Stop the scheduled runs (runs under way finish)."""
    await kit.sidecar.delete_job(FORECAST_JOB)


async def run_period(every: ForecastSchedule, now_s: float | None = None) -> tuple[str, bool]:
    """Start the run of the current period (once); its id, and whether this started it."""
    now_s = time.time() if now_s is None else now_s
    period = int(now_s) // every.every_s * every.every_s
    instance_id = f"forecast-and-alert-{period}"
    started = await engine.start_once(
        FORECAST_AND_ALERT, instance_id, ForecastRunInput.model_validate(every.model_dump())
    )
    if started.created:
        await remember_run(instance_id)
    return instance_id, started.created


async def recent_runs() -> list[str]:
    """Ids of the latest scheduled (and anomaly-started) runs, newest first."""
    item = await kit.sidecar.get_state(settings.statestore_name, RECENT_RUNS_KEY)
    return list(item.value) if item else []


async def remember_run(instance_id: str) -> None:
    """Put `instance_id` first in the recent runs (once), keeping the latest few."""

    def step(value: Any | None) -> Any:
        return [instance_id, *(r for r in (value or []) if r != instance_id)][:RECENT_RUNS_KEPT]

    await kit.sidecar.update_state(settings.statestore_name, RECENT_RUNS_KEY, step, attempts=20)
