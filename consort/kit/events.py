"""Consuming events from the sidecar: subscriptions, CloudEvent envelopes, idempotency.

Delivery is at-least-once, so every consumer must expect the same event again.
`apply_once` makes a read-modify-write of one state key idempotent per event id, so a
redelivery (even one racing the first delivery) changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer, field_validator

from consort.contracts.events import dead_letter
from consort.kit.dapr import UNCHANGED, EtagMismatch, Sidecar, SidecarError

M = TypeVar("M", bound=BaseModel)


class Delivery(StrEnum):
    """What the app tells daprd about one delivered event."""

    SUCCESS = "SUCCESS"  # handled (or already handled): acknowledge it
    RETRY = "RETRY"  # a passing failure: deliver again under the resiliency policy
    DROP = "DROP"  # poison: never handle it; daprd moves it to the dead-letter topic


#: The topic of the delivery being answered (set by `deliveries`), and where the answers
#: are counted per topic and outcome (`consort_events_total`, the console's topic lag:
#: daprd counts a bulk delivery's events per call, not per event).
_DELIVERED_TOPIC: ContextVar[str | None] = ContextVar("delivered_topic", default=None)
_counter: list[Counter] = []


def count_deliveries(counter: Counter) -> None:
    """Count every answered delivery's events in `counter` (labels: topic, status)."""
    _counter[:] = [counter]


def _count(statuses: Iterable[Delivery]) -> None:
    topic = _DELIVERED_TOPIC.get()
    if topic and _counter:
        for status in statuses:
            _counter[0].labels(topic, status.value).inc()


def delivery(status: Delivery) -> JSONResponse:
    """The answer to one (non-bulk) delivery that tells daprd what to do with the event."""
    _count([status])
    return JSONResponse({"status": status.value})


class CloudEvent(BaseModel):
    """The CloudEvents 1.0 envelope daprd delivers (the fields consumers use)."""

    model_config = ConfigDict(extra="allow")

    id: str
    source: str = ""
    type: str = ""
    topic: str | None = None
    pubsubname: str | None = None
    traceparent: str | None = None
    data: Any = None


@dataclass(frozen=True)
class Bulk:
    """Bulk delivery: daprd hands over up to `max_messages` events in one request, waiting
    at most `max_await_ms` to fill it. Consumers then pay one state round trip per batch."""

    max_messages: int = 100
    max_await_ms: int = 20


@dataclass(frozen=True)
class Subscription:
    """A topic this app consumes, the route daprd delivers it to, and its dead-letter topic."""

    pubsub: str
    topic: str
    route: str
    with_dead_letter: bool = True
    bulk: Bulk | None = None

    def as_dapr(self) -> dict[str, Any]:
        """The subscription as daprd reads it from `GET /dapr/subscribe`."""
        spec: dict[str, Any] = {
            "pubsubname": self.pubsub,
            "topic": self.topic,
            "routes": {"default": self.route},
        }
        if self.with_dead_letter:
            spec["deadLetterTopic"] = dead_letter(self.topic)
        if self.bulk:
            spec["bulkSubscribe"] = {
                "enabled": True,
                "maxMessagesCount": self.bulk.max_messages,
                "maxAwaitDurationMs": self.bulk.max_await_ms,
            }
        return spec


