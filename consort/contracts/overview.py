"""The system at a glance, as the web console draws it (`GET /v1/ops/overview`), and one
trace's spans (`GET /v1/ops/traces/{trace_id}`).

The gateway builds the overview from the catalog (each service's `/info` and its sidecar's
metadata), the topic contracts, the call graph Zipkin derives from traces, and the samples
it takes every few seconds while the console polls: every instance's Prometheus metrics,
its app's and its sidecar's (daprd's own port), with the launcher's instances and restarts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from consort.contracts.catalog import CatalogEntry

#: Trace ids as W3C trace context writes them (32 hex digits; Zipkin also accepts 16).
TRACE_ID_PATTERN = r"^([0-9a-f]{16}|[0-9a-f]{32})$"


class ServiceLoad(BaseModel):
    """What an app's instances' `/metrics` said at the last sample, summed (None: not
    read)."""

    requests: float = Field(description="Requests served since start (probes excluded).")
    errors: float = Field(description="5xx answers since start.")
    p50_ms: float | None = Field(description="Median latency since start (histogram).")
    p99_ms: float | None = Field(description="99th percentile latency since start.")
    cpu_seconds: float | None = Field(description="CPU time of the process since start.")
    memory_bytes: float | None = Field(description="Resident memory of the process.")
    started_at: float | None = Field(
        description="Process start (Unix seconds): a new value means the app restarted."
    )


class InstanceState(BaseModel):
    """One running copy of an app, as the launcher that runs it says."""

    name: str = Field(description="`nlp` for the first instance, `nlp-1`, `nlp-2` and so on after.")
    state: str = Field(description="ready, starting, restarting, crash-looping, exited or stopped.")
    restarts: int = Field(description="Times the launcher started it again after an exit.")
    uptime_s: float | None = Field(description="Seconds since its app process started.")


class LoadWindow(BaseModel):
    """One app's figures over a window, all its instances together (None: not measured,
    e.g. no request in the window for the latency and error share)."""

    seconds: float = Field(description="The window's length.")
    requests_per_s: float | None
    error_rate: float | None = Field(description="Share of the window's requests that were 5xx.")
    p50_ms: float | None = Field(description="Median latency of the window's requests.")
    p99_ms: float | None = Field(description="99th percentile latency of the window's requests.")
    cpu_percent: float | None = Field(description="The app processes' CPU, % of one core.")
    memory_bytes: float | None = Field(description="The app processes' resident memory.")
    sidecar_cpu_percent: float | None = Field(description="Their daprd processes' CPU.")
    sidecar_memory_bytes: float | None = Field(description="Their daprd processes' memory.")


class LoadSeries(BaseModel):
    """One app's figures between each two successive samples, as columns (time `t` in
    Unix seconds, the rest as in `LoadWindow`)."""

    t: list[float]
    requests_per_s: list[float | None]
    error_rate: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    cpu_percent: list[float | None]
    memory_bytes: list[float | None]
    sidecar_cpu_percent: list[float | None]


class ServiceNode(BaseModel):
    """One service of the topology with its health, instances and load."""

    app_id: str
    health: Literal["up", "down"]
    catalog: CatalogEntry
    load: ServiceLoad | None = Field(
        default=None, description="Totals since start, of its instances together."
    )
    instances: list[InstanceState] | None = Field(
        default=None, description="Its instances (None: no launcher says, e.g. on Kubernetes)."
    )
    recent: LoadWindow | None = Field(
        default=None, description="Over the last minute (or since sampling began)."
    )
    series: LoadSeries | None = Field(default=None, description="Over the last minutes.")


class TopicConsumer(BaseModel):
    """One subscriber of a topic (all its instances): what it finished and its lag."""

    app_id: str
    delivered: float | None = Field(
        description="Events it finished: handled, or dropped as poison (as the app counts "
        "them, else as its sidecar does; None: delivered in bulk and counted by nobody)."
    )
    retries: float | None = Field(description="Deliveries it failed, to be tried again.")
    lag: float | None = Field(
        description="Published and not yet finished by it (never below 0); None when the "
        "topic is published in batches, whose events daprd does not count."
    )


class TopicNode(BaseModel):
    """One topic of the contracts: who publishes and consumes it, its flow, dead letters."""

    name: str
    publishers: list[str]
    subscribers: list[str]
    published: float | None = Field(
        default=None,
        description="Events the apps' sidecars published on it one by one (None: no sidecar "
        "metrics).",
    )
    published_batches: float | None = Field(
        default=None, description="Bulk publishes on it (calls; daprd does not count their events)."
    )
    consumers: list[TopicConsumer] = Field(default_factory=list)
    dead_letters: int = Field(
        description="Events that went to `<topic>.dead-letter` (counted by the sidecar "
        "that delivered them to the gateway; without sidecar metrics, the ones it keeps)."
    )
    dead_letters_kept: int = Field(
        default=0, description="Dead letters the gateway keeps (the most recent)."
    )


class Sampling(BaseModel):
    """How the load figures were sampled."""

    interval_s: float
    window_s: float = Field(description="How far back the series go at most.")
    samples: int = Field(description="Samples kept now.")
    since: float | None = Field(description="The oldest kept sample's time (Unix seconds).")
    instances_from: str | None = Field(
        description="Who told the instances (`launcher`), None when nobody did."
    )


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
    sampling: Sampling | None = None


class TraceSpans(BaseModel):
    """The spans Zipkin holds for one trace (empty while they are being reported)."""

    trace_id: str
    spans: list[dict[str, Any]]
