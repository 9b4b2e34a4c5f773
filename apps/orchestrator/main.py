"""The orchestrator: durable workflows. This module only assembles the app.

    engine.py            the workflow runtime and client (start and stop with the app)
    routes/workflows.py  start, read, decide, terminate and purge workflows
    routes/cases.py      the cases review_triage opens
    routes/schedule.py   the forecast_and_alert schedule (a Dapr job) and its trigger
    events.py            anomalies.detected: a tracked series' forecast run at once

The workflows and their activities live in `workflows/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from grpc.aio import AioRpcError

from apps.orchestrator import events, schedule
from apps.orchestrator.engine import engine, kit, on_engine_error, settings
from apps.orchestrator.routes import cases, workflows
from apps.orchestrator.routes import schedule as schedule_routes
from consort.kit.events import declare_subscriptions
from consort.kit.service import create_app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The settings' series (re)schedule the runs once the worker takes work items.
    on_started = schedule.schedule_from_settings if settings.tracked_series else None
    async with engine.running(on_started=on_started):
        yield


app = create_app(
    kit,
    title="Consort orchestrator",
    description="Durable workflows: review triage with cases and decisions, scheduled "
    "forecasts with alerts. Reached through Dapr invocation (the gateway).",
    lifespan=lifespan,
)
app.add_exception_handler(AioRpcError, on_engine_error)
app.include_router(workflows.router)
app.include_router(cases.router)
app.include_router(schedule_routes.router)
app.include_router(events.router)
declare_subscriptions(app, events.SUBSCRIPTIONS)
