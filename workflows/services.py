"""What activities reach the rest of Consort through: the orchestrator's own sidecar.

Activities run on the workflow worker's event loop (a thread of its own), not on the
app's, so they get a sidecar client of their own. Failures are sorted for the retry
policy: a service that is down, overloaded or slow raises `ServiceUnavailable` (retried);
an answer that retrying cannot change (a 4xx, a reply that breaks the contract) raises
the engine's `NonRetryableError`, which fails the activity at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from dapr.ext.workflow import RetryPolicy

# The engine matches a failure's type *name* against "NonRetryableError"; dapr-ext-workflow
# 1.18.3 does not re-export the class, so it is taken from the engine's own module.
from dapr.ext.workflow._durabletask.task import NonRetryableError
from pydantic import BaseModel, ValidationError

from consort.kit.dapr import Reply, Sidecar, SidecarError, TargetUnavailable
from consort.kit.settings import SidecarSettings

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("workflows")

__all__ = ["NonRetryableError", "Retry", "ServiceUnavailable", "Services", "Targets"]


class ServiceUnavailable(Exception):
    """A service (or a building block) did not answer usefully; worth retrying."""


@dataclass(frozen=True)
class Targets:
    """App ids of the services the workflows call."""

    nlp: str = "nlp"
    sentiment: str = "sentiment"
    vision: str = "vision"
    forecast: str = "forecast"
    anomaly: str = "anomaly"


@dataclass(frozen=True)
class Retry:
    """How often an activity is tried before its failure is permanent."""

    first_interval_s: float = 0.5
    backoff: float = 2.0
    max_interval_s: float = 4.0
    attempts: int = 10

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            first_retry_interval=timedelta(seconds=self.first_interval_s),
            backoff_coefficient=self.backoff,
            max_retry_interval=timedelta(seconds=self.max_interval_s),
            max_number_of_attempts=self.attempts,
        )


@dataclass
class Services:
    """The orchestrator's sidecar and the names activities use with it."""

    sidecar_settings: SidecarSettings
    statestore: str
    pubsub: str
    source: str
    targets: Targets = field(default_factory=Targets)
    invoke_timeout_s: float = 5.0
    vision_timeout_s: float = 30.0
    forecast_timeout_s: float = 15.0
    image_ttl_s: int = 30 * 24 * 3600
    _clients: dict[asyncio.AbstractEventLoop, Sidecar] = field(default_factory=dict)

    def sidecar(self) -> Sidecar:
        """A sidecar client for the running event loop (aiohttp sessions are per loop)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Sidecar(self.sidecar_settings, self.invoke_timeout_s)
        return client

    def close(self, timeout_s: float = 2.0) -> None:
        """Close every client, each on its own loop (call before the loops stop, and not
        from one of them)."""
        for loop, client in list(self._clients.items()):
            if loop.is_running():
                future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                try:
                    future.result(timeout_s)
                except Exception as exc:  # closing is best effort at shut-down
                    log.warning("sidecar client not closed: %s", exc)
        self._clients.clear()

    async def call(
        self,
        app_id: str,
        method: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        http_method: str = "POST",
        timeout_s: float | None = None,
        passing: frozenset[int] = frozenset(),
    ) -> Reply:
        """Invoke `method` on `app_id`; the successful reply (or one whose status is in
        `passing`), or a sorted failure."""
        try:
            reply = await self.sidecar().invoke(
                app_id,
                method,
                json=json,
                data=data,
                params=params,
                headers=headers,
                http_method=http_method,
                timeout_s=timeout_s or self.invoke_timeout_s,
            )
        except TargetUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        except SidecarError as exc:
            raise ServiceUnavailable(f"sidecar failed calling {app_id}: {exc}") from exc
        if reply.status < 400 or reply.status in passing:
            return reply
        if reply.status in (408, 425, 429) or reply.status >= 500:
            raise ServiceUnavailable(f"{app_id} answered {reply.status}: {reply.text[:300]}")
        raise NonRetryableError(f"{app_id} refused {method} ({reply.status}): {reply.text[:300]}")

    async def call_model(
        self, app_id: str, method: str, answer: type[M], *, json: Any = None, **request: Any
    ) -> M:
        """`call`, and the reply read as `answer` (a reply that breaks it is permanent)."""
        reply = await self.call(app_id, method, json=json, **request)
        return _read(app_id, method, reply, answer)

    async def get_model(self, app_id: str, method: str, answer: type[M]) -> M | None:
        """GET `method` on `app_id` read as `answer`; None when it answers 404."""
        reply = await self.call(app_id, method, http_method="GET", passing=frozenset({404}))
        if reply.status == 404:
            return None
        return _read(app_id, method, reply, answer)

    async def publish(self, topic_name: str, data: BaseModel, *, event_id: str) -> str:
        """Publish `data` on `topic_name` as a CloudEvent with a deterministic id."""
        try:
            return await self.sidecar().publish_event(
                self.pubsub, topic_name, data, event_id=event_id, source=self.source
            )
        except SidecarError as exc:
            raise ServiceUnavailable(f"publish to {topic_name} failed: {exc}") from exc


def _read(app_id: str, method: str, reply: Reply, answer: type[M]) -> M:
    try:
        return answer.model_validate(reply.json())
    except (ValueError, ValidationError) as exc:
        raise NonRetryableError(
            f"{app_id} {method} answered outside its contract: {str(exc)[:300]}"
        ) from exc
