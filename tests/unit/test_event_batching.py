"""Announcements published in bulk off the request path (`consort.kit.batching`), and the
sentiment service's in-process result cache. The bulk call itself is exercised through a
real sidecar by tests/integration (the text stats and the trace of a request)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from apps.sentiment.cache import ResultCache
from consort.contracts.events import TEXTS_ANALYZED
from consort.kit.batching import EventBatcher, StateWriteBehind
from consort.kit.dapr import SidecarError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Broker:
    """Stands in for `Sidecar.publish_bulk`: records each call, refuses while `down`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.types: set[str | None] = set()
        self.down = False

    async def publish_bulk(
        self, pubsub: str, topic: str, events: Mapping[str, Any], **kw: Any
    ) -> list[str]:
        if self.down:
            raise SidecarError("broker unreachable")
        self.calls.append(list(events))
        self.types.add(kw.get("event_type"))
        return []


def batcher(broker: Broker, **options: Any) -> EventBatcher:
    return EventBatcher(lambda: broker, "pubsub", TEXTS_ANALYZED, source="t", **options)  # type: ignore[arg-type, return-value]


async def test_events_added_together_leave_in_one_bulk_call_within_the_delay() -> None:
    broker = Broker()
    b = batcher(broker, max_delay_s=0.05)
    b.start()
    ids = [b.add({"n": i}) for i in range(5)]
    await asyncio.sleep(0.2)
    assert broker.calls == [ids]
    assert broker.types == {"consort.texts.analyzed.v1"}
    assert b.published == 5 and b.pending == 0
    await b.stop()


async def test_a_full_batch_leaves_without_waiting_and_batches_are_capped() -> None:
    broker = Broker()
    b = batcher(broker, max_delay_s=10, max_events=3)
    b.start()
    for i in range(7):
        b.add({"n": i}, event_id=f"e{i}")
    await asyncio.sleep(0.1)
    assert broker.calls[:2] == [["e0", "e1", "e2"], ["e3", "e4", "e5"]]
    await b.stop()  # the seventh leaves at shutdown
    assert broker.calls[-1] == ["e6"]


async def test_refused_events_stay_queued_in_order_and_leave_when_the_broker_is_back() -> None:
    broker = Broker()
    broker.down = True
    b = batcher(broker, max_delay_s=0.02, retry_s=0.02)
    b.start()
    for i in range(3):
        b.add({"n": i}, event_id=f"e{i}")
    await asyncio.sleep(0.1)
    assert b.pending == 3 and broker.calls == []
    broker.down = False
    b.add({"n": 3}, event_id="e3")
    await asyncio.sleep(0.1)
    assert [i for call in broker.calls for i in call] == ["e0", "e1", "e2", "e3"]
    await b.stop()


async def test_while_the_broker_is_away_the_queue_is_bounded_and_drops_the_oldest() -> None:
    broker = Broker()
    broker.down = True
    b = batcher(broker, max_pending=4)
    for i in range(6):
        b.add({"n": i}, event_id=f"e{i}")
    assert b.pending == 4 and b.dropped == 2
    broker.down = False
    await b.flush()
    assert broker.calls == [["e2", "e3", "e4", "e5"]]


def test_the_result_cache_keeps_the_most_recently_used() -> None:
    cache: ResultCache[int] = ResultCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get_many(["a"]) == {"a": 1}  # a is now the most recent
    cache.put("c", 3)
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "c": 3}
    assert len(ResultCache[int](0)) == 0


class Store:
    """Stands in for `Sidecar.save_states`: records each call, refuses while `down`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.ttls: set[int | None] = set()
        self.down = False

    async def save_states(
        self, store: str, values: Mapping[str, Any], *, ttl_s: int | None = None
    ) -> None:
        if self.down:
            raise SidecarError("store unreachable")
        self.calls.append(dict(values))
        self.ttls.add(ttl_s)


def writer(store: Store, **options: Any) -> StateWriteBehind:
    return StateWriteBehind(lambda: store, "statestore", **options)  # type: ignore[arg-type, return-value]


async def test_values_put_together_are_written_in_one_call_with_their_ttl() -> None:
    store = Store()
    w = writer(store, ttl_s=60, max_delay_s=0.05)
    w.start()
    for i in range(5):
        w.put(f"k{i}", {"n": i})
    w.put("k0", {"n": 10})  # a newer value of a queued key replaces it
    await asyncio.sleep(0.2)
    assert store.calls == [
        {"k0": {"n": 10}, "k1": {"n": 1}, "k2": {"n": 2}, "k3": {"n": 3}, "k4": {"n": 4}}
    ]
    assert store.ttls == {60}
    assert w.written == 5 and w.pending == 0
    await w.stop()


async def test_writes_the_store_refuses_wait_for_it_and_stop_writes_the_rest() -> None:
    store = Store()
    store.down = True
    w = writer(store, max_delay_s=0.02, max_items=2)
    w.start()
    w.put("a", 1)
    w.put("b", 2)
    w.put("c", 3)
    await asyncio.sleep(0.1)
    assert store.calls == [] and w.pending == 3  # none lost while the store is away
    w.put("a", 4)  # a newer value than the one being retried wins
    store.down = False
    await w.stop()  # flushes what is left, in batches of two
    assert store.calls == [{"a": 4, "b": 2}, {"c": 3}]
    assert w.pending == 0


async def test_the_queue_is_bounded_while_the_store_is_away() -> None:
    store = Store()
    store.down = True
    w = writer(store, max_pending=3)
    for i in range(5):
        w.put(f"k{i}", i)
    assert w.pending == 3 and w.dropped == 2
    store.down = False
    await w.flush()
    assert store.calls == [{"k2": 2, "k3": 3, "k4": 4}]


async def test_a_full_batch_the_broker_refuses_is_retried_after_a_pause_not_at_once() -> None:
    broker = Broker()
    broker.down = True
    attempts = 0
    refuse = broker.publish_bulk

    async def counted(*args: Any, **kw: Any) -> list[str]:
        nonlocal attempts
        attempts += 1
        return await refuse(*args, **kw)

    broker.publish_bulk = counted  # type: ignore[method-assign]
    b = batcher(broker, max_events=2, retry_s=0.1)
    b.start()
    for i in range(4):  # two full batches waiting: nothing to wait for but the retry pause
        b.add({"n": i})
    await asyncio.sleep(0.35)
    await b.stop()
    # One try, then one every 0.1 s (and the one at stop): not thousands.
    assert 3 <= attempts <= 6, attempts
