"""Workflow routes: start review_triage and forecast_and_alert, read a workflow, raise its
decision, terminate and purge it. The gateway reaches them by service invocation."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from dapr.ext.workflow import WorkflowState as EngineState
from fastapi import APIRouter, Body, Query, Response
from fastapi import Path as PathParam

from apps.orchestrator.engine import engine, kit, settings
from apps.orchestrator.history import steps_of
from consort.contracts.cases import (
    CASES_CLOSED,
    INSTANCE_ID_PATTERN,
    CaseClosed,
    CaseOutcome,
    DecisionIn,
)
from consort.contracts.common import Problem
from consort.contracts.workflows import (
    DECISION_EVENT,
    FORECAST_AND_ALERT,
    REVIEW_TRIAGE,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    ForecastRunInput,
    ForecastRunRequest,
    ReviewTriageInput,
    ReviewTriageRequest,
    TerminateIn,
    WorkflowFailure,
    WorkflowInfo,
    WorkflowList,
    WorkflowRun,
    WorkflowStarted,
    WorkflowStatus,
)
from consort.kit.errors import ProblemError
from workflows import cases

InstanceId = Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No workflow with this id."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Not possible in the workflow's state."}
}

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])


def status_of(state: EngineState) -> WorkflowStatus:
    """The contract's status of an engine state."""
    return WorkflowStatus(state.runtime_status.name.lower())


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def info_of(state: EngineState) -> WorkflowInfo:
    """What the API tells of a workflow, from the engine's state."""
    failure = state.failure_details
    step = _json(state.serialized_custom_status)
    return WorkflowInfo(
        id=state.instance_id,
        workflow=state.name,
        status=status_of(state),
        step=str(step) if step is not None else None,
        # The engine's times are UTC without a zone.
        created_at=state.created_at.replace(tzinfo=UTC),
        updated_at=state.last_updated_at.replace(tzinfo=UTC),
        input=_json(state.serialized_input),
        output=_json(state.serialized_output),
        failure=WorkflowFailure(type=failure.error_type, message=failure.message)
        if failure
        else None,
    )


async def _start(
    workflow: str, instance_id: str, payload: Any, response: Response
) -> WorkflowStarted:
    """Start `workflow` as `instance_id` unless it exists: 202 when started, 200 when not."""
    started = await engine.start_once(workflow, instance_id, payload)
    response.status_code = 202 if started.created else 200
    return started


@router.post(
    "/review-triage",
    response_model=WorkflowStarted,
    status_code=202,
    responses={
        200: {"model": WorkflowStarted, "description": "It exists already (same review id)."},
        409: {"model": Problem, "description": "The review was triaged before (its case stays)."},
    },
)
async def start_review_triage(request: ReviewTriageRequest, response: Response) -> WorkflowStarted:
    """Start a review_triage workflow; its id is `triage-<review_id>`."""
    review_id = request.review_id or uuid.uuid4().hex
    instance_id = f"triage-{review_id}"
    if await engine.workflows().get_workflow_state(instance_id, fetch_payloads=False) is None:
        if await cases.get_case(kit.sidecar, settings.statestore_name, instance_id):
            raise ProblemError(
                409,
                "Review already triaged",
                f"Review {review_id!r} has a case ({instance_id}) from a workflow since purged; "
                "send the review under another id to triage it again.",
                slug="already-triaged",
            )
    image = None
    if request.image is not None:
        image = await cases.save_image(
            kit.sidecar,
            settings.statestore_name,
            request.image.decoded(),
            request.image.media_type,
            settings.image_ttl_s,
        )
    payload = ReviewTriageInput(
        review_id=review_id,
        text=request.text,
        product=request.product,
        image=image,
        decision_timeout_s=request.decision_timeout_s or settings.decision_timeout_s,
        escalated_timeout_s=request.escalated_timeout_s or settings.escalated_timeout_s,
    )
    return await _start(REVIEW_TRIAGE, instance_id, payload, response)


@router.post("/forecast-and-alert", response_model=WorkflowStarted, status_code=202)
async def run_forecast_and_alert(
    request: ForecastRunRequest, response: Response
) -> WorkflowStarted:
    """Run forecast_and_alert now for the given series."""
    instance_id = f"forecast-and-alert-{uuid.uuid4().hex}"
    payload = ForecastRunInput.model_validate(request.model_dump())
    return await _start(FORECAST_AND_ALERT, instance_id, payload, response)


#: How many engine calls the listing makes at once.
LISTING_CONCURRENCY = 16


