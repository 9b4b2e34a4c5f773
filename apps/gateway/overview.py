"""The system overview the web console draws, from what the running system says: each
instance's figures (read by `apps.gateway.sampler`), and the call graph Zipkin derives from
traces.

Plain code (no web framework): the route (`apps.gateway.routes.console`) gathers the
inputs through the sidecar and builds the overview with these.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from apps.gateway.samples import InstanceScrape
from consort.contracts.overview import CallEdge, ServiceLoad
from consort.kit.metrics_text import bucket_quantiles

#: How far back the call graph looks in Zipkin's traces.
CALLS_LOOKBACK_S = 15 * 60


def service_totals(instances: list[InstanceScrape]) -> ServiceLoad | None:
    """The totals since start of an app's instances, together (None: none was read)."""
    read = [i for i in instances if i.requests is not None]
    if not read:
        return None
    buckets: dict[float, float] = {}
    for i in read:
        for bound, count in i.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    p50, p99 = bucket_quantiles(buckets)

    def total(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    starts = [i.started_at for i in read if i.started_at is not None]
    return ServiceLoad(
        requests=sum(i.requests or 0 for i in read),
        errors=sum(i.errors or 0 for i in read),
        p50_ms=p50,
        p99_ms=p99,
        cpu_seconds=total([i.cpu_s for i in read]),
        memory_bytes=total([i.memory_bytes for i in read]),
        started_at=max(starts) if starts else None,
    )


def zipkin_base(span_endpoint: str | None) -> str | None:
    """Zipkin's address, from the span endpoint the tracer exports to (`…/api/v2/spans`)."""
    return span_endpoint.removesuffix("/api/v2/spans") if span_endpoint else None


def traced_calls(links: list[dict[str, Any]]) -> list[CallEdge]:
    """Zipkin's dependency links (`parent`, `child`, `callCount`) as call edges."""
    return [
        CallEdge(caller=link["parent"], callee=link["child"], calls=int(link.get("callCount", 0)))
        for link in links
        if link.get("parent") and link.get("child") and link["parent"] != link["child"]
    ]


async def fetch_traced_calls(base: str | None, timeout_s: float) -> list[CallEdge]:
    """Who called whom in the last minutes, as Zipkin links the spans; none without it."""
    if base is None:
        return []
    params = {"endTs": str(int(time.time() * 1000)), "lookback": str(CALLS_LOOKBACK_S * 1000)}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            reply = await client.get(f"{base}/api/v2/dependencies", params=params)
        reply.raise_for_status()
        links = reply.json()
    except (httpx.HTTPError, ValueError):
        return []
    return traced_calls(links if isinstance(links, list) else [])


def call_edges(traced: list[CallEdge], apps: list[str], gateway: str) -> list[CallEdge]:
    """The gateway's own calls (it fronts every service) merged with the traced ones
    between the apps of the catalog, each pair once."""
    seen = {(e.caller, e.callee): e for e in traced if e.caller in apps and e.callee in apps}
    for app_id in apps:
        if app_id != gateway:
            seen.setdefault((gateway, app_id), CallEdge(caller=gateway, callee=app_id))
    return sorted(seen.values(), key=lambda e: (e.caller, e.callee))
