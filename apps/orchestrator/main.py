"""The orchestrator: durable workflows. Transport only; the workflows live in `workflows/`.

The workflow runtime (a gRPC worker that takes work items from this app's sidecar) starts
and stops with the app. These routes manage workflows through the same sidecar, with the
workflow client: the gateway reaches them by service invocation (a workflow belongs to
the app id that hosts it, so another app's sidecar cannot start or read it). A Dapr job
on the scheduler calls `/job/forecast-and-alert` to start each scheduled forecast run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow import WorkflowState as EngineState
from dapr.ext.workflow.aio import DaprWorkflowClient
from dapr.ext.workflow.logger import LoggerOptions
from fastapi import Body, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from grpc.aio import AioRpcError
from pydantic import ValidationError

from apps.orchestrator.settings import OrchestratorSettings
from consort.contracts.anomaly import ANOMALIES_DETECTED, AnomaliesDetected
from consort.contracts.cases import (
    CASES_CLOSED,
    INSTANCE_ID_PATTERN,
    Case,
    CaseClosed,
    CaseList,
    CaseOutcome,
    CaseStatus,
    DecisionIn,
)
from consort.contracts.common import Problem
from consort.contracts.events import PUBSUB
from consort.contracts.workflows import (
    DECISION_EVENT,
    FORECAST_AND_ALERT,
    REVIEW_TRIAGE,
    TERMINAL_STATUSES,
    ForecastRunInput,
    ForecastRunRequest,
    ForecastSchedule,
    ForecastScheduleInfo,
    ReviewTriageInput,
    ReviewTriageRequest,
    TerminateIn,
    WorkflowFailure,
    WorkflowInfo,
    WorkflowStarted,
    WorkflowStatus,
)
from consort.kit.dapr import SidecarError
from consort.kit.errors import ProblemError, problem_response
from consort.kit.events import CloudEvent, Delivery, Subscription, declare_subscriptions, delivery
from consort.kit.service import ServiceKit, create_app
from workflows import cases, forecast_and_alert, review_triage
from workflows.services import Retry, Services, Targets

log = logging.getLogger("orchestrator")
settings = OrchestratorSettings()
kit = ServiceKit(settings, version="1.0.0")

#: The scheduler job that starts forecast_and_alert runs.
FORECAST_JOB = "forecast-and-alert"
#: Where the ids of the latest scheduled runs are kept (newest first).
RECENT_RUNS_KEY = "forecast:recent-runs"
RECENT_RUNS_KEPT = 20


class Engine:
    """The workflow runtime and client of this app, while it runs."""

    def __init__(self) -> None:
        self.runtime: WorkflowRuntime | None = None
        self.client: DaprWorkflowClient | None = None
        self.services: Services | None = None
        self.started = False
        self.error: str | None = None

    def workflows(self) -> DaprWorkflowClient:
        if self.client is None:
            raise RuntimeError("the workflow client exists only while the app runs")
        return self.client

    async def readiness(self) -> str | None:
        if self.started:
            return None
        if self.error:
            return f"workflow worker failed to start: {self.error}"
        return "workflow worker is connecting to the sidecar"


engine = Engine()
kit.add_readiness_check("workflows", engine.readiness)


def _services() -> Services:
    return Services(
        sidecar_settings=kit.sidecar_settings,
        statestore=settings.statestore_name,
        pubsub=settings.pubsub_name,
        source=settings.app_id,
        targets=Targets(
            nlp=settings.nlp_app_id,
            sentiment=settings.sentiment_app_id,
            vision=settings.vision_app_id,
            forecast=settings.forecast_app_id,
            anomaly=settings.anomaly_app_id,
        ),
        invoke_timeout_s=settings.invoke_timeout_s,
        vision_timeout_s=settings.vision_timeout_s,
        forecast_timeout_s=settings.forecast_timeout_s,
        image_ttl_s=settings.image_ttl_s,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    host, port = kit.sidecar_settings.host, str(kit.sidecar_settings.grpc_port)
    # Records go to the root logger (JSON lines), not to a handler of the SDK's own.
    options = LoggerOptions(log_level=settings.log_level, log_handler=logging.NullHandler())
    runtime = WorkflowRuntime(
        host=host,
        port=port,
        logger_options=options,
        maximum_concurrent_activity_work_items=settings.max_concurrent_activities,
        maximum_concurrent_orchestration_work_items=settings.max_concurrent_workflows,
    )
    services = _services()
    policy = Retry(
        first_interval_s=settings.retry_first_interval_s,
        backoff=settings.retry_backoff,
        max_interval_s=settings.retry_max_interval_s,
        attempts=settings.retry_attempts,
    ).policy()
    review_triage.register(runtime, services, policy)
    forecast_and_alert.register(runtime, services, policy, settings.forecast_max_points)
    engine.runtime, engine.services = runtime, services
    engine.client = DaprWorkflowClient(host=host, port=port, logger_options=options)

    async def start() -> None:
        # Blocks until the sidecar hands out work items: daprd may still be starting.
        try:
            await asyncio.to_thread(runtime.start)
        except Exception as exc:
            engine.error = str(exc)
            log.exception("workflow worker did not start")
            return
        engine.started = True
        log.info(
            "workflow worker connected",
            extra={"fields": {"workflows": [review_triage.NAME, forecast_and_alert.NAME]}},
        )
        if settings.tracked_series:
            await _schedule_from_settings()

    starting = asyncio.create_task(start())
    try:
        yield
    finally:
        engine.started = False
        # Close the activities' sidecar clients while the worker's loop still runs.
        await asyncio.to_thread(services.close)
        await asyncio.to_thread(runtime.shutdown)
        starting.cancel()
        engine.runtime = engine.client = engine.services = None


app = create_app(
    kit,
    title="Consort orchestrator",
    description="Durable workflows: review triage with cases and decisions, scheduled "
    "forecasts with alerts. Reached through Dapr invocation (the gateway).",
    lifespan=lifespan,
)


@app.exception_handler(AioRpcError)
async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AioRpcError)
    log.warning("workflow engine call failed on %s: %s", request.url.path, exc.details())
    return problem_response(
        request.url.path,
        503,
        "Workflow engine unavailable",
        "The sidecar's workflow engine did not answer; try again shortly.",
        slug="workflow-engine-unavailable",
        headers={"Retry-After": "2"},
    )


InstanceId = Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No workflow with this id."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Not possible in the workflow's state."}
}


def _status(state: EngineState) -> WorkflowStatus:
    return WorkflowStatus(state.runtime_status.name.lower())


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _info(state: EngineState) -> WorkflowInfo:
    failure = state.failure_details
    step = _json(state.serialized_custom_status)
    return WorkflowInfo(
        id=state.instance_id,
        workflow=state.name,
        status=_status(state),
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


async def _state(instance_id: str, *, payloads: bool = True) -> EngineState:
    state = await engine.workflows().get_workflow_state(instance_id, fetch_payloads=payloads)
    if state is None:
        raise ProblemError(
            404, "Workflow not found", f"No workflow has the id {instance_id!r}.", slug="not-found"
        )
    return state


async def _start(
    workflow: str, instance_id: str, payload: Any, response: Response
) -> WorkflowStarted:
    """Start `workflow` as `instance_id` unless it exists: 202 when started, 200 when not."""
    if await engine.workflows().get_workflow_state(instance_id, fetch_payloads=False):
        response.status_code = 200
        return WorkflowStarted(id=instance_id, workflow=workflow, created=False)
    try:
        await engine.workflows().schedule_new_workflow(
            workflow, input=payload, instance_id=instance_id
        )
    except AioRpcError as exc:
        # Started by a concurrent request since the check: the same answer as above.
        if "already exists" not in (exc.details() or ""):
            raise
        response.status_code = 200
        return WorkflowStarted(id=instance_id, workflow=workflow, created=False)
    response.status_code = 202
    return WorkflowStarted(id=instance_id, workflow=workflow, created=True)


# -- review triage -------------------------------------------------------------------------
@app.post(
    "/v1/workflows/review-triage",
    response_model=WorkflowStarted,
    status_code=202,
    tags=["workflows"],
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


@app.get(
    "/v1/workflows/{instance_id}",
    response_model=WorkflowInfo,
    tags=["workflows"],
    responses=NOT_FOUND,
)
async def get_workflow(instance_id: InstanceId) -> WorkflowInfo:
    """A workflow's status, step, input, output and failure."""
    return _info(await _state(instance_id))


