"""A small async client for the app's own Dapr sidecar: invocation, pub/sub and state.

Apps talk to each other only through their sidecar. This client keeps one pooled set of
keep-alive connections to it (aiohttp: under concurrency it costs a fraction of the CPU
httpx does, measured in bench/), records a client span per call and passes the W3C trace
context on, and turns sidecar failures into typed exceptions that the service kit maps
to problem+json.
"""

from __future__ import annotations

import json as jsonlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel

from consort.contracts.events import topic
from consort.kit.caller_faults import CALLER_FAULTS_HEADER, IN_BAND, restored_status
from consort.kit.logging import traceparent_var
from consort.kit.settings import SidecarSettings

CLOUDEVENTS_JSON = "application/cloudevents+json"
#: The jobs API of daprd 1.18 (still alpha in name).
JOBS_API = "/v1.0-alpha1/jobs"
_tracer = trace.get_tracer("consort.kit.dapr")


class SidecarError(Exception):
    """The sidecar answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class TargetUnavailable(SidecarError):
    """The target app (or this sidecar) could not be reached in time."""


#: How Dapr's state stores word a first-write on a key that exists (a lost race, as a
#: stale etag is): Redis (`state.redis`), PostgreSQL v2 (`state.postgresql`).
FIRST_WRITE_TAKEN = ("failed to set key", "no item was updated")


class EtagMismatch(SidecarError):
    """A state write lost an optimistic-concurrency race."""


#: What a `Sidecar.update_state` change returns when there is nothing to write.
UNCHANGED: Any = object()


@dataclass(frozen=True)
class StateItem:
    """A value read from the state store, with its etag."""

    key: str
    value: Any
    etag: str | None


@dataclass(frozen=True)
class Reply:
    """A sidecar's (or, through invocation, an app's) HTTP answer, read whole."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    @property
    def content_type(self) -> str:
        """The Content-Type header, with its parameters ("" when absent)."""
        return self.headers.get("content-type", "")


def _error_of(reply: Reply) -> tuple[str | None, str]:
    try:
        body = reply.json()
    except ValueError:
        return None, reply.text[:300]
    if isinstance(body, dict):
        return body.get("errorCode"), str(body.get("message", body))[:300]
    return None, str(body)[:300]


