"""The service bootstrap every Consort app is built with.

`create_app` gives a FastAPI app with JSON logs carrying the trace id, problem+json errors,
a body size limit, `/healthz` (alive), `/readyz` (model loaded and sidecar reachable) and
`/info` (what the app is and serves). Models load in the background (`ServiceKit.load_model`)
so the app and its sidecar start while they load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consort.contracts.catalog import Component, Route, ServiceInfo, SidecarInfo, Subscription
from consort.contracts.common import ModelInfo
from consort.contracts.events import TOPICS
from consort.kit.app_token import AppTokenGuard
from consort.kit.batching import EventBatcher, StateWriteBehind
from consort.kit.caller_faults import CallerFaultsInBand
from consort.kit.dapr import Sidecar, SidecarError
from consort.kit.errors import (
    BodyLimitMiddleware,
    install_problem_handlers,
    problem_response,
    unavailable,
    unexpected_error_response,
)
from consort.kit.events import count_deliveries
from consort.kit.logging import (
    configure_logging,
    trace_id_from_traceparent,
    trace_id_var,
    traceparent_var,
)
from consort.kit.settings import ServiceSettings, SidecarSettings
from consort.kit.telemetry import Metrics, MetricsMiddleware, current_trace_id, setup_tracing

#: Largest event delivery (a bulk of up to 100 events) an app accepts from its sidecar.
EVENT_DELIVERY_MAX_BYTES = 32 * 1024 * 1024

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, or a sentence saying what is not ready yet."""

#: The environment variable that overrides the version an app's code states.
SERVICE_VERSION_ENV = "CONSORT_SERVICE_VERSION"

log = logging.getLogger(__name__)


T = TypeVar("T")


class Draining:
    """Whether this process is shutting down, for `/readyz`: set once, on SIGTERM.

    `consort serve` sets it the moment the signal arrives; the server then stops
    accepting, lets the requests and event deliveries in flight finish within the grace
    (`CONSORT_SHUTDOWN_GRACE_S`), runs the apps' shut-down and exits.
    """

    def __init__(self) -> None:
        self.since: float | None = None

    def begin(self, signum: int = signal.SIGTERM) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.info("draining: %s received, finishing what is in flight", signal.strsignal(signum))

    @property
    def active(self) -> bool:
        return self.since is not None


#: One app per process: the process's shutdown state.
draining = Draining()


