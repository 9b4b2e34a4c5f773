"""Publishing many small events of one topic in bulk, off the request path.

A request that announces what it did (`texts.analyzed`: one text was scored) should not pay
a sidecar round trip, a broker write and its share of a consumer's read-model update each
time. `EventBatcher.add` queues the event in memory and returns at once; a background task
publishes what has queued every `max_delay_s` (or as soon as `max_events` are waiting) in
one bulk-publish call, and consumers that subscribe in bulk then fold a batch with one
state write. Each event keeps its own CloudEvent id and the trace it was caused in.

What this trades (documented in docs/events.md): an event leaves up to `max_delay_s` later,
and the events still queued when the process is killed (not stopped: a stop flushes them)
are lost. Use it for announcements whose loss costs a count, never for an event a client
was told is accepted (those are published before the answer, with `Sidecar.publish_event`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from consort.contracts.events import topic
from consort.kit.dapr import Sidecar, SidecarError

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

#: Seconds between tries while the broker or store refuses a batch (default).
RETRY_S = 1.0


class _BackgroundBatches:
    """What `EventBatcher` and `StateWriteBehind` share: a queue that a background task
    empties in batches, at most `max_delay_s` after something joins it (at once when a full
    batch of `batch_size` is waiting), trying again `retry_s` after a refusal. Subclasses
    say how many are `pending` and how to `flush` them."""

    #: What a batch is of, for the task's name and the shutdown warning.
    kind = "items"

    def __init__(self, *, max_delay_s: float, batch_size: int, retry_s: float) -> None:
        self.max_delay_s = max_delay_s
        self.batch_size = batch_size
        self.retry_s = retry_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        raise NotImplementedError

    async def flush(self) -> bool:
        """Send everything queued now; what is refused stays queued (then False)."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
            # Let more join the batch, unless a full batch is already waiting.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full(), self.max_delay_s)
            if not await self.flush():
                # Refused: wait before the next try. With a full batch waiting, the loop
                # would otherwise retry at once, spinning this app's CPU for as long as the
                # broker or store is away.
                await asyncio.sleep(self.retry_s)

    async def _full(self) -> None:
        while self.pending < self.batch_size:
            self._wake.clear()
            await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.kind)

    async def stop(self) -> None:
        """Stop the background task and send what is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self.pending:
            log.warning("%d %s not sent at shutdown", self.pending, self.kind)


class EventBatcher(_BackgroundBatches):
    """Queues events of one topic and publishes them in bulk from a background task."""

    def __init__(
        self,
        sidecar: Callable[[], Sidecar],
        pubsub: str,
        topic_name: str,
        *,
        source: str,
        max_delay_s: float = 0.1,
        max_events: int = 100,
        max_pending: int = 10_000,
        retry_s: float = RETRY_S,
    ) -> None:
        """Args:
        sidecar: returns the app's sidecar client (it exists only while the app runs).
        pubsub: the pub/sub component's name.
        topic_name: a topic of `consort.contracts.events.TOPICS`.
        source: the CloudEvent source, the publishing app's id.
        max_delay_s: the longest an event waits before it is published.
        max_events: at most this many events in one bulk call.
        max_pending: at most this many events held while the broker is unreachable; the
            oldest are dropped (and counted in `dropped`) beyond it.
        retry_s: the wait before trying again after the broker refused a batch.
        """
        super().__init__(max_delay_s=max_delay_s, batch_size=max_events, retry_s=retry_s)
        self._sidecar = sidecar
        self.pubsub = pubsub
        self.topic = topic(topic_name)
        self.kind = f"{self.topic.name} events"
        self.source = source
        self.max_pending = max_pending
        self._pending: deque[tuple[str, Any, str | None]] = deque()
        #: Events published, and dropped for want of room while the broker was away.
        self.published = 0
        self.dropped = 0

    def add(self, payload: BaseModel | Mapping[str, Any], event_id: str | None = None) -> str:
        """Queue one event (published within `max_delay_s`); returns its id."""
        event_id = event_id or str(uuid.uuid4())
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        carrier: dict[str, str] = {}
        # A producer span in the request's trace: the delivery continues it.
        with _tracer.start_as_current_span(
            f"publish {self.topic.name} (queued)",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.message.id": event_id},
        ):
            propagate.inject(carrier)
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%d %s events dropped: none published", self.dropped, self.topic.name)
        self._pending.append((event_id, data, carrier.get("traceparent")))
        self._wake.set()
        return event_id

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> bool:
        """Publish everything queued now; what the broker refuses stays queued (then
        False)."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self.batch_size, self.pending))]
            try:
                failed = set(
                    await self._sidecar().publish_bulk(
                        self.pubsub,
                        self.topic.name,
                        {event_id: data for event_id, data, _ in batch},
                        source=self.source,
                        event_type=self.topic.event_type,
                        traceparents={i: t for i, _, t in batch if t},
                    )
                )
            except (SidecarError, RuntimeError) as exc:
                failed = {event_id for event_id, _, _ in batch}
                log.warning("%d %s events not published yet: %s", len(batch), self.topic.name, exc)
            self.published += len(batch) - len(failed)
            if failed:
                # Back at the front, in order, for the next round.
                self._pending.extendleft(reversed([e for e in batch if e[0] in failed]))
                return False
        return True


class StateWriteBehind(_BackgroundBatches):
    """Writes of one state store's keys, queued and saved in one call from a background
    task every `max_delay_s` (or as soon as `max_items` are waiting). For a cache in the
    store: a request that computed a result for 0.2 ms of CPU should not pay a sidecar
    round trip and a store write of its own to keep it for others.

    The same trade as `EventBatcher`: a value reaches the store up to `max_delay_s` later
    (the writer keeps its own copy meanwhile), a later write of a key replaces an earlier
    one still queued, and what is queued when the process is killed (not stopped) is not
    written. Use it only for values whose loss costs a recomputation.
    """

    def __init__(
        self,
        sidecar: Callable[[], Sidecar],
        store: str,
        *,
        ttl_s: int | None = None,
        max_delay_s: float = 0.1,
        max_items: int = 100,
        max_pending: int = 10_000,
        retry_s: float = RETRY_S,
    ) -> None:
        super().__init__(max_delay_s=max_delay_s, batch_size=max_items, retry_s=retry_s)
        self._sidecar = sidecar
        self.store = store
        self.kind = f"values for {store}"
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: dict[str, Any] = {}
        #: Values written, and dropped for want of room while the store was away.
        self.written = 0
        self.dropped = 0

    def put(self, key: str, value: Any) -> None:
        """Queue `value` (JSON-able) for `key`; written within `max_delay_s`."""
        if key not in self._pending and len(self._pending) >= self.max_pending:
            del self._pending[next(iter(self._pending))]
            self.dropped += 1
        self._pending[key] = value
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> bool:
        """Write everything queued now; what the store refuses stays queued (then False)."""
        while self._pending:
            keys = list(itertools.islice(self._pending, self.batch_size))
            batch = {k: self._pending.pop(k) for k in keys}
            try:
                await self._sidecar().save_states(self.store, batch, ttl_s=self.ttl_s)
            except (SidecarError, RuntimeError) as exc:
                log.warning("%d values not written to %s yet: %s", len(batch), self.store, exc)
                # Back at the front, in order; a newer value of a key queued meanwhile wins.
                self._pending = {**batch, **self._pending}
                return False
            self.written += len(batch)
        return True