class Sidecar:
    """The HTTP API of this app's own daprd."""

    def __init__(self, settings: SidecarSettings, timeout_s: float = 5.0) -> None:
        self.base_url = settings.http_url
        self.timeout_s = timeout_s
        self._headers = {"dapr-api-token": settings.api_token} if settings.api_token else {}
        # Two pools. Calls that wait on apps (service invocation, actor methods) may wait
        # on this very app, whose actor methods in turn call the sidecar (their state,
        # reminders, events): with one bounded pool, a burst of the first kind held every
        # connection while the methods it waited on queued for one, until all timed out.
        # So those calls get a pool of their own, unbounded (their callers bound their
        # fan-out); the sidecar's own answers (state, pub/sub, jobs...) a bounded one.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def _client(self, waits_on_apps: bool = False) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop.
        session = self._sessions.get(waits_on_apps)
        if session is None:
            session = self._sessions[waits_on_apps] = aiohttp.ClientSession(
                base_url=self.base_url,
                headers=self._headers,
                connector=aiohttp.TCPConnector(
                    limit=0 if waits_on_apps else 64, keepalive_timeout=30
                ),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=2.0),
                json_serialize=jsonlib.dumps,
            )
        return session

    async def aclose(self) -> None:
        """Close the pooled connections (at the app's shutdown); the next call reopens."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        span_name: str | None = None,
        waits_on_apps: bool = False,
    ) -> Reply:
        """One call to the sidecar, as a client span that the sidecar's spans continue
        (`waits_on_apps`: the call waits on an app's answer, not the sidecar's own)."""
        with _tracer.start_as_current_span(
            span_name or f"{method} {url.split('?')[0]}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.full": self.base_url + url},
        ) as span:
            sent = dict(headers or {})
            if span.get_span_context().is_valid:
                propagate.inject(sent)
            elif (traceparent := traceparent_var.get()) is not None:
                sent.setdefault("traceparent", traceparent)
            # Always bounded: a ClientTimeout of None would mean no limit at all. Only the
            # socket's connect has its own short limit: aiohttp's `connect` would also count
            # the wait for a free pooled connection, and under a burst (a batch fanned out
            # to many actors) calls queued for the pool timed out after 2 s while the sidecar
            # was answering; the wait counts towards the call's total instead.
            timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s, sock_connect=2.0)
            try:
                async with self._client(waits_on_apps).request(
                    method, url, json=json, data=data, headers=sent, timeout=timeout
                ) as response:
                    body = await response.read()
                    reply = Reply(
                        response.status,
                        body,
                        {k.lower(): v for k, v in response.headers.items()},
                    )
            except TimeoutError as exc:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise TargetUnavailable(f"sidecar call timed out: {method} {url}") from exc
            except aiohttp.ClientError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise TargetUnavailable(f"sidecar unreachable at {self.base_url}: {exc}") from exc
            span.set_attribute("http.response.status_code", reply.status)
            if reply.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return reply

    # -- health -------------------------------------------------------------------------
    async def is_healthy(self) -> bool:
        """True when the sidecar is up and its components are loaded."""
        try:
            async with self._client().get(
                "/v1.0/healthz/outbound", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as response:
                return response.status == 204
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def metadata(self) -> dict[str, Any]:
        """The sidecar's metadata: app id, components, subscriptions, actors."""
        reply = await self._request("GET", "/v1.0/metadata")
        if reply.status != 200:
            raise SidecarError(f"metadata answered {reply.status}", status=reply.status)
        result: dict[str, Any] = reply.json()
        return result

    # -- service invocation -------------------------------------------------------------
    async def invoke(
        self,
        app_id: str,
        method: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        http_method: str = "POST",
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Call `method` (a path) on `app_id` through Dapr service invocation.

        Args:
            app_id: the target app.
            method: the path on the target app.
            json: a JSON body; or `data`, raw bytes (say their type in `headers`).
            params: query parameters, passed on to the target app.

        Returns the target app's response as is (any status). Raises `TargetUnavailable`
        when the target cannot be reached: Dapr reports that as a 500 with an
        `ERR_DIRECT_INVOKE` code, or the call times out.

        The caller's own mistakes (a 4xx of the target) travel in band, as a 200 the
        sidecars count as a success (`consort.kit.caller_faults`): one client's bad input
        never opens the circuit breaker for the others. The reply has the real status.
        """
        query = f"?{urlencode(params)}" if params else ""
        response = await self._request(
            http_method,
            f"/v1.0/invoke/{app_id}/method/{method.lstrip('/')}{query}",
            json=json,
            data=data,
            headers={**(headers or {}), CALLER_FAULTS_HEADER: IN_BAND},
            timeout_s=timeout_s,
            span_name=f"invoke {app_id}/{method.lstrip('/')}",
            waits_on_apps=True,
        )
        status = restored_status(response.status, dict(response.headers))
        if status != response.status:
            response = Reply(status, response.body, response.headers)
        if response.status >= 500:
            # Dapr's own failures carry an ERR_ code; an app's own 5xx passes through as is.
            code, message = _error_of(response)
            if code and code.startswith("ERR_"):
                raise TargetUnavailable(
                    f"{app_id} unavailable: {message}", status=response.status, code=code
                )
        return response

    # -- actors ---------------------------------------------------------------------------
    async def invoke_actor(
        self,
        actor_type: str,
        actor_id: str,
        method: str,
        *,
        json: Any = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Call `method` of the actor `actor_type`/`actor_id`, wherever placement puts it,
        and return its JSON result (None when it returned nothing).

        Args:
            actor_type: the actor type, as registered by its host app.
            actor_id: the actor's id (any string; it is URL-quoted here).
            method: the actor method's name (`@actormethod(name=...)`).
            json: the method's argument, sent as JSON (None: no body).
            timeout_s: this call's deadline; the sidecar client's default when None.

        Raises:
            SidecarError: the method failed or no host of the actor type answered.
            TargetUnavailable: the call timed out.
        """
        body = await self.actor_api(
            "POST",
            actor_type,
            actor_id,
            f"method/{method}",
            None if json is None else jsonlib.dumps(json).encode(),
            timeout_s=timeout_s,
        )
        return jsonlib.loads(body) if body else None

    async def actor_api(
        self,
        http_method: str,
        actor_type: str,
        actor_id: str,
        path: str,
        data: bytes | None,
        *,
        timeout_s: float | None = None,
    ) -> bytes:
        """One call to the sidecar's actor API: `/v1.0/actors/<type>/<id>/<path>` (a
        method, or, for an actor this app hosts, its state, reminders and timers).
        Returns the body.

        Args:
            http_method: GET, POST, PUT or DELETE.
            actor_type: the actor type.
            actor_id: the actor's id (URL-quoted here).
            path: what follows the id: `method/<name>`, `state`, `reminders/<name>`...
            data: the request body (JSON bytes), or None.
            timeout_s: this call's deadline; the sidecar client's default when None.

        Raises:
            SidecarError: the sidecar answered an error.
        """
        response = await self._request(
            http_method,
            f"/v1.0/actors/{actor_type}/{quote(actor_id, safe='')}/{path}",
            data=data,
            headers={"content-type": "application/json"} if data is not None else None,
            timeout_s=timeout_s,
            span_name=f"actor {actor_type} {path}",
            waits_on_apps=path.startswith("method/"),
        )
        if response.status >= 400:
            code, message = _error_of(response)
            raise SidecarError(
                f"actor {actor_type}/{actor_id} {path}: {message}",
                status=response.status,
                code=code,
            )
        return response.body

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
        """Publish `data` as a CloudEvent and return its id (the consumers' idempotency key).

        Prefer `publish_event` for the project's own topics: it takes the payload model
        and the topic's CloudEvent type from the contract.

        Args:
            pubsub: the pub/sub component's name.
            topic: the topic.
            data: the event's data (JSON-able).
            event_id: the CloudEvent id; a fresh uuid when omitted.
            source: the CloudEvent source (the publishing app's id).
            event_type: the CloudEvent type; `consort.<topic>.v1` when omitted.

        Raises:
            SidecarError: the sidecar or the broker refused the event.
        """
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
            data=jsonlib.dumps(envelope).encode(),
            headers={"content-type": CLOUDEVENTS_JSON},
            span_name=f"publish {topic}",
        )
        if response.status != 204:
            code, message = _error_of(response)
            raise SidecarError(
                f"publish to {topic} failed: {message}", status=response.status, code=code
            )
        return event_id

    async def publish_event(
        self,
        pubsub: str,
        topic_name: str,
        payload: BaseModel | Mapping[str, Any],
        *,
        source: str,
        event_id: str | None = None,
    ) -> str:
        """Publish one event of a contract topic: the payload as JSON, the CloudEvent type
        of the topic's version (`consort.<topic>.v<N>`). Returns the event id.

        Args:
            pubsub: the pub/sub component's name.
            topic_name: a topic of `consort.contracts.events.TOPICS`.
            payload: the topic's payload model (or its JSON form).
            source: the CloudEvent source, the publishing app's id.
            event_id: the idempotency key consumers see; a fresh uuid when omitted. Give a
                deterministic one wherever the same event may be published again.
        """
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        return await self.publish(
            pubsub,
            topic_name,
            data,
            event_id=event_id,
            source=source,
            event_type=topic(topic_name).event_type,
        )

    async def publish_bulk(
        self,
        pubsub: str,
        topic: str,
        events: Mapping[str, Any],
        *,
        source: str = "consort",
        event_type: str | None = None,
        traceparents: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Publish many CloudEvents in one call; returns the ids of those not published
        (the broker took the others). Not transactional: resend the failed ones under the
        same ids.

        Args:
            pubsub: the pub/sub component's name.
            topic: the topic.
            events: each event's id -> its data (JSON-able).
            source: the CloudEvent source (the publishing app's id).
            event_type: the CloudEvent type; `consort.<topic>.v1` when omitted.
            traceparents: an event's id -> the W3C trace context it was caused in, so its
                delivery continues that trace rather than this call's.
        """
        if not events:
            return []
        entries = [
            {
                "entryId": event_id,
                "contentType": CLOUDEVENTS_JSON,
                "event": {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": source,
                    "type": event_type or f"consort.{topic}.v1",
                    "datacontenttype": "application/json",
                    "data": data,
                    # daprd keeps an envelope's own trace when it names one (`traceid`,
                    # the field it reads first, and `traceparent`).
                    **(
                        {"traceid": traceparents[event_id], "traceparent": traceparents[event_id]}
                        if traceparents and event_id in traceparents
                        else {}
                    ),
                },
            }
            for event_id, data in events.items()
        ]
        response = await self._request(
            "POST",
            f"/v1.0/publish/bulk/{pubsub}/{topic}",
            data=jsonlib.dumps(entries).encode(),
            headers={"content-type": "application/json"},
            span_name=f"publish bulk {topic}",
        )
        if response.status in (200, 204):
            return []
        try:
            failed = [str(e["entryId"]) for e in response.json().get("failedEntries") or []]
        except (ValueError, AttributeError, KeyError, TypeError):
            failed = []
        if not failed:
            code, message = _error_of(response)
            raise SidecarError(
                f"bulk publish to {topic} failed: {message}", status=response.status, code=code
            )
        return failed

    # -- state ----------------------------------------------------------------------------
    async def get_state(self, store: str, key: str) -> StateItem | None:
        """Read `key`, or None when it is absent."""
        response = await self._request(
            "GET", f"/v1.0/state/{store}/{quote(key, safe='')}", span_name=f"state get {store}"
        )
        if response.status == 204 or not response.body:
            return None
        if response.status != 200:
            code, message = _error_of(response)
            raise SidecarError(f"state get failed: {message}", status=response.status)
        return StateItem(key=key, value=response.json(), etag=response.headers.get("etag"))

    async def get_bulk_state(self, store: str, keys: list[str]) -> list[StateItem]:
        """Read several keys in one call; absent keys are left out."""
        if not keys:
            return []
        response = await self._request(
            "POST",
            f"/v1.0/state/{store}/bulk",
            json={"keys": keys, "parallelism": 8},
            span_name=f"state bulk-get {store}",
        )
        if response.status != 200:
            code, message = _error_of(response)
            raise SidecarError(f"bulk state get failed: {message}", status=response.status)
        return [
            StateItem(key=entry["key"], value=entry["data"], etag=entry.get("etag"))
            for entry in response.json()
            if "data" in entry and not entry.get("error")
        ]

    async def save_states(
        self, store: str, values: Mapping[str, Any], *, ttl_s: int | None = None
    ) -> None:
        """Write several keys in one call (last write wins).

        Args:
            store: the state store name.
            values: key -> value (JSON-able).
            ttl_s: each key's time to live in seconds; None keeps them until deleted.
        """
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

        Args:
            store: the state store name.
            key: the key.
            value: the value (JSON-able).
            etag: the etag read with the value: the write fails if it changed since.
            options: Dapr's state options, such as `{"concurrency": "first-write"}`.
            metadata: per-item metadata, such as `{"ttlInSeconds": "60"}`.

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

    async def save_over(
        self,
        store: str,
        key: str,
        current: StateItem | None,
        value: Any,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """Write `value` over what was read as `current` (compare-and-set); False when
        another writer was first. With `current` None only the first writer creates the key.

        Args:
            store: the state store name.
            key: the key.
            current: what `get_state` returned before the change (None: no value yet).
            value: the new value (JSON-able).
            metadata: per-item metadata, such as `ttlInSeconds`.
        """
        try:
            if current is not None and current.etag:
                await self.save_state(store, key, value, etag=current.etag, metadata=metadata)
            else:
                await self.save_state(
                    store, key, value, options={"concurrency": "first-write"}, metadata=metadata
                )
        except EtagMismatch:
            return False
        return True

    async def update_state(
        self,
        store: str,
        key: str,
        change: Callable[[Any | None], Any],
        *,
        attempts: int = 50,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[Any | None, bool]:
        """Change the value at `key` by compare-and-set, retrying lost races.

        Args:
            store: the state store name.
            key: the key.
            change: the new value from the current one (None when absent), or `UNCHANGED`
                when there is nothing to write. Pure: it runs again after a lost race.
            attempts: how many races to lose before giving up.
            metadata: per-item metadata of the write, such as `ttlInSeconds`.

        Returns:
            The value after (the current one when unchanged), and whether this call wrote it.

        Raises:
            EtagMismatch: every attempt lost its race (the caller should retry later).
        """
        for _ in range(attempts):
            current = await self.get_state(store, key)
            value = current.value if current else None
            new = change(value)
            if new is UNCHANGED:
                return value, False
            if await self.save_over(store, key, current, new, metadata=metadata):
                return new, True
        raise EtagMismatch(f"gave up on {key} after {attempts} concurrent updates")

    async def delete_states(self, store: str, keys: list[str]) -> None:
        """Delete several keys in one state transaction (absent keys are no error)."""
        if keys:
            await self._write(
                f"/v1.0/state/{store}/transaction",
                {"operations": [{"operation": "delete", "request": {"key": k}} for k in keys]},
            )

    async def _write(self, url: str, body: Any) -> None:
        response = await self._request("POST", url, json=body, span_name="state save")
        if response.status in (200, 201, 204):
            return
        code, message = _error_of(response)
        # A stale etag is a 409. A first-write on a key that exists fails with a plain 500
        # whose message says so, in each store's words (docs/profiles.md): the same lost race.
        if response.status == 409 or any(m in message for m in FIRST_WRITE_TAKEN):
            raise EtagMismatch(message, status=response.status, code=code)
        raise SidecarError(f"state write failed: {message}", status=response.status, code=code)

    async def delete_state(self, store: str, key: str) -> None:
        """Delete `key` (deleting an absent key is not an error)."""
        response = await self._request(
            "DELETE",
            f"/v1.0/state/{store}/{quote(key, safe='')}",
            span_name=f"state delete {store}",
        )
        if response.status not in (200, 204):
            code, message = _error_of(response)
            raise SidecarError(f"state delete failed: {message}", status=response.status, code=code)

    # -- jobs (the scheduler) -----------------------------------------------------------
    async def schedule_job(
        self,
        name: str,
        *,
        data: Any,
        schedule: str | None = None,
        due_time: str | None = None,
        overwrite: bool = True,
    ) -> None:
        """Schedule the job `name` on the scheduler; daprd calls the app's `/job/<name>`
        with `data` as the body each time it is due.

        Args:
            name: the job's name, unique per app.
            data: a JSON value handed back on every trigger.
            schedule: `@every 30s`, a cron expression (with seconds), `@hourly`, ...
            due_time: when it is first due (RFC 3339 or a Go duration).
            overwrite: replace a job of the same name (else that is an error).
        """
        body: dict[str, Any] = {"data": data, "overwrite": overwrite}
        if schedule:
            body["schedule"] = schedule
        if due_time:
            body["dueTime"] = due_time
        response = await self._request(
            "POST", f"{JOBS_API}/{quote(name, safe='')}", json=body, span_name=f"job {name}"
        )
        if response.status not in (200, 204):
            code, message = _error_of(response)
            raise SidecarError(
                f"scheduling job {name} failed: {message}", status=response.status, code=code
            )

    async def get_job(self, name: str) -> dict[str, Any] | None:
        """The job `name` (`schedule`, `data`, ...), or None when there is none."""
        response = await self._request(
            "GET", f"{JOBS_API}/{quote(name, safe='')}", span_name=f"job get {name}"
        )
        if response.status == 200:
            job: dict[str, Any] = response.json()
            return job
        code, message = _error_of(response)
        if response.status in (404, 500) and "not found" in message.lower():
            return None
        raise SidecarError(f"reading job {name} failed: {message}", status=response.status)

    async def delete_job(self, name: str) -> None:
        """Delete the job `name` (an absent job is not an error)."""
        response = await self._request(
            "DELETE", f"{JOBS_API}/{quote(name, safe='')}", span_name=f"job delete {name}"
        )
        if response.status not in (200, 204):
            code, message = _error_of(response)
            if "not found" in message.lower():
                return
            raise SidecarError(f"deleting job {name} failed: {message}", status=response.status)