@app.post(
    "/v1/workflows/{instance_id}/events/decision",
    response_model=WorkflowInfo,
    status_code=202,
    tags=["workflows"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def raise_decision(instance_id: InstanceId, decision: DecisionIn) -> WorkflowInfo:
    """Raise a person's decision (`approve` or `dismiss`) to a review_triage workflow.

    A decision that arrives before the case opens waits in the workflow until it does.
    """
    state = await _state(instance_id, payloads=False)
    if state.name != REVIEW_TRIAGE:
        raise ProblemError(
            409,
            "Not a review triage",
            f"Workflow {instance_id!r} is a {state.name}; only {REVIEW_TRIAGE} takes decisions.",
            slug="wrong-workflow",
        )
    if _status(state) in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow finished",
            f"Workflow {instance_id!r} is {_status(state).value}; it takes no more decisions.",
            slug="workflow-finished",
        )
    await engine.workflows().raise_workflow_event(
        instance_id, DECISION_EVENT, data=decision.model_dump(mode="json")
    )
    return _info(await _state(instance_id))


@app.post(
    "/v1/workflows/{instance_id}/terminate",
    response_model=WorkflowInfo,
    status_code=202,
    tags=["workflows"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def terminate_workflow(
    instance_id: InstanceId, body: Annotated[TerminateIn | None, Body()] = None
) -> WorkflowInfo:
    """Terminate a running workflow; its open case (if any) is closed as `terminated`."""
    state = await _state(instance_id, payloads=False)
    if _status(state) in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow finished",
            f"Workflow {instance_id!r} is {_status(state).value} already.",
            slug="workflow-finished",
        )
    reason = (body.reason if body else None) or "terminated through the API"
    await engine.workflows().terminate_workflow(instance_id, output={"reason": reason})
    if state.name == REVIEW_TRIAGE:
        await _close_terminated_case(instance_id, reason)
    return _info(await _state(instance_id))


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


@app.delete(
    "/v1/workflows/{instance_id}",
    status_code=204,
    response_class=Response,
    tags=["workflows"],
    responses={**NOT_FOUND, **CONFLICT},
)
async def purge_workflow(instance_id: InstanceId) -> Response:
    """Purge a finished workflow's state and history (its case, if any, stays)."""
    state = await _state(instance_id, payloads=False)
    if _status(state) not in TERMINAL_STATUSES:
        raise ProblemError(
            409,
            "Workflow still running",
            f"Workflow {instance_id!r} is {_status(state).value}: terminate it first.",
            slug="workflow-running",
        )
    await engine.workflows().purge_workflow(instance_id)
    return Response(status_code=204)


# -- cases ---------------------------------------------------------------------------------
@app.get("/v1/cases", response_model=CaseList, tags=["cases"])
async def list_cases(
    status: Annotated[CaseStatus | None, Query(description="Only cases in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CaseList:
    """Cases, most recently opened first."""
    found = await cases.list_cases(kit.sidecar, settings.statestore_name, status, limit)
    return CaseList(cases=found)


@app.get(
    "/v1/cases/{case_id}",
    response_model=Case,
    tags=["cases"],
    responses={404: {"model": Problem, "description": "No case with this id."}},
)
async def get_case(case_id: Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)]) -> Case:
    """One case (its id is the id of the workflow that opened it)."""
    case = await cases.get_case(kit.sidecar, settings.statestore_name, case_id)
    if case is None:
        raise ProblemError(404, "Case not found", f"No case has the id {case_id!r}.")
    return case


# -- forecast and alert --------------------------------------------------------------------
@app.post(
    "/v1/workflows/forecast-and-alert",
    response_model=WorkflowStarted,
    status_code=202,
    tags=["workflows"],
)
async def run_forecast_and_alert(
    request: ForecastRunRequest, response: Response
) -> WorkflowStarted:
    """Run forecast_and_alert now for the given series."""
    instance_id = f"forecast-and-alert-{uuid.uuid4().hex}"
    payload = ForecastRunInput.model_validate(request.model_dump())
    return await _start(FORECAST_AND_ALERT, instance_id, payload, response)


@app.get(
    "/v1/workflows/forecast-and-alert/schedule",
    response_model=ForecastScheduleInfo,
    tags=["workflows"],
)
async def get_forecast_schedule() -> ForecastScheduleInfo:
    """The schedule (a Dapr job) and its latest runs."""
    return ForecastScheduleInfo(
        schedule=await _current_schedule(), recent_runs=await _recent_runs()
    )


@app.put(
    "/v1/workflows/forecast-and-alert/schedule",
    response_model=ForecastScheduleInfo,
    tags=["workflows"],
)
async def put_forecast_schedule(schedule: ForecastSchedule) -> ForecastScheduleInfo:
    """Run forecast_and_alert every `every_s` seconds for these series (replaces the
    schedule; the settings' series replace it again when the orchestrator restarts)."""
    await _schedule(schedule)
    return ForecastScheduleInfo(schedule=schedule, recent_runs=await _recent_runs())


@app.delete(
    "/v1/workflows/forecast-and-alert/schedule",
    status_code=204,
    response_class=Response,
    tags=["workflows"],
)
async def delete_forecast_schedule() -> Response:
    """Stop the scheduled runs (runs under way finish)."""
    await kit.sidecar.delete_job(FORECAST_JOB)
    return Response(status_code=204)


async def _schedule(schedule: ForecastSchedule) -> None:
    await kit.sidecar.schedule_job(
        FORECAST_JOB,
        schedule=f"@every {schedule.every_s}s",
        data=schedule.model_dump(mode="json"),
    )
    log.info(
        "forecast_and_alert scheduled every %d s for %d series",
        schedule.every_s,
        len(schedule.series),
    )


async def _schedule_from_settings() -> None:
    schedule = ForecastSchedule(
        series=settings.tracked_series,
        horizon=settings.forecast_horizon,
        every_s=settings.forecast_every_s,
    )
    try:
        await _schedule(schedule)
    except SidecarError as exc:
        log.error("could not schedule forecast_and_alert: %s", exc)


@app.post(f"/job/{FORECAST_JOB}", include_in_schema=False)
async def on_forecast_job(body: Annotated[Any, Body()]) -> JSONResponse:
    """The scheduler's trigger: start this period's run (once, however often it fires)."""
    try:
        schedule = ForecastSchedule.model_validate(body)
    except ValidationError as exc:
        # Retrying would fail alike: log it and acknowledge, so the job does not spin.
        log.error("forecast job with unusable data, ignored: %s", exc)
        return JSONResponse({"started": None})
    period = int(time.time()) // schedule.every_s * schedule.every_s
    instance_id = f"forecast-and-alert-{period}"
    started = await _start(
        FORECAST_AND_ALERT,
        instance_id,
        ForecastRunInput.model_validate(schedule.model_dump()),
        Response(),
    )
    if started.created:
        await _remember_run(instance_id)
    return JSONResponse({"started": instance_id, "created": started.created})


async def _current_schedule() -> ForecastSchedule | None:
    job = await kit.sidecar.get_job(FORECAST_JOB)
    if job is None:
        return None
    data = job.get("data", {})
    # daprd answers the job's data wrapped as a protobuf Value.
    return ForecastSchedule.model_validate(data.get("value", data))


declare_subscriptions(app, [Subscription(PUBSUB, ANOMALIES_DETECTED, "/events/anomalies-detected")])


@app.post("/events/anomalies-detected", include_in_schema=False)
async def on_anomaly(envelope: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """An anomalous point of a tracked series: forecast that series now, not at the next
    scheduled run (once per series and schedule period, however many anomalies come)."""
    try:
        anomaly = AnomaliesDetected.model_validate(CloudEvent.model_validate(envelope).data)
    except ValidationError as exc:
        log.error("poison anomalies.detected event, dropped to dead letter: %s", exc)
        return delivery(Delivery.DROP)
    try:
        schedule = await _current_schedule()
        tracked = {w.series: w for w in schedule.series} if schedule else {}
        watch = tracked.get(anomaly.series)
        if schedule is None or watch is None:
            return delivery(Delivery.SUCCESS)  # not a tracked series
        period = int(anomaly.timestamp.timestamp()) // schedule.every_s * schedule.every_s
        instance_id = f"forecast-and-alert-{anomaly.series}-{period}"
        run = ForecastRunInput(series=[watch], horizon=schedule.horizon, model=schedule.model)
        started = await _start(FORECAST_AND_ALERT, instance_id, run, Response())
    except (SidecarError, AioRpcError) as exc:
        log.warning("anomaly of %s not acted on yet: %s", anomaly.series, exc)
        return delivery(Delivery.RETRY)
    if started.created:
        log.info("anomaly in %s: forecast run %s started", anomaly.series, instance_id)
        await _remember_run(instance_id)
    return delivery(Delivery.SUCCESS)


async def _recent_runs() -> list[str]:
    item = await kit.sidecar.get_state(settings.statestore_name, RECENT_RUNS_KEY)
    return list(item.value) if item else []


async def _remember_run(instance_id: str) -> None:
    def step(value: Any | None) -> Any:
        return [instance_id, *(r for r in (value or []) if r != instance_id)][:RECENT_RUNS_KEPT]

    await kit.sidecar.update_state(settings.statestore_name, RECENT_RUNS_KEY, step, attempts=20)
