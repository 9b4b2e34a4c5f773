"""The forecast_and_alert schedule (a Dapr job), and the job's trigger."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from apps.orchestrator import schedule
from consort.contracts.workflows import ForecastSchedule, ForecastScheduleInfo

log = logging.getLogger("orchestrator")
SCHEDULE = "/v1/workflows/forecast-and-alert/schedule"

router = APIRouter(tags=["workflows"])


@router.get(SCHEDULE, response_model=ForecastScheduleInfo)
async def get_forecast_schedule() -> ForecastScheduleInfo:
    """The schedule (a Dapr job) and its latest runs."""
    return ForecastScheduleInfo(
        schedule=await schedule.current_schedule(), recent_runs=await schedule.recent_runs()
    )


@router.put(SCHEDULE, response_model=ForecastScheduleInfo)
async def put_forecast_schedule(every: ForecastSchedule) -> ForecastScheduleInfo:
    """Run forecast_and_alert every `every_s` seconds for these series (replaces the
    schedule; the settings' series replace it again when the orchestrator restarts)."""
    await schedule.schedule(every)
    return ForecastScheduleInfo(schedule=every, recent_runs=await schedule.recent_runs())


@router.delete(SCHEDULE, status_code=204, response_class=Response)
async def delete_forecast_schedule() -> Response:
    """Stop the scheduled runs (runs under way finish)."""
    await schedule.delete_schedule()
    return Response(status_code=204)


@router.post(f"/job/{schedule.FORECAST_JOB}", include_in_schema=False)
async def on_forecast_job(body: Annotated[Any, Body()]) -> JSONResponse:
    """The scheduler's trigger: start this period's run (once, however often it fires)."""
    try:
        every = ForecastSchedule.model_validate(body)
    except ValidationError as exc:
        # Retrying would fail alike: log it and acknowledge, so the job does not spin.
        log.error("forecast job with unusable data, ignored: %s", exc)
        return JSONResponse({"started": None})
    instance_id, created = await schedule.run_period(every)
    return JSONResponse({"started": instance_id, "created": created})