class ModelSlot(Generic[T]):
    """A model that loads in the background; `get` it in a request handler."""

    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self._loader = loader
        self._model: T | None = None
        self._error: str | None = None
        self._settled = asyncio.Event()

    async def load(self) -> None:
        started = time.perf_counter()
        try:
            self._model = await asyncio.to_thread(self._loader)
        except Exception as exc:  # reported by /readyz and every request, not a crash loop
            log.exception("model %s failed to load", self.name)
            self._error = f"{type(exc).__name__}: {exc}"
            self._settled.set()
            return
        self._settled.set()
        log.info("model %s loaded in %.2f s", self.name, time.perf_counter() - started)

    async def wait(self, timeout_s: float = 60.0) -> T:
        """The model once it has loaded: for event handlers, which daprd may call while it
        is still loading (a request handler answers 503 at once instead, with `get`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        return self.get()

    async def readiness(self) -> str | None:
        if self._model is not None:
            return None
        if self._error is not None:
            return f"model {self.name} failed to load: {self._error}"
        return f"model {self.name} is loading"

    @property
    def loaded(self) -> T | None:
        return self._model

    def get(self) -> T:
        """The model, or a 503 problem while it loads (or after it failed to)."""
        if self._model is None:
            raise unavailable(
                "Model not ready",
                f"model {self.name} failed to load: {self._error}"
                if self._error
                else f"model {self.name} is still loading; retry shortly",
                slug="model-not-ready",
                retry_after_s=1,
            )
        return self._model


class ServiceKit:
    """What the bootstrap gives an app: settings, its sidecar client and readiness checks."""

    def __init__(self, settings: ServiceSettings, version: str) -> None:
        """Args:
        settings: the app's settings.
        version: the service's version as its code states it; `CONSORT_SERVICE_VERSION`
            overrides it (a rolling update names the version it deploys).
        """
        self.settings = settings
        self.version = os.environ.get(SERVICE_VERSION_ENV) or version
        self.sidecar_settings = SidecarSettings()
        self._sidecar: Sidecar | None = None
        self._checks: dict[str, ReadinessCheck] = {"sidecar": self._sidecar_ready}
        self._slots: list[ModelSlot[Any]] = []
        self._batchers: list[EventBatcher | StateWriteBehind] = []
        #: Models (or libraries) the app uses that are not loaded through `load_model`.
        self.extra_models: list[ModelInfo] = []
        self.metrics = Metrics(settings.app_id)
        self.metrics.info.labels(settings.app_id, version).set(1)
        count_deliveries(self.metrics.events)

    @property
    def sidecar(self) -> Sidecar:
        if self._sidecar is None:
            raise RuntimeError("the sidecar client exists only while the app runs")
        return self._sidecar

    def load_model(self, name: str, loader: Callable[[], T]) -> ModelSlot[T]:
        """Load a model in a worker thread once the app starts, without blocking start-up.

        The app serves `/healthz` at once; `/readyz` says the model is loading (or why it
        failed) until it is in place, and `ModelSlot.get` answers 503 until then. Daprd's
        app health check uses `/healthz`, so the sidecar starts beside a loading model.
        """
        slot: ModelSlot[T] = ModelSlot(name, loader)
        self._slots.append(slot)
        self.add_readiness_check(name, slot.readiness)
        return slot

    def event_batcher(self, pubsub: str, topic_name: str, **options: Any) -> EventBatcher:
        """Publish events of `topic_name` in bulk from a background task that runs while
        the app does (flushed at shutdown). See `consort.kit.batching` for the trade."""
        batcher = EventBatcher(
            lambda: self.sidecar, pubsub, topic_name, source=self.settings.app_id, **options
        )
        self._batchers.append(batcher)
        return batcher

    def state_write_behind(self, store: str, **options: Any) -> StateWriteBehind:
        """Write keys of `store` in bulk from a background task that runs while the app
        does (flushed at shutdown). See `consort.kit.batching` for the trade."""
        writer = StateWriteBehind(lambda: self.sidecar, store, **options)
        self._batchers.append(writer)
        return writer

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Make `/readyz` wait for `check` as well."""
        self._checks[name] = check

    async def _sidecar_ready(self) -> str | None:
        if self._sidecar is None or not await self._sidecar.is_healthy():
            return f"Dapr sidecar at {self.sidecar_settings.http_url} is not reachable yet"
        return None

    async def readiness(self) -> dict[str, str | None]:
        return {name: await check() for name, check in self._checks.items()}

    @property
    def models(self) -> list[ModelInfo]:
        """The name and version of every model loaded so far."""
        found = (getattr(slot.loaded, "model", None) for slot in self._slots)
        return [m for m in found if isinstance(m, ModelInfo)] + self.extra_models

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "models": [m.model_dump() for m in self.models]}

    async def describe(self, app: FastAPI) -> ServiceInfo:
        """This service as it runs: routes, models, topics, and what its sidecar reports."""
        # The OpenAPI document is the contract: its paths are the routes the app offers.
        routes = [
            Route(method=method.upper(), path=path)
            for path, operations in app.openapi().get("paths", {}).items()
            for method in operations
        ]
        sidecar: SidecarInfo | None = None
        try:
            metadata = await self.sidecar.metadata()
            sidecar = SidecarInfo(
                runtime_version=metadata.get("runtimeVersion", ""),
                components=[
                    Component(name=c["name"], type=c["type"], version=c.get("version", ""))
                    for c in metadata.get("components", [])
                ],
                subscriptions=[
                    Subscription(
                        pubsub=s["pubsubname"],
                        topic=s["topic"],
                        dead_letter_topic=s.get("deadLetterTopic") or None,
                    )
                    for s in metadata.get("subscriptions", [])
                ],
                actor_types=[a["type"] for a in metadata.get("actors", [])],
            )
        except SidecarError as exc:
            log.warning("sidecar metadata unavailable: %s", exc)
        return ServiceInfo(
            app_id=self.settings.app_id,
            version=self.version,
            models=self.models,
            routes=routes,
            publishes=[t.name for t in TOPICS if self.settings.app_id in t.publishers],
            subscribes=sorted({sub.topic for sub in sidecar.subscriptions} if sidecar else set()),
            sidecar=sidecar,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._sidecar = Sidecar(self.sidecar_settings, self.settings.sidecar_timeout_s)
        loading = [asyncio.create_task(slot.load()) for slot in self._slots]
        for batcher in self._batchers:
            batcher.start()
        try:
            yield
        finally:
            for task in loading:
                task.cancel()
            for batcher in self._batchers:
                await batcher.stop()
            await self._sidecar.aclose()
            self._sidecar = None


class TraceContextMiddleware:
    """Continue the caller's W3C trace, or start one when the request brings none.

    Logs, problem+json errors and the sidecar's spans of one request then share one trace
    id, which every response also carries in `x-trace-id`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"traceparent")
        traceparent = raw.decode("latin-1") if raw else None
        # The OpenTelemetry server span (outermost middleware) holds the trace in hand;
        # requests it does not trace (health probes) keep the caller's or get a new one.
        trace_id = current_trace_id() or trace_id_from_traceparent(traceparent)
        if trace_id is None:
            trace_id = secrets.token_hex(16)
            traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        trace_token = trace_id_var.set(trace_id)
        parent_token = traceparent_var.set(traceparent)

        started = False

        async def send_with_trace_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-trace-id", trace_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace_id)
        except Exception:
            # Answered here, while the trace id is still known, rather than by Starlette's
            # outermost handler.
            log.exception("unhandled error on %s", scope.get("path"))
            if started:
                raise
            await unexpected_error_response(scope.get("path", ""))(
                scope, receive, send_with_trace_id
            )
        finally:
            trace_id_var.reset(trace_token)
            traceparent_var.reset(parent_token)


def create_app(
    kit: ServiceKit,
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    public_paths: Sequence[str] = (),
    inner_middleware: Sequence[Middleware] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """Build the FastAPI app of a Consort service around `kit`.

    Args:
        kit: the service's settings, sidecar client and readiness checks.
        title: the OpenAPI title.
        description: the OpenAPI description (Markdown).
        lifespan: the app's own start-up and shut-down (models: `ServiceKit.load_model`).
        public_paths: path prefixes reached from outside rather than through the sidecar
            (the gateway's API), open without the sidecar's app token (`AppTokenGuard`).
        inner_middleware: run inside the kit's (within the trace, counted by the metrics),
            outermost first: the gateway's API keys.
        **fastapi_kwargs: passed to FastAPI.
    """
    configure_logging(kit.settings.app_id, kit.settings.log_level)

    @asynccontextmanager
    async def combined(app: FastAPI) -> AsyncIterator[None]:
        async with kit.running():
            if lifespan is None:
                log.info("started", extra={"fields": kit.summary()})
                yield
            else:
                async with lifespan(app):
                    log.info("started", extra={"fields": kit.summary()})
                    yield

    app = FastAPI(
        title=title,
        description=description,
        version=kit.version,
        lifespan=combined,
        **fastapi_kwargs,
    )
    install_problem_handlers(app)
    for middleware in reversed(inner_middleware):
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=kit.settings.max_body_bytes,
        # Bulk event deliveries from daprd carry up to 100 events: room for them.
        limits={"/events/": EVENT_DELIVERY_MAX_BYTES, **kit.settings.body_limits},
    )
    app.add_middleware(TraceContextMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=kit.metrics)
    # Outside the metrics, which count a caller fault under its real status.
    app.add_middleware(CallerFaultsInBand)
    # Outermost: a request that is not from this app's sidecar is refused before any work.
    app.add_middleware(AppTokenGuard, public=public_paths)
    setup_tracing(
        app,
        kit.settings.app_id,
        kit.version,
        kit.settings.zipkin_url,
        kit.settings.trace_sampling,
    )

    _mount_health_routes(app, kit)
    return app


def _mount_health_routes(app: FastAPI, kit: ServiceKit) -> None:
    """`/healthz`, `/readyz`, `/metrics` and `/info`: what launchers, daprd and operators ask."""

    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: models loaded and sidecar reachable",
        responses={503: {"description": "Not ready; the body says what is missing."}},
    )
    async def readyz(request: Request) -> Response:
        if draining.active:
            return problem_response(
                request.url.path,
                503,
                "Shutting down",
                "This instance is finishing its requests in flight before it exits; "
                "send new ones elsewhere.",
                slug="shutting-down",
                headers={"Retry-After": "1"},
            )
        results = await kit.readiness()
        waiting = {name: why for name, why in results.items() if why}
        if waiting:
            return problem_response(
                request.url.path,
                503,
                "Not ready",
                "; ".join(waiting.values()),
                slug="not-ready",
            )
        return JSONResponse({"status": "ready", "checks": list(results)})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(kit.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/info",
        tags=["health"],
        summary="What this service is: version, models, routes, topics, sidecar",
        response_model=ServiceInfo,
    )
    async def info() -> ServiceInfo:
        return await kit.describe(app)