def deliveries(body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """The events of one delivery: `(entry id, CloudEvent)` pairs of a bulk delivery, or
    one `(None, CloudEvent)` of a single one."""
    topic = body.get("topic")
    _DELIVERED_TOPIC.set(topic if isinstance(topic, str) else None)
    if isinstance(body.get("entries"), list):
        return [(str(e.get("entryId")), e.get("event")) for e in body["entries"]]
    return [(None, body)]


def delivery_response(statuses: dict[str | None, Delivery]) -> JSONResponse:
    """The answer to a delivery: one status, or one per entry of a bulk delivery."""
    if list(statuses) == [None]:
        return delivery(statuses[None])
    _count(statuses.values())
    return JSONResponse(
        {"statuses": [{"entryId": e, "status": s.value} for e, s in statuses.items()]}
    )


def declare_subscriptions(app: FastAPI, subscriptions: list[Subscription]) -> None:
    """Serve `GET /dapr/subscribe`, which daprd reads at start-up."""

    @app.get("/dapr/subscribe", include_in_schema=False)
    async def dapr_subscribe() -> list[dict[str, Any]]:
        return [s.as_dapr() for s in subscriptions]


P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")


async def relay(
    body: dict[str, Any],
    *,
    payload: type[P],
    work: Callable[[list[P]], Awaitable[list[R]]],
    publish: Callable[[P, R], Awaitable[object]],
    log: logging.Logger,
) -> JSONResponse:
    """Answer a (bulk) delivery by turning each event into a result event.

    Every event's data is validated as `payload` (poison: DROP, so daprd moves it to the
    dead-letter topic); `work` processes the valid ones together, in order; `publish`
    sends each one's result. An event whose result could not be published is asked for
    again (RETRY). Redelivered events are processed again: `publish` should give a result
    the same event id each time, so its consumers see one event.

    Args:
        body: the delivery as daprd posted it (one CloudEvent, or a bulk of entries).
        payload: the events' data model.
        work: the results of the valid payloads, in order.
        publish: sends one payload's result event.
        log: where poison events and failed publishes are logged.
    """
    statuses: dict[str | None, Delivery] = {}
    valid: dict[str | None, P] = {}
    for entry_id, raw in deliveries(body):
        try:
            valid[entry_id] = payload.model_validate(CloudEvent.model_validate(raw).data)
        except ValidationError as exc:
            log.error("poison %s event, dropped to dead letter: %s", payload.__name__, exc)
            statuses[entry_id] = Delivery.DROP
    if valid:
        results = await work(list(valid.values()))
        outcomes = await asyncio.gather(
            *(
                publish(event, result)
                for event, result in zip(valid.values(), results, strict=True)
            ),
            return_exceptions=True,
        )
        for entry_id, outcome in zip(valid, outcomes, strict=True):
            failed = isinstance(outcome, BaseException)
            if failed:
                log.warning("result not published, the event will be redelivered: %s", outcome)
            statuses[entry_id] = Delivery.RETRY if failed else Delivery.SUCCESS
    return delivery_response(statuses)


class AlreadyApplied(Exception):
    """The event was applied before: nothing was written."""


class Tracked(BaseModel):
    """How a value changed by events is stored: the value, and the ids of events already
    applied to it whose applied-markers are not written yet (normally none).

    The value is stored as a JSON *string*: Dapr's Redis state store re-encodes JSON
    values with jsoniter's ConfigFastest, which keeps 6 digits after the point (a value
    of 1.2e-9 would come back 0).
    """

    value: dict[str, Any]
    in_flight: list[str] = []

    @field_validator("value", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    @field_serializer("value")
    def _to_json(self, value: dict[str, Any]) -> str:
        return json.dumps(value, separators=(",", ":"))


async def apply_once(
    sidecar: Sidecar,
    store: str,
    *,
    event_id: str,
    key: str,
    model: type[M],
    update: Callable[[M | None], M],
    marker_ttl_s: int = 7 * 24 * 3600,
) -> M:
    """Apply one event's `update` to the value at `key`, exactly once per `event_id`.

    Args:
        sidecar: the app's sidecar.
        store: the state store name.
        event_id: the event's CloudEvent id.
        key: the key of the value the event changes; read it with `read_tracked`.
        model: the value's model.
        update: the new value from the current one (None when absent). Pure.
        marker_ttl_s: how long the event's marker is kept; redeliveries come within minutes.

    Raises:
        AlreadyApplied: the event was applied before; nothing was written.
        EtagMismatch: every attempt lost its race (the caller should ask for a retry).
    """
    value, applied = await apply_many(
        sidecar,
        store,
        event_ids=[event_id],
        key=key,
        model=model,
        update=lambda current, _: update(current),
        marker_ttl_s=marker_ttl_s,
    )
    if not applied or value is None:
        raise AlreadyApplied(event_id)
    return value


async def apply_many(
    sidecar: Sidecar,
    store: str,
    *,
    event_ids: list[str],
    key: str,
    model: type[M],
    update: Callable[[M | None, list[str]], M],
    marker_ttl_s: int = 7 * 24 * 3600,
    attempts: int = 50,
) -> tuple[M | None, set[str]]:
    """Apply events to the value at `key`, each exactly once per id, in one update.

    Dapr's Redis store does not roll back a failed transaction, so a value and the markers
    of the events applied to it cannot be written atomically together. Instead the event
    ids are recorded inside the value by the same compare-and-set that applies them
    (`Tracked.in_flight`); then markers `applied:<event id>` are written; then the ids
    leave `in_flight`. A redelivery finds the marker, or the id in `in_flight`, and
    changes nothing; a crash at any step is finished by the next delivery.

    Args:
        sidecar: the app's sidecar.
        store: the state store name.
        event_ids: the events' ids (unique per topic); duplicates are applied once.
        key: the key of the value the events change; read it with `read_tracked`.
        model: the value's model.
        update: the new value from the current one (None when absent) and the ids to
            apply now (those not applied before). Pure.
        marker_ttl_s: how long a marker is kept; redeliveries come within minutes.
        attempts: how many compare-and-set races to lose before giving up.

    Returns:
        The value after the update (None if there is none), and the ids applied by this
        call (the others had been applied before).

    Raises:
        EtagMismatch: every attempt lost its race (the caller should ask for a retry).
    """
    ids = list(dict.fromkeys(event_ids))
    applied: list[str] = []
    value: M | None = None
    for _ in range(attempts):
        current = await sidecar.get_state(store, key)
        tracked = Tracked.model_validate(current.value) if current else None
        in_flight = set(tracked.in_flight) if tracked else set()
        # Markers are read after the value: a delivery that finished before this read
        # shows here (marked), one still under way shows in `in_flight`.
        candidates = [i for i in ids if i not in in_flight]
        markers = {f"applied:{i}": i for i in candidates}
        marked = {markers[m.key] for m in await sidecar.get_bulk_state(store, list(markers))}
        applied = [i for i in candidates if i not in marked]
        if not applied:
            value = model.model_validate(tracked.value) if tracked else None
            break
        new = Tracked(
            value=update(
                model.model_validate(tracked.value) if tracked else None, list(applied)
            ).model_dump(mode="json"),
            in_flight=[*(tracked.in_flight if tracked else []), *applied],
        )
        if not await sidecar.save_over(store, key, current, new.model_dump()):
            continue
        value = model.model_validate(new.value)
        break
    else:
        raise EtagMismatch(f"gave up on {key} after {attempts} concurrent updates")
    # Mark every id not yet marked (also those found in flight: another delivery applied
    # them and may have crashed before marking them), then let them leave `in_flight`.
    unmarked = [i for i in ids if i in applied or i in (in_flight if tracked else set())]
    if unmarked:
        await sidecar.save_states(
            store, {f"applied:{i}": {"applied": True} for i in unmarked}, ttl_s=marker_ttl_s
        )
        await _compare_and_set(
            sidecar, store, key, model, attempts, lambda t: _settle(t, set(unmarked))
        )
    return value, set(applied)


async def fold_delivery(
    body: dict[str, Any],
    *,
    sidecar: Sidecar,
    store: str,
    topic: str,
    payload: type[P],
    key: str,
    model: type[M],
    update: Callable[[M | None, list[P]], M],
    log: logging.Logger,
) -> JSONResponse:
    """Fold a (bulk) delivery of `topic` into the read model at `key` with `apply_many`:
    one compare-and-set per delivery, each event once per CloudEvent id.

    `update` gets the current value and the payloads not applied before, in delivery
    order. Poison events are dropped to the dead-letter topic; when the state store does
    not answer, the whole delivery is asked for again.

    Args:
        body: the delivery as daprd posted it (one CloudEvent, or a bulk of entries).
        sidecar: the app's sidecar.
        store: the state store name.
        topic: the topic, for the log.
        payload: the events' data model.
        key: the read model's key.
        model: the read model.
        update: the new read model from the current one and the new payloads. Pure.
        log: where poison events and store failures are logged.
    """
    statuses: dict[str | None, Delivery] = {}
    events: dict[str, P] = {}
    entries_of: dict[str, list[str | None]] = {}
    for entry_id, raw in deliveries(body):
        try:
            event = CloudEvent.model_validate(raw)
            data = payload.model_validate(event.data)
        except ValidationError as exc:
            log.error("poison %s event, dropped to dead letter: %s", topic, exc)
            statuses[entry_id] = Delivery.DROP
            continue
        event_id = f"{topic}:{event.id}"
        events[event_id] = data
        entries_of.setdefault(event_id, []).append(entry_id)
    if not events:
        return delivery_response(statuses)
    try:
        _, applied = await apply_many(
            sidecar,
            store,
            event_ids=list(events),
            key=key,
            model=model,
            update=lambda current, ids: update(current, [events[i] for i in ids]),
        )
        outcome = Delivery.SUCCESS
    except (EtagMismatch, SidecarError) as exc:
        log.warning(
            "%d %s events not applied yet, will be redelivered: %s", len(events), topic, exc
        )
        applied, outcome = set(), Delivery.RETRY
    for event_id, entries in entries_of.items():
        if outcome is Delivery.SUCCESS:
            for _ in entries[1:] if event_id in applied else entries:
                log.info("%s already applied", event_id.removeprefix(f"{topic}:"))
        statuses.update(dict.fromkeys(entries, outcome))
    return delivery_response(statuses)


def _settle(tracked: Tracked | None, event_ids: set[str]) -> Tracked | None:
    if tracked is None or not event_ids & set(tracked.in_flight):
        return None
    return Tracked(
        value=tracked.value, in_flight=[i for i in tracked.in_flight if i not in event_ids]
    )


async def _compare_and_set(
    sidecar: Sidecar,
    store: str,
    key: str,
    model: type[M],
    attempts: int,
    change: Callable[[Tracked | None], Tracked | None],
) -> M | None:
    def step(value: Any | None) -> Any:
        tracked = Tracked.model_validate(value) if value is not None else None
        new = change(tracked)
        return UNCHANGED if new is None else new.model_dump()

    value, _ = await sidecar.update_state(store, key, step, attempts=attempts)
    return model.model_validate(Tracked.model_validate(value).value) if value is not None else None


async def read_tracked(sidecar: Sidecar, store: str, key: str, model: type[M]) -> M | None:
    """The value at a key written by `apply_once`/`apply_many`/`fold_delivery`, or None.

    Args:
        sidecar: the app's sidecar.
        store: the state store name.
        key: the read model's key.
        model: the read model.
    """
    current = await sidecar.get_state(store, key)
    return model.model_validate(Tracked.model_validate(current.value).value) if current else None
