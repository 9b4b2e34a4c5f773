"""Traces and metrics, built into every app by the service kit.

Traces: an OpenTelemetry tracer provider per app (service name = app id) that continues
the W3C trace context it receives (from a caller, or from daprd delivering an event) and
sends its spans to Zipkin beside the sidecars' own, so one request is one trace across
apps and sidecars.

The sidecar client (`consort.kit.dapr`) records a client span per call and passes the context
on. Metrics: Prometheus counters and histograms served at `/metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Health probes and scrapes would flood traces; they are not what anyone looks for.
EXCLUDED_URLS = "healthz,readyz,metrics,dapr/subscribe,dapr/config"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def setup_tracing(
    app: FastAPI, service: str, version: str, zipkin_url: str | None, sampling: float = 1.0
) -> None:
    """Trace `app` as `service`; export to `zipkin_url` when given (else spans stay local).

    The provider is global to the process (one app per process), installed once.

    Args:
        app: the FastAPI app to instrument.
        service: the service name on its spans (the app id).
        version: the service version on its spans.
        zipkin_url: Zipkin's span endpoint (`.../api/v2/spans`), or None.
        sampling: the share of traces started here that are recorded; a trace that
            arrives sampled or not keeps its caller's decision (as daprd does).
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service, SERVICE_VERSION: version}),
            sampler=ParentBased(TraceIdRatioBased(sampling)),
        )
        if zipkin_url:
            provider.add_span_processor(
                BatchSpanProcessor(ZipkinExporter(endpoint=zipkin_url), schedule_delay_millis=500)
            )
        trace.set_tracer_provider(provider)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
    )


def current_trace_id() -> str | None:
    """The trace id of the span in hand, as 32 hex digits, if there is one."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def tracer(name: str) -> trace.Tracer:
    """The tracer `name` (a module's or app's) for spans around domain work."""
    return trace.get_tracer(name)


class Metrics:
    """The Prometheus metrics of one app (its own registry, served at `/metrics`)."""

    def __init__(self, app_id: str) -> None:
        self.registry = CollectorRegistry()
        # CPU seconds, resident memory and start time of the process (the console's load
        # charts; a new start time is a restart).
        ProcessCollector(registry=self.registry)
        labels = {"app": app_id}
        self.requests = Counter(
            "consort_http_requests",
            "HTTP requests served, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "consort_http_request_duration_seconds",
            "Time to serve an HTTP request, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "consort_http_requests_in_flight",
            "Requests being served right now (the app's queue depth).",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "consort_model_queue_depth",
            "Inputs waiting for the model (e.g. for a micro-batch).",
            registry=self.registry,
        )
        self.inference = Histogram(
            "consort_model_inference_seconds",
            "Time a model spent on one call, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "consort_model_batch_size",
            "Items a model processed in one call, by model.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.coalesced = Histogram(
            "consort_coalesced_call_items",
            "Calls to another service that one invocation carried (1: it went alone), by "
            "target (`consort.kit.coalesce`).",
            ["target"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.events = Counter(
            "consort_events",
            "Events delivered to this app, by topic and outcome (SUCCESS, RETRY, DROP).",
            ["topic", "status"],
            registry=self.registry,
        )
        self.info = Gauge(
            "consort_app_info",
            "The app and its version (always 1).",
            ["app", "version"],
            registry=self.registry,
        )
        self.app_labels = labels

    @contextmanager
    def inferring(self, model: str, items: int = 1) -> Iterator[None]:
        """Time one model call over `items` inputs."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.inference.labels(model).observe(time.perf_counter() - started)
            self.batch_size.labels(model).observe(items)


class MetricsMiddleware:
    """Count and time every request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/metrics":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.inflight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)
