"""The orchestrator's workflow engine, and what every route of it uses: settings, the
service kit, and the engine itself.

The workflow runtime (a gRPC worker that takes work items from this app's sidecar) starts
and stops with the app (`Engine.running`, in the lifespan). The routes manage workflows
through the same sidecar, with the workflow client: a workflow belongs to the app id that
hosts it, so another app's sidecar can neither start nor read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow import WorkflowState as EngineState
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as engine_pb
from dapr.ext.workflow._durabletask.internal.orchestrator_service_pb2_grpc import (
    TaskHubSidecarServiceStub,
)
from dapr.ext.workflow.aio import DaprWorkflowClient
from dapr.ext.workflow.logger import LoggerOptions
from fastapi import Request
from fastapi.responses import JSONResponse
from grpc.aio import AioRpcError

from apps.orchestrator.settings import OrchestratorSettings
from consort.contracts.workflows import WorkflowStarted
from consort.kit.errors import ProblemError, unavailable
from consort.kit.service import ServiceKit
from workflows import forecast_and_alert, review_triage
from workflows.services import Retry, Services, Targets

log = logging.getLogger("orchestrator")
settings = OrchestratorSettings()
kit = ServiceKit(settings, version="1.0.0")


def services_of(settings: OrchestratorSettings, kit: ServiceKit) -> Services:
    """What the activities reach the other services through, from the settings.

    Args:
        settings: the orchestrator's settings (app ids, timeouts, component names).
        kit: the service kit (its sidecar settings).
    """
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


class Engine:
    """The workflow runtime and client of this app, while it runs."""

    def __init__(self, settings: OrchestratorSettings, kit: ServiceKit) -> None:
        self.settings = settings
        self.kit = kit
        self.runtime: WorkflowRuntime | None = None
        self.client: DaprWorkflowClient | None = None
        self.services: Services | None = None
        self.started = False
        self.error: str | None = None

    def workflows(self) -> DaprWorkflowClient:
        """The workflow client (only while the app runs)."""
        if self.client is None:
            raise RuntimeError("the workflow client exists only while the app runs")
        return self.client

    async def readiness(self) -> str | None:
        """None once the worker takes work items, else what it is waiting for."""
        if self.started:
            return None
        if self.error:
            return f"workflow worker failed to start: {self.error}"
        return "workflow worker is connecting to the sidecar"

    def _runtime(self, options: LoggerOptions) -> WorkflowRuntime:
        """A runtime with both workflows and their activities registered."""
        s = self.settings
        runtime = WorkflowRuntime(
            host=self.kit.sidecar_settings.host,
            port=str(self.kit.sidecar_settings.grpc_port),
            logger_options=options,
            maximum_concurrent_activity_work_items=s.max_concurrent_activities,
            maximum_concurrent_orchestration_work_items=s.max_concurrent_workflows,
        )
        services = self.services = services_of(s, self.kit)
        policy = Retry(
            first_interval_s=s.retry_first_interval_s,
            backoff=s.retry_backoff,
            max_interval_s=s.retry_max_interval_s,
            attempts=s.retry_attempts,
        ).policy()
        review_triage.register(runtime, services, policy)
        forecast_and_alert.register(runtime, services, policy, s.forecast_max_points)
        return runtime

    @asynccontextmanager
    async def running(
        self, on_started: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Start the worker (in the background: daprd may still be starting) and the
        client; stop both on exit.

        Args:
            on_started: run once the worker takes work items.
        """
        # Records go to the root logger (JSON lines), not to a handler of the SDK's own.
        options = LoggerOptions(
            log_level=self.settings.log_level, log_handler=logging.NullHandler()
        )
        runtime = self.runtime = self._runtime(options)
        self.client = DaprWorkflowClient(
            host=self.kit.sidecar_settings.host,
            port=str(self.kit.sidecar_settings.grpc_port),
            logger_options=options,
        )
        starting = asyncio.create_task(self._start(runtime, on_started))
        try:
            yield
        finally:
            self.started = False
            # Close the activities' sidecar clients while the worker's loop still runs.
            if self.services is not None:
                await asyncio.to_thread(self.services.close)
            await asyncio.to_thread(runtime.shutdown)
            starting.cancel()
            self.runtime = self.client = self.services = None

    async def _start(
        self, runtime: WorkflowRuntime, on_started: Callable[[], Awaitable[None]] | None
    ) -> None:
        # Blocks until the sidecar hands out work items: daprd may still be starting.
        try:
            await asyncio.to_thread(runtime.start)
        except Exception as exc:
            self.error = str(exc)
            log.exception("workflow worker did not start")
            return
        self.started = True
        log.info(
            "workflow worker connected",
            extra={"fields": {"workflows": [review_triage.NAME, forecast_and_alert.NAME]}},
        )
        if on_started is not None:
            await on_started()

    async def state(self, instance_id: str, *, payloads: bool = True) -> EngineState:
        """The workflow's state; a 404 problem when there is none."""
        state = await self.workflows().get_workflow_state(instance_id, fetch_payloads=payloads)
        if state is None:
            raise ProblemError(
                404,
                "Workflow not found",
                f"No workflow has the id {instance_id!r}.",
                slug="not-found",
            )
        return state

    def _task_hub(self) -> TaskHubSidecarServiceStub:
        # dapr-ext-workflow 1.18.3 generates the engine's ListInstanceIDs and
        # GetInstanceHistory calls but wraps neither in its client: they go through the
        # client's own channel (its API token and timeouts), as its other calls do.
        inner = getattr(self.workflows(), "_DaprWorkflowClient__obj")  # noqa: B009
        stub: TaskHubSidecarServiceStub = inner._get_stub()
        return stub

    async def instance_ids(self, page_size: int = 1000) -> list[str]:
        """The ids of every workflow instance the engine holds (any status, unpurged);
        the engine lists the keys of its actor state store (which must be able to list
        keys: every store of components/ can; docs/profiles.md)."""
        ids: list[str] = []
        token: str | None = None
        while True:
            request = engine_pb.ListInstanceIDsRequest(pageSize=page_size)
            if token:
                request.continuationToken = token
            reply = await self._task_hub().ListInstanceIDs(request)
            ids.extend(reply.instanceIds)
            token = reply.continuationToken if reply.HasField("continuationToken") else None
            if not token or not reply.instanceIds:
                return ids

    async def history(self, instance_id: str) -> list[Any]:
        """The history events of one workflow instance, oldest first."""
        request = engine_pb.GetInstanceHistoryRequest(instanceId=instance_id)
        reply = await self._task_hub().GetInstanceHistory(request)
        return list(reply.events)

    async def start_once(self, workflow: str, instance_id: str, payload: Any) -> WorkflowStarted:
        """Start `workflow` as `instance_id` unless it exists (`created` says which)."""
        if await self.workflows().get_workflow_state(instance_id, fetch_payloads=False):
            return WorkflowStarted(id=instance_id, workflow=workflow, created=False)
        try:
            await self.workflows().schedule_new_workflow(
                workflow, input=payload, instance_id=instance_id
            )
        except AioRpcError as exc:
            # Started by a concurrent request since the check: the same answer as above.
            if "already exists" not in (exc.details() or ""):
                raise
            return WorkflowStarted(id=instance_id, workflow=workflow, created=False)
        return WorkflowStarted(id=instance_id, workflow=workflow, created=True)


async def on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    """The sidecar's workflow engine did not answer: a 503 to retry shortly."""
    assert isinstance(exc, AioRpcError)
    log.warning("workflow engine call failed on %s: %s", request.url.path, exc.details())
    return unavailable(
        "Workflow engine unavailable",
        "The sidecar's workflow engine did not answer; try again shortly.",
        slug="workflow-engine-unavailable",
    ).response(request.url.path)


engine = Engine(settings, kit)
kit.add_readiness_check("workflows", engine.readiness)
