"""A small async client for the app's own Dapr sidecar: invocation, pub/sub and state.

Apps talk to each other only through their sidecar. This client keeps one pooled HTTP
connection set to it, forwards the W3C trace context of the request in hand, and turns
sidecar failures into typed exceptions that the service kit maps to problem+json.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from consort.logging import traceparent_var
from consort.settings import SidecarSettings

CLOUDEVENTS_JSON = "application/cloudevents+json"


class SidecarError(Exception):
    """The sidecar answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class TargetUnavailable(SidecarError):
    """The target app (or this sidecar) could not be reached in time."""


class EtagMismatch(SidecarError):
    """A state write lost an optimistic-concurrency race."""


@dataclass(frozen=True)
class StateItem:
    """A value read from the state store, with its etag."""

    key: str
    value: Any
    etag: str | None


def _trace_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = dict(extra or {})
    traceparent = traceparent_var.get()
    if traceparent and "traceparent" not in headers:
        headers["traceparent"] = traceparent
    return headers


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300]
    if isinstance(body, dict):
        return body.get("errorCode"), str(body.get("message", body))[:300]
    return None, str(body)[:300]


class Sidecar:
    """The HTTP API of this app's own daprd."""

    def __init__(self, settings: SidecarSettings, timeout_s: float = 5.0) -> None:
        self.base_url = settings.http_url
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise TargetUnavailable(f"sidecar call timed out: {method} {url}") from exc
        except httpx.TransportError as exc:
            raise TargetUnavailable(f"sidecar unreachable at {self.base_url}: {exc}") from exc

    # -- health -------------------------------------------------------------------------
    async def is_healthy(self) -> bool:
        """True when the sidecar is up and its components are loaded."""
        try:
            response = await self._client.get("/v1.0/healthz/outbound", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 204

    async def metadata(self) -> dict[str, Any]:
        """The sidecar's metadata: app id, components, subscriptions, actors."""
        response = await self._request("GET", "/v1.0/metadata")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    # -- service invocation -------------------------------------------------------------
    async def invoke(
        self,
        app_id: str,
        method: str,
        *,
        json: Any = None,
        http_method: str = "POST",
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Call `method` (a path) on `app_id` through Dapr service invocation.

        Returns the target app's response as is (any status). Raises `TargetUnavailable`
        when the target cannot be reached: Dapr reports that as a 500 with an
        `ERR_DIRECT_INVOKE` code, or the call times out.
        """
        kwargs: dict[str, Any] = {"headers": _trace_headers(headers)}
        if json is not None:
            kwargs["json"] = json
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        response = await self._request(
            http_method, f"/v1.0/invoke/{app_id}/method/{method.lstrip('/')}", **kwargs
        )
        if response.status_code >= 500:
            # Dapr's own failures carry an ERR_ code; an app's own 5xx passes through as is.
            code, message = _error_of(response)
            if code and code.startswith("ERR_"):
                raise TargetUnavailable(
                    f"{app_id} unavailable: {message}", status=response.status_code, code=code
                )
        return response

    # -- pub/sub --------------------------------------------------------------------------
    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        event_id: str | None = None,
        source: str = "consort",
        event_type: str | None = None,
    ) -> str:
        """Publish `data` as a CloudEvent and return its id (the consumers' idempotency key)."""
        event_id = event_id or str(uuid.uuid4())
        envelope = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": event_type or f"consort.{topic}.v1",
            "datacontenttype": "application/json",
            "data": data,
        }
        response = await self._request(
            "POST",
            f"/v1.0/publish/{pubsub}/{topic}",
            json=envelope,
            headers=_trace_headers({"content-type": CLOUDEVENTS_JSON}),
        )
        if response.status_code != 204:
            code, message = _error_of(response)
            raise SidecarError(
                f"publish to {topic} failed: {message}", status=response.status_code, code=code
            )
        return event_id

    # -- state ----------------------------------------------------------------------------
    async def get_state(self, store: str, key: str) -> StateItem | None:
        """Read `key`, or None when it is absent."""
        response = await self._request("GET", f"/v1.0/state/{store}/{key}")
        if response.status_code == 204 or not response.content:
            return None
        if response.status_code != 200:
            code, message = _error_of(response)
            raise SidecarError(f"state get failed: {message}", status=response.status_code)
        return StateItem(key=key, value=response.json(), etag=response.headers.get("etag"))

    async def get_bulk_state(self, store: str, keys: list[str]) -> list[StateItem]:
        """Read several keys in one call; absent keys are left out."""
        if not keys:
            return []
        response = await self._request(
            "POST", f"/v1.0/state/{store}/bulk", json={"keys": keys, "parallelism": 8}
        )
        if response.status_code != 200:
            code, message = _error_of(response)
            raise SidecarError(f"bulk state get failed: {message}", status=response.status_code)
        return [
            StateItem(key=entry["key"], value=entry["data"], etag=entry.get("etag"))
            for entry in response.json()
            if "data" in entry and not entry.get("error")
        ]

    async def save_states(
        self, store: str, values: Mapping[str, Any], *, ttl_s: int | None = None
    ) -> None:
        """Write several keys in one call (last write wins), each with an optional TTL."""
        metadata = {"ttlInSeconds": str(ttl_s)} if ttl_s else None
        items = []
        for key, value in values.items():
            item: dict[str, Any] = {"key": key, "value": value}
            if metadata:
                item["metadata"] = metadata
            items.append(item)
        if items:
            await self._write(f"/v1.0/state/{store}", items)

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        options: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write one key; with `etag` (or first-write) the write is a compare-and-set.

        Raises:
            EtagMismatch: the etag was stale, or a first-write found the key taken.
        """
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        if options:
            item["options"] = dict(options)
        if metadata:
            item["metadata"] = dict(metadata)
        await self._write(f"/v1.0/state/{store}", [item])

    async def _write(self, url: str, body: Any) -> None:
        response = await self._request("POST", url, json=body)
        if response.status_code in (200, 201, 204):
            return
        code, message = _error_of(response)
        # A stale etag is a 409. A first-write on a key that exists fails in Dapr's Redis
        # store with a plain 500 whose message says so: the same lost race.
        if response.status_code == 409 or "failed to set key" in message:
            raise EtagMismatch(message, status=response.status_code, code=code)
        raise SidecarError(f"state write failed: {message}", status=response.status_code, code=code)
