"""Consuming events from the sidecar: subscriptions, CloudEvent envelopes, idempotency.

Delivery is at-least-once, so every consumer must expect the same event again.
`apply_once` makes a read-modify-write of one state key idempotent per event id, so a
redelivery (even one racing the first delivery) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from consort.contracts.events import dead_letter
from consort.dapr import EtagMismatch, Sidecar

M = TypeVar("M", bound=BaseModel)


class Delivery(StrEnum):
    """What the app tells daprd about one delivered event."""

    SUCCESS = "SUCCESS"  # handled (or already handled): acknowledge it
    RETRY = "RETRY"  # a passing failure: deliver again under the resiliency policy
    DROP = "DROP"  # poison: never handle it; daprd moves it to the dead-letter topic


def delivery(status: Delivery) -> JSONResponse:
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
class Subscription:
    """A topic this app consumes, the route daprd delivers it to, and its dead-letter topic."""

    pubsub: str
    topic: str
    route: str
    with_dead_letter: bool = True

    def as_dapr(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "pubsubname": self.pubsub,
            "topic": self.topic,
            "routes": {"default": self.route},
        }
        if self.with_dead_letter:
            spec["deadLetterTopic"] = dead_letter(self.topic)
        return spec


def declare_subscriptions(app: FastAPI, subscriptions: list[Subscription]) -> None:
    """Serve `GET /dapr/subscribe`, which daprd reads at start-up."""

    @app.get("/dapr/subscribe", include_in_schema=False)
    async def dapr_subscribe() -> list[dict[str, Any]]:
        return [s.as_dapr() for s in subscriptions]


class AlreadyApplied(Exception):
    """The event was applied before: nothing was written."""


class Tracked(BaseModel):
    """How a value changed by events is stored: the value, and the ids of events already
    applied to it whose applied-markers are not written yet (normally none)."""

    value: dict[str, Any]
    in_flight: list[str] = []


async def apply_once(
    sidecar: Sidecar,
    store: str,
    *,
    event_id: str,
    key: str,
    model: type[M],
    update: Callable[[M | None], M],
    marker_ttl_s: int = 7 * 24 * 3600,
    attempts: int = 50,
) -> M:
    """Apply one event's `update` to the value at `key`, exactly once per `event_id`.

    Dapr's Redis store does not roll back a failed transaction, so the value and the
    event's marker cannot be written atomically together. Instead the event id is recorded
    inside the value in the same compare-and-set that applies it (`Tracked.in_flight`),
    then the marker `applied:<event id>` is written, then the id leaves `in_flight`.
    A redelivery finds the marker, or the id in `in_flight`, and changes nothing; a crash
    at any step is finished by the next delivery.

    Args:
        sidecar: the app's sidecar.
        store: the state store name.
        event_id: the event's CloudEvent id (unique per topic).
        key: the key of the value the event changes; read it with `read_tracked`.
        model: the value's model.
        update: the new value from the current one (None when absent). Pure.
        marker_ttl_s: how long a marker is kept; redeliveries come within minutes.
        attempts: how many compare-and-set races to lose before giving up.

    Returns:
        The value after the update.

    Raises:
        AlreadyApplied: the event was applied before; nothing was written.
        EtagMismatch: every attempt lost its race (the caller should ask for a retry).
    """
    marker_key = f"applied:{event_id}"
    if await sidecar.get_state(store, marker_key) is not None:
        raise AlreadyApplied(event_id)
    found_in_flight = False

    def apply(tracked: Tracked | None) -> Tracked | None:
        nonlocal found_in_flight
        found_in_flight = tracked is not None and event_id in tracked.in_flight
        return None if found_in_flight else _apply(tracked, event_id, model, update)

    value = await _compare_and_set(sidecar, store, key, model, attempts, apply)
    await sidecar.save_state(
        store, marker_key, {"applied": True}, metadata={"ttlInSeconds": str(marker_ttl_s)}
    )
    await _compare_and_set(sidecar, store, key, model, attempts, lambda t: _settle(t, event_id))
    if found_in_flight:
        # Another delivery applied it (and may have crashed before marking it): now marked.
        raise AlreadyApplied(event_id)
    return value


def _apply(
    tracked: Tracked | None, event_id: str, model: type[M], update: Callable[[M | None], M]
) -> Tracked:
    current = model.model_validate(tracked.value) if tracked else None
    in_flight = tracked.in_flight if tracked else []
    return Tracked(value=update(current).model_dump(mode="json"), in_flight=[*in_flight, event_id])


def _settle(tracked: Tracked | None, event_id: str) -> Tracked | None:
    if tracked is None or event_id not in tracked.in_flight:
        return None
    return Tracked(value=tracked.value, in_flight=[i for i in tracked.in_flight if i != event_id])


async def _compare_and_set(
    sidecar: Sidecar,
    store: str,
    key: str,
    model: type[M],
    attempts: int,
    change: Callable[[Tracked | None], Tracked | None],
) -> M:
    for _ in range(attempts):
        current = await sidecar.get_state(store, key)
        tracked = Tracked.model_validate(current.value) if current else None
        new = change(tracked)
        if new is None:  # nothing to write
            assert tracked is not None
            return model.model_validate(tracked.value)
        try:
            if current is not None and current.etag:
                await sidecar.save_state(store, key, new.model_dump(), etag=current.etag)
            else:
                # No value yet: only the first writer may create it.
                await sidecar.save_state(
                    store, key, new.model_dump(), options={"concurrency": "first-write"}
                )
        except EtagMismatch:
            continue
        return model.model_validate(new.value)
    raise EtagMismatch(f"gave up on {key} after {attempts} concurrent updates")


async def read_tracked(sidecar: Sidecar, store: str, key: str, model: type[M]) -> M | None:
    """The value at a key written by `apply_once`, or None."""
    current = await sidecar.get_state(store, key)
    return model.model_validate(Tracked.model_validate(current.value).value) if current else None
