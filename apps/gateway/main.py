"""The gateway: Consort's public, versioned REST API. Transport only.

It validates requests against the shared contracts, reaches the AI services through Dapr
service invocation, and keeps read models fed by events. This module only assembles the
app: the routes of each area are in `apps.gateway.routes`, the event handlers and their
subscriptions in `apps.gateway.events`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.middleware import Middleware

from apps.gateway import events
from apps.gateway.calls import ERRORS, install_passthrough, kit, settings
from apps.gateway.edge import ApiKeyMiddleware, api_key_middleware, install_edge
from apps.gateway.routes import (
    anomalies,
    cases,
    console,
    forecasts,
    images,
    metrics,
    operations,
    recommendations,
    reviews,
    search,
    text,
    workflows,
)
from consort.kit.events import declare_subscriptions
from consort.kit.service import create_app

app = create_app(
    kit,
    title="Consort API",
    description=(
        "The public API of Consort: AI services behind one versioned REST interface. "
        "Every error is `application/problem+json` with the field, the limit and a trace id. "
        "Every route under `/v1` needs an API key with the scope the route names "
        "(`Authorization: Bearer <key>` or `X-API-Key`); each key has its own rate limit."
    ),
    docs_url=None,  # served by the edge, with a content security policy
    redoc_url=None,
    inner_middleware=[Middleware(ApiKeyMiddleware, **api_key_middleware(settings))],
    # The public API is reached from outside, not through the sidecar.
    public_paths=("/v1", "/docs", "/openapi.json", "/info", "/console"),
)

install_passthrough(app)
install_edge(app, settings)
console.install_console(app)  # the web console's page under /console

# Every public route is under /v1 and may answer the shared problems (ERRORS). A request
# is matched against the routes in this order, twice (the router, and the tracing's name
# for its span), each match a regular expression: the routes most called come first (for
# a recommendation at the end of the list, matching was a quarter of the gateway's CPU).
v1 = APIRouter(prefix="/v1", responses=ERRORS)
for area in (
    text,
    recommendations,
    metrics,
    anomalies,
    search,
    images,
    forecasts,
    reviews,
    workflows,
    cases,
    operations,
    console,
):
    v1.include_router(area.router)
app.include_router(v1)

declare_subscriptions(app, events.SUBSCRIPTIONS)
app.include_router(events.router)
