"""The system at a glance, as the web console draws it (`GET /v1/ops/overview`), and one
trace's spans (`GET /v1/ops/traces/{trace_id}`).

The gateway builds the overview from the catalog (each service's `/info` and its sidecar's
metadata), each app's Prometheus metrics (read through Dapr), the topic contracts, the
dead letters it keeps, and the call graph Zipkin derives from traces. Counters are
totals since each process started: the console keeps the samples and draws the rates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from consort.contracts.catalog import CatalogEntry

#: Trace ids as W3C trace context writes them (32 hex digits; Zipkin also accepts 16).
TRACE_ID_PATTERN = r"^([0-9a-f]{16}|[0-9a-f]{32})$"


class ServiceLoad(BaseModel):
    """What one app's `/metrics` said when the overview was built (None: not read)."""

    requests: float = Field(description="Requests served since start (probes excluded).")
    errors: float = Field(description="5xx answers since start.")
    p50_ms: float | None = Field(description="Median latency since start (histogram).")
    p99_ms: float | None = Field(description="99th percentile latency since start.")
    cpu_seconds: float | None = Field(description="CPU time of the process since start.")
    memory_bytes: float | None = Field(description="Resident memory of the process.")
    started_at: float | None = Field(
        description="Process start (Unix seconds): a new value means the app restarted."
    )


class ServiceNode(BaseModel):
    """One service of the topology with its health and load."""

    app_id: str
    health: Literal["up", "down"]
    catalog: CatalogEntry
    load: ServiceLoad | None = None


class TopicNode(BaseModel):
    """One topic of the contracts: who publishes and consumes it, its dead letters."""

    name: str
    publishers: list[str]
    subscribers: list[str]
    dead_letters: int = Field(description="Dead letters the gateway keeps (most recent).")


class CallEdge(BaseModel):
    """Who invokes whom: from the gateway's own routes, or seen in traces by Zipkin."""

    caller: str
    callee: str
    calls: int | None = Field(default=None, description="Calls Zipkin saw (None: not traced).")


class SystemOverview(BaseModel):
    """The whole system for the console: services, topics, calls, each with its state."""

    at: datetime
    services: list[ServiceNode]
    topics: list[TopicNode]
    calls: list[CallEdge]
    zipkin_ui: str | None = Field(description="Zipkin's UI, where traces can be opened.")


class TraceSpans(BaseModel):
    """The spans Zipkin holds for one trace (empty while they are being reported)."""

    trace_id: str
    spans: list[dict[str, Any]]
