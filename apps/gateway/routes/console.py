"""The web console: its static page under `/console` and the JSON it polls under `/v1/ops`.

The page (plain ES modules and SVG, `apps/gateway/static/console/`) is public: it holds
no data. Every call it makes is an ordinary `/v1` call with the API key the user gives it
(or the development key `consort run` hands it in the link's fragment, which never
reaches a server), so the scopes of docs/security.md apply unchanged. The overview is
built on each request from what the running system says, with the load samples the
gateway keeps while it is asked (`apps.gateway.sampler`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from apps.gateway.calls import SidecarDep, settings
from apps.gateway.edge import requires
from apps.gateway.overview import call_edges, fetch_traced_calls, service_totals, zipkin_base
from apps.gateway.read_models import DEAD_LETTERS_KEY
from apps.gateway.routes.operations import catalog_entry
from apps.gateway.sampler import Sampler, taker
from apps.gateway.samples import Sample, Totals, recent, series, topic_flow
from consort.contracts.events import TOPICS, Topic
from consort.contracts.gateway import DeadLetters
from consort.contracts.overview import (
    TRACE_ID_PATTERN,
    InstanceState,
    LoadSeries,
    LoadWindow,
    Sampling,
    ServiceNode,
    SystemOverview,
    TopicConsumer,
    TopicNode,
    TraceSpans,
)
from consort.kit.dapr import Sidecar
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

#: The `recent` figures' window: long enough for a percentile, short enough to be now.
RECENT_S = 60.0

router = APIRouter(prefix="/ops", tags=["operations"], dependencies=[requires("ops")])


def _sampler(sc: Sidecar) -> Sampler:
    global _SAMPLER
    if _SAMPLER is None:
        take = taker(
            sc, settings.catalog_apps, settings.launcher_run_dir, settings.catalog_timeout_s
        )
        _SAMPLER = Sampler(
            take, settings.overview_sample_s, settings.overview_window_s, settings.overview_idle_s
        )
    return _SAMPLER


_SAMPLER: Sampler | None = None


def _instances(sample: Sample, app_id: str) -> list[InstanceState]:
    return [
        InstanceState(
            name=i.name,
            state=i.state or "unknown",
            restarts=i.restarts or 0,
            uptime_s=round(sample.t - i.started_at, 1) if i.started_at else None,
        )
        for i in sorted(sample.of(app_id), key=lambda i: (len(i.name), i.name))
    ]


def _series(samples: list[Sample], app_id: str) -> LoadSeries:
    points = series(samples, app_id)
    return LoadSeries(
        t=[t for t, _ in points],
        **{
            name: [getattr(w, name) for _, w in points]
            for name in LoadSeries.model_fields
            if name != "t"
        },
    )


async def _service(sc: Sidecar, app_id: str, samples: list[Sample], launched: bool) -> ServiceNode:
    entry = await catalog_entry(sc, app_id)
    latest = samples[-1]
    recent_window = recent(samples, app_id, RECENT_S)
    return ServiceNode(
        app_id=app_id,
        health="up" if entry.status == "available" else "down",
        catalog=entry,
        load=service_totals(latest.of(app_id)),
        instances=_instances(latest, app_id) if launched else None,
        recent=LoadWindow(**dataclasses.asdict(recent_window)) if recent_window else None,
        series=_series(samples, app_id),
    )


async def _topic(sc: Sidecar, topic: Topic, totals: Totals, counted: bool) -> TopicNode:
    key = DEAD_LETTERS_KEY.format(topic=topic.name)
    stored = await read_tracked(sc, settings.statestore_name, key, DeadLetters)
    kept = len(stored.dead_letters) if stored else 0
    node = TopicNode(
        name=topic.name,
        publishers=list(topic.publishers),
        subscribers=list(topic.subscribers),
        dead_letters=kept,
        dead_letters_kept=kept,
    )
    if counted:
        flow = topic_flow(totals, topic.name, topic.subscribers)
        node.published = flow.published
        node.published_batches = flow.batches
        node.consumers = [TopicConsumer(**dataclasses.asdict(c)) for c in flow.consumers]
        node.dead_letters = max(kept, round(flow.dead_letters))
    return node


@router.get("/overview", response_model=SystemOverview)
async def overview(sc: SidecarDep) -> SystemOverview:
    """Every service with its health, instances and load, every topic with its flow and
    dead letters, and who calls whom: what the web console (`/console`) polls.

    Asking starts (or keeps up) the gateway's sampling of every instance's metrics every
    few seconds; rates, error shares and percentiles are over the last minute (`recent`)
    and between successive samples (`series`, the last minutes)."""
    apps = list(settings.catalog_apps)
    base = zipkin_base(settings.zipkin_url)
    sampler = _sampler(sc)
    samples = list(await sampler.want())
    launched = sampler.instances_from == "launcher"
    counted = any(i.sidecar_started_at is not None for i in samples[-1].instances.values())
    services, topics, traced = await asyncio.gather(
        asyncio.gather(*(_service(sc, a, samples, launched) for a in apps)),
        asyncio.gather(*(_topic(sc, t, sampler.totals, counted) for t in TOPICS)),
        fetch_traced_calls(base, settings.catalog_timeout_s),
    )
    return SystemOverview(
        at=datetime.now(UTC),
        services=list(services),
        topics=list(topics),
        calls=call_edges(traced, apps, settings.app_id),
        zipkin_ui=f"{base}/zipkin/" if base else None,
        sampling=Sampling(
            interval_s=sampler.interval_s,
            window_s=sampler.window_s,
            samples=len(samples),
            since=samples[0].t if samples else None,
            instances_from=sampler.instances_from,
        ),
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