@router.get("", response_model=WorkflowList)
async def list_workflows(
    status: Annotated[
        Literal["running", "all"],
        Query(description="`running`: the unfinished ones (running, pending, suspended)."),
    ] = "running",
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> WorkflowList:
    """Workflow instances, most recently created first, each with the steps of its history
    (activities, timers, events), from the workflow engine of this app's sidecar."""
    ids = await engine.instance_ids()
    gate = asyncio.Semaphore(LISTING_CONCURRENCY)

    async def state(instance_id: str) -> EngineState | None:
        async with gate:
            return await engine.workflows().get_workflow_state(instance_id, fetch_payloads=True)

    states = [s for s in await asyncio.gather(*(state(i) for i in ids)) if s is not None]
    if status == "running":
        states = [s for s in states if status_of(s) in UNFINISHED_STATUSES]
    chosen = sorted(states, key=lambda s: s.created_at, reverse=True)[:limit]

    async def run(state: EngineState) -> WorkflowRun:
        async with gate:
            events = await engine.history(state.instance_id)
        info = info_of(state)
        return WorkflowRun(
            **info.model_dump(include=set(WorkflowRun.model_fields) - {"steps"}),
            steps=steps_of(events),
        )

    return WorkflowList(
        workflows=list(await asyncio.gather(*(run(s) for s in chosen))), held=len(ids)
    )


@router.get("/{instance_id}", response_model=WorkflowInfo, responses=NOT_FOUND)
async def get_workflow(instance_id: InstanceId) -> WorkflowInfo:
    """A workflow's status, step, input, output and failure."""
    return info_of(await engine.state(instance_id))


@router.post(
    "/{instance_id}/events/decision",
    response_model=WorkflowInfo,
    status_code=202,
    responses={**NOT_FOUND, **CONFLICT},
)
async def raise_decision(instance_id: InstanceId, decision: DecisionIn) -> WorkflowInfo:
    """Raise a person's decision (`approve` or `dismiss`) to a review_triage workflow.

    A decision that arrives before the case opens waits in the workflow until it does.
    """
    state = await engine.state(instance_id, payloads=False)
    if state.name != REVIEW_TRIAGE:
        raise ProblemError(
            409,
            "Not a review triage",
            f"Workflow {instance_id!r} is a {state.name}; only {REVIEW_TRIAGE} takes decisions.",
            slug="wrong-workflow",
        )
    if status_of(state) in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow finished",
            f"Workflow {instance_id!r} is {status_of(state).value}; it takes no more decisions.",
            slug="workflow-finished",
        )
    await engine.workflows().raise_workflow_event(
        instance_id, DECISION_EVENT, data=decision.model_dump(mode="json")
    )
    return info_of(await engine.state(instance_id))


@router.post(
    "/{instance_id}/terminate",
    response_model=WorkflowInfo,
    status_code=202,
    responses={**NOT_FOUND, **CONFLICT},
)
async def terminate_workflow(
    instance_id: InstanceId, body: Annotated[TerminateIn | None, Body()] = None
) -> WorkflowInfo:
    """Terminate a running workflow; its open case (if any) is closed as `terminated`."""
    state = await engine.state(instance_id, payloads=False)
    if status_of(state) in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow finished",
            f"Workflow {instance_id!r} is {status_of(state).value} already.",
            slug="workflow-finished",
        )
    reason = (body.reason if body else None) or "terminated through the API"
    await engine.workflows().terminate_workflow(instance_id, output={"reason": reason})
    if state.name == REVIEW_TRIAGE:
        await _close_terminated_case(instance_id, reason)
    return info_of(await engine.state(instance_id))


async def _close_terminated_case(case_id: str, reason: str) -> None:
    """A terminated workflow runs no more code, so its case is closed here."""
    now = datetime.now(UTC)
    try:
        case, changed = await cases.update_case(
            kit.sidecar,
            settings.statestore_name,
            case_id,
            lambda c: cases.terminated(c, reason, now),
        )
    except cases.CaseNotFound:
        return  # terminated before it opened one
    if changed and case.closed_at:
        await kit.sidecar.publish_event(
            settings.pubsub_name,
            CASES_CLOSED,
            CaseClosed(
                case_id=case.id,
                outcome=CaseOutcome.TERMINATED,
                closed_at=case.closed_at,
                reason=reason,
            ),
            event_id=f"{case.id}:closed",
            source=settings.app_id,
        )


@router.delete(
    "/{instance_id}",
    status_code=204,
    response_class=Response,
    responses={**NOT_FOUND, **CONFLICT},
)
async def purge_workflow(instance_id: InstanceId) -> Response:
    """Purge a finished workflow's state and history (its case, if any, stays)."""
    state = await engine.state(instance_id, payloads=False)
    if status_of(state) not in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow still running",
            f"Workflow {instance_id!r} is {status_of(state).value}: terminate it first.",
            slug="workflow-running",
        )
    await engine.workflows().purge_workflow(instance_id)
    return Response(status_code=204)
