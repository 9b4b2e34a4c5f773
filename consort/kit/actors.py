"""Hosting Dapr actors in a Consort app: the routes daprd calls, kept out of the public API.

daprd reads `GET /dapr/config` for the actor types this app hosts and their settings, then
calls `PUT /actors/<type>/<id>/method/<name>` (methods, `remind/<name>` for reminders,
`timer/<name>` for timers) and `DELETE /actors/<type>/<id>` (deactivation). These routes
hand the calls to the Dapr SDK's `ActorRuntime`, as `dapr.ext.fastapi.DaprActor` does;
they are mounted here instead because that extension adds a `/healthz` of its own (the
service kit has one, with other semantics) and puts the internal routes in the app's
OpenAPI document (the public contract).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from dapr.actor import Actor, ActorRuntime
from dapr.actor.runtime.config import ActorRuntimeConfig
from dapr.clients.base import DaprActorClientBase
from dapr.serializers import DefaultJSONSerializer
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from consort.kit.dapr import Sidecar

log = logging.getLogger("consort.kit.actors")
_serializer = DefaultJSONSerializer()


def actor_runtime_config(*, idle_timeout_s: float, scan_interval_s: float) -> ActorRuntimeConfig:
    """How long an idle actor stays in memory, and how often daprd looks for idle ones."""
    return ActorRuntimeConfig(
        actor_idle_timeout=timedelta(seconds=idle_timeout_s),
        actor_scan_interval=timedelta(seconds=scan_interval_s),
        # Under placement's 30 s dissemination timeout (daprd clamps 30 s down to 24 s).
        drain_ongoing_call_timeout=timedelta(seconds=20),
        drain_rebalanced_actors=True,
    )


def _failed(where: str, exc: Exception) -> JSONResponse:
    # daprd passes this on to the caller as the method's failure.
    log.exception("actor call %s failed", where)
    return JSONResponse({"message": repr(exc), "errorCode": "ERR_ACTOR_METHOD"}, status_code=500)


def mount_actor_runtime(app: FastAPI) -> None:
    """Serve the routes daprd uses to reach the actors registered with `ActorRuntime`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/dapr/config")
    async def dapr_config() -> Response:
        body = _serializer.serialize(ActorRuntime.get_actor_config())
        return Response(body, media_type="application/json")

    @router.delete("/actors/{actor_type}/{actor_id}")
    async def deactivate(actor_type: str, actor_id: str) -> Response:
        try:
            await ActorRuntime.deactivate(actor_type, actor_id)
        except Exception as exc:
            return _failed(f"{actor_type}/{actor_id} deactivate", exc)
        return Response(status_code=200)

    @router.put("/actors/{actor_type}/{actor_id}/method/remind/{name}")
    async def remind(actor_type: str, actor_id: str, name: str, request: Request) -> Response:
        try:
            await ActorRuntime.fire_reminder(actor_type, actor_id, name, await request.body())
        except Exception as exc:
            return _failed(f"{actor_type}/{actor_id} reminder {name}", exc)
        return Response(status_code=200)

    @router.put("/actors/{actor_type}/{actor_id}/method/timer/{name}")
    async def timer(actor_type: str, actor_id: str, name: str, request: Request) -> Response:
        try:
            await ActorRuntime.fire_timer(actor_type, actor_id, name, await request.body())
        except Exception as exc:
            return _failed(f"{actor_type}/{actor_id} timer {name}", exc)
        return Response(status_code=200)

    @router.put("/actors/{actor_type}/{actor_id}/method/{method}")
    async def method(actor_type: str, actor_id: str, method: str, request: Request) -> Response:
        try:
            result: Any = await ActorRuntime.dispatch(
                actor_type,
                actor_id,
                method,
                await request.body(),
                request.headers.get("Dapr-Reentrancy-Id"),
            )
        except Exception as exc:
            return _failed(f"{actor_type}/{actor_id}.{method}", exc)
        return Response(result, media_type="application/json")

    app.include_router(router)


class SidecarActorClient(DaprActorClientBase):
    """What hosted actors send to the sidecar (state, reminders, timers, calls), over the
    app's own pooled `Sidecar` client. The SDK's HTTP client opens a new connection (a new
    aiohttp session) for every call: at every actor call's state save, that cost more
    than the rest of the call."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    async def invoke_method(
        self, actor_type: str, actor_id: str, method: str, data: bytes | None = None
    ) -> bytes:
        """Call an actor method through placement; returns the method's body."""
        return await self._sidecar.actor_api("POST", actor_type, actor_id, f"method/{method}", data)

    async def save_state_transactionally(self, actor_type: str, actor_id: str, data: bytes) -> None:
        """Write a hosted actor's state changes (the SDK's transaction body)."""
        await self._sidecar.actor_api("PUT", actor_type, actor_id, "state", data)

    async def get_state(self, actor_type: str, actor_id: str, name: str) -> bytes:
        """Read one state key of a hosted actor."""
        return await self._sidecar.actor_api(
            "GET", actor_type, actor_id, f"state/{quote(name, safe='')}", None
        )

    async def register_reminder(
        self, actor_type: str, actor_id: str, name: str, data: bytes
    ) -> None:
        """Register (or replace) a durable reminder of a hosted actor."""
        await self._sidecar.actor_api("PUT", actor_type, actor_id, f"reminders/{name}", data)

    async def unregister_reminder(self, actor_type: str, actor_id: str, name: str) -> None:
        """Remove a hosted actor's reminder."""
        await self._sidecar.actor_api("DELETE", actor_type, actor_id, f"reminders/{name}", None)

    async def register_timer(self, actor_type: str, actor_id: str, name: str, data: bytes) -> None:
        """Register a timer of a hosted actor (gone when it deactivates)."""
        await self._sidecar.actor_api("PUT", actor_type, actor_id, f"timers/{name}", data)

    async def unregister_timer(self, actor_type: str, actor_id: str, name: str) -> None:
        """Remove a hosted actor's timer."""
        await self._sidecar.actor_api("DELETE", actor_type, actor_id, f"timers/{name}", None)


async def register_actor(actor: type[Actor], sidecar: Sidecar, **options: Any) -> None:
    """Register an actor type whose outbound calls go through `sidecar` (pass an
    `actor_factory` to inject the actor's dependencies)."""
    await ActorRuntime.register_actor(actor, actor_client=SidecarActorClient(sidecar), **options)
