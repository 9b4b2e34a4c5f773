"""The web console: its static page under `/console` and the JSON it polls under `/v1/ops`.

The page (plain ES modules and SVG, `apps/gateway/static/console/`) is public: it holds
no data. Every call it makes is an ordinary `/v1` call with the API key the user gives it
(or the development key `consort run` hands it in the link's fragment, which never
reaches a server), so the scopes of docs/security.md apply unchanged. The overview is
built on each request from what the running system says; the gateway keeps nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from apps.gateway.calls import SidecarDep, settings
from apps.gateway.edge import requires
from apps.gateway.overview import call_edges, fetch_traced_calls, service_load, zipkin_base
from apps.gateway.read_models import DEAD_LETTERS_KEY
from apps.gateway.routes.operations import catalog_entry
from consort.contracts.events import TOPICS, Topic
from consort.contracts.gateway import DeadLetters
from consort.contracts.overview import (
    TRACE_ID_PATTERN,
    ServiceLoad,
    ServiceNode,
    SystemOverview,
    TopicNode,
    TraceSpans,
)
from consort.kit.dapr import Sidecar, TargetUnavailable
from consort.kit.errors import ProblemError
from consort.kit.events import read_tracked

STATIC = Path(__file__).resolve().parents[1] / "static" / "console"
#: The page's own policy: its own scripts, styles and images; it calls the gateway alone.
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

router = APIRouter(prefix="/ops", tags=["operations"], dependencies=[requires("ops")])


async def _load(sc: Sidecar, app_id: str) -> ServiceLoad | None:
    try:
        reply = await sc.invoke(
            app_id, "metrics", http_method="GET", timeout_s=settings.catalog_timeout_s
        )
    except TargetUnavailable:
        return None
    return service_load(reply.text) if reply.status == 200 else None


async def _service(sc: Sidecar, app_id: str) -> ServiceNode:
    entry, load = await asyncio.gather(catalog_entry(sc, app_id), _load(sc, app_id))
    return ServiceNode(
        app_id=app_id,
        health="up" if entry.status == "available" else "down",
        catalog=entry,
        load=load,
    )


async def _topic(sc: Sidecar, topic: Topic) -> TopicNode:
    key = DEAD_LETTERS_KEY.format(topic=topic.name)
    stored = await read_tracked(sc, settings.statestore_name, key, DeadLetters)
    return TopicNode(
        name=topic.name,
        publishers=list(topic.publishers),
        subscribers=list(topic.subscribers),
        dead_letters=len(stored.dead_letters) if stored else 0,
    )


@router.get("/overview", response_model=SystemOverview)
async def overview(sc: SidecarDep) -> SystemOverview:
    """Every service with its health and load, every topic with its dead letters, and who
    calls whom: what the web console (`/console`) polls. Counters are totals since each
    process started; the console keeps the samples and draws the rates."""
    apps = list(settings.catalog_apps)
    base = zipkin_base(settings.zipkin_url)
    services, topics, traced = await asyncio.gather(
        asyncio.gather(*(_service(sc, a) for a in apps)),
        asyncio.gather(*(_topic(sc, t) for t in TOPICS)),
        fetch_traced_calls(base, settings.catalog_timeout_s),
    )
    return SystemOverview(
        at=datetime.now(UTC),
        services=list(services),
        topics=list(topics),
        calls=call_edges(traced, apps, settings.app_id),
        zipkin_ui=f"{base}/zipkin/" if base else None,
    )


@router.get("/traces/{trace_id}", response_model=TraceSpans)
async def trace(trace_id: Annotated[str, PathParam(pattern=TRACE_ID_PATTERN)]) -> TraceSpans:
    """The spans of one trace (a response's `x-trace-id`) from Zipkin; empty while they
    are still being reported (a few seconds)."""
    base = zipkin_base(settings.zipkin_url)
    if base is None:
        raise ProblemError(
            404, "No tracing", "This gateway exports no traces (CONSORT_ZIPKIN_URL is unset)."
        )
    try:
        async with httpx.AsyncClient(timeout=settings.catalog_timeout_s) as client:
            reply = await client.get(f"{base}/api/v2/trace/{trace_id}")
    except httpx.HTTPError as exc:
        raise ProblemError(
            503, "Zipkin unavailable", f"Zipkin did not answer: {exc}.", slug="service-unavailable"
        ) from exc
    if reply.status_code == 404:
        return TraceSpans(trace_id=trace_id, spans=[])
    if reply.status_code != 200:
        detail = f"Zipkin answered {reply.status_code}."
        raise ProblemError(503, "Zipkin unavailable", detail, slug="service-unavailable")
    return TraceSpans(trace_id=trace_id, spans=reply.json())


def install_console(app: FastAPI) -> None:
    """Serve the console's files under `/console` (public, with the page's own policy)."""
    files = {p.name: p for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}

    def serve(name: str) -> FileResponse:
        path = files.get(name)
        if path is None:
            raise ProblemError(404, "Not found", f"The console has no file {name!r}.")
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[path.suffix],
            headers={"Content-Security-Policy": CONSOLE_POLICY},
        )

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=308)

    @app.get("/console/", include_in_schema=False)
    async def console_index() -> FileResponse:
        return serve("index.html")

    @app.get("/console/{name}", include_in_schema=False)
    async def console_file(name: str) -> FileResponse:
        return serve(name)
