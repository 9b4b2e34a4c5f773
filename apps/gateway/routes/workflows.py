"""Workflow routes: start and manage the orchestrator's durable workflows.

Each is validated here against the shared contract and forwarded to the orchestrator's
route of the same path (`apps.gateway.orchestrator`); its problems pass through.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from fastapi import Path as PathParam

from apps.gateway.calls import SidecarDep, forward, settings
from apps.gateway.edge import requires
from apps.gateway.orchestrator import call_orchestrator
from consort.contracts.cases import INSTANCE_ID_PATTERN, DecisionIn
from consort.contracts.common import Problem
from consort.contracts.workflows import (
    ForecastRunRequest,
    ForecastSchedule,
    ForecastScheduleInfo,
    ReviewTriageRequest,
    TerminateIn,
    WorkflowInfo,
    WorkflowList,
    WorkflowStarted,
)

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": Problem, "description": "No workflow with this id."}}
CONFLICT: Responses = {409: {"model": Problem, "description": "Not possible in its state."}}
InstanceId = Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)]
SCHEDULE = "v1/workflows/forecast-and-alert/schedule"
#: Starting workflows and reading them needs `workflows`; deciding, stopping, purging and
#: scheduling them is an operator's (`ops`).
RUN = [requires("workflows")]
OPERATE = [requires("ops")]

router = APIRouter(prefix="/workflows", tags=["workflows"])


@router.post(
    "/review-triage",
    dependencies=RUN,
    response_model=WorkflowStarted,
    status_code=202,
    responses={
        200: {"model": WorkflowStarted, "description": "It exists already (same review)."},
        409: {"model": Problem, "description": "The review was triaged before."},
    },
)
async def start_review_triage(
    request: ReviewTriageRequest, sc: SidecarDep, response: Response
) -> Any:
    """Triage a review (text, optional product and base64 image) in a durable workflow.

    nlp, sentiment and (with an image) vision run in parallel; a negative review that
    names a product or a defect opens a case that waits for a decision
    (`POST /v1/workflows/{id}/events/decision`), is escalated when nobody decides in
    `decision_timeout_s` and expires after `escalated_timeout_s` more. Answers at once
    with the workflow id, `triage-<review_id>`; poll `GET /v1/workflows/{id}`.
    """
    # The id is fixed here, so a retried call starts the same workflow, not a second.
    request.review_id = request.review_id or uuid.uuid4().hex
    body = request.model_dump(mode="json", exclude_none=True)
    return await call_orchestrator(sc, "v1/workflows/review-triage", response, json=body)


@router.get("", dependencies=RUN, response_model=WorkflowList)
async def list_workflows(
    sc: SidecarDep,
    response: Response,
    status: Annotated[
        Literal["running", "all"],
        Query(description="`running`: the unfinished ones (running, pending, suspended)."),
    ] = "running",
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> Any:
    """Workflow instances, most recently created first, each with the steps of its history
    (activities scheduled and finished, timers, events raised), from the orchestrator's
    workflow engine."""
    params = {"status": status, "limit": str(limit)}
    return await call_orchestrator(sc, "v1/workflows", response, http_method="GET", params=params)


@router.post(
    "/forecast-and-alert", dependencies=RUN, response_model=WorkflowStarted, status_code=202
)
async def run_forecast_and_alert(
    request: ForecastRunRequest, sc: SidecarDep, response: Response
) -> Any:
    """Forecast the given series now (from the anomaly service's windows), compare
    each with its recent anomaly scores and bounds, publish `forecasts.published`."""
    body = request.model_dump(mode="json")
    return await call_orchestrator(sc, "v1/workflows/forecast-and-alert", response, json=body)


@router.get("/forecast-and-alert/schedule", dependencies=RUN, response_model=ForecastScheduleInfo)
async def get_forecast_schedule(sc: SidecarDep, response: Response) -> Any:
    """The forecast schedule (a Dapr job on the scheduler) and its latest runs."""
    return await call_orchestrator(sc, SCHEDULE, response, http_method="GET")


@router.put(
    "/forecast-and-alert/schedule", dependencies=OPERATE, response_model=ForecastScheduleInfo
)
async def put_forecast_schedule(
    schedule: ForecastSchedule, sc: SidecarDep, response: Response
) -> Any:
    """Run forecast_and_alert every `every_s` seconds for these series."""
    return await call_orchestrator(
        sc, SCHEDULE, response, http_method="PUT", json=schedule.model_dump(mode="json")
    )


@router.delete(
    "/forecast-and-alert/schedule",
    dependencies=OPERATE,
    status_code=204,
    response_class=Response,
)
async def delete_forecast_schedule(sc: SidecarDep) -> Response:
    """Stop the scheduled forecast runs."""
    await forward(sc, settings.orchestrator_app_id, SCHEDULE, http_method="DELETE")
    return Response(status_code=204)


@router.get("/{instance_id}", dependencies=RUN, response_model=WorkflowInfo, responses=NOT_FOUND)
async def get_workflow(instance_id: InstanceId, sc: SidecarDep, response: Response) -> Any:
    """A workflow's status (`running`, `completed`, `failed`, `terminated`, ...), its
    current step, input, output (the triage result) and failure."""
    return await call_orchestrator(sc, f"v1/workflows/{instance_id}", response, http_method="GET")


@router.post(
    "/{instance_id}/events/decision",
    dependencies=OPERATE,
    response_model=WorkflowInfo,
    status_code=202,
    responses={**NOT_FOUND, **CONFLICT},
)
async def raise_decision(
    instance_id: InstanceId, decision: DecisionIn, sc: SidecarDep, response: Response
) -> Any:
    """Decide a review_triage case: `approve` (the review's image is attached to the
    case, faces blurred) or `dismiss`."""
    return await call_orchestrator(
        sc,
        f"v1/workflows/{instance_id}/events/decision",
        response,
        json=decision.model_dump(mode="json"),
    )


@router.post(
    "/{instance_id}/terminate",
    dependencies=OPERATE,
    response_model=WorkflowInfo,
    status_code=202,
    responses={**NOT_FOUND, **CONFLICT},
)
async def terminate_workflow(
    instance_id: InstanceId,
    sc: SidecarDep,
    response: Response,
    body: Annotated[TerminateIn | None, Body()] = None,
) -> Any:
    """Terminate a running workflow (an open case is closed as `terminated`)."""
    return await call_orchestrator(
        sc,
        f"v1/workflows/{instance_id}/terminate",
        response,
        json=(body or TerminateIn()).model_dump(mode="json"),
    )


@router.delete(
    "/{instance_id}",
    dependencies=OPERATE,
    status_code=204,
    response_class=Response,
    responses={**NOT_FOUND, **CONFLICT},
)
async def purge_workflow(instance_id: InstanceId, sc: SidecarDep) -> Response:
    """Purge a finished workflow's history (its case stays)."""
    await forward(
        sc, settings.orchestrator_app_id, f"v1/workflows/{instance_id}", http_method="DELETE"
    )
    return Response(status_code=204)
