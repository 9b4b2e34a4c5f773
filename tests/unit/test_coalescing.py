"""The kit's coalescer: concurrent calls share batch calls (pure asyncio, no sidecar)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from consort.kit.coalesce import Coalescer

pytestmark = pytest.mark.anyio

caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Callee:
    """A service with a single and a batch route that double numbers; negative ones are
    refused. Calls wait at `gate` until it is set, so tests decide when trips return."""

    def __init__(self, *, open_gate: bool = True) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.trips: list[list[int]] = []
        self.callers: list[str] = []
        self.on_way = 0
        self.most_on_way = 0

    async def _arrive(self, items: list[int]) -> None:
        self.trips.append(items)
        self.callers.append(caller.get())
        self.on_way += 1
        self.most_on_way = max(self.most_on_way, self.on_way)
        try:
            await asyncio.wait_for(self.gate.wait(), 5)
        finally:
            self.on_way -= 1
        if any(i < 0 for i in items):
            raise ValueError(f"refused {items}")

    async def one(self, item: int) -> int:
        await self._arrive([item])
        return item * 2

    async def many(self, items: list[int]) -> list[int]:
        await self._arrive(items)
        return [i * 2 for i in items]


async def until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def test_a_lone_caller_always_goes_alone_by_the_single_route() -> None:
    callee = Callee()
    coalescer = Coalescer(callee.one, callee.many)
    assert [await coalescer(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert callee.trips == [[0], [1], [2], [3], [4]]


async def test_calls_arriving_while_the_places_are_taken_leave_together() -> None:
    callee = Callee(open_gate=False)
    sizes: list[int] = []
    coalescer = Coalescer(callee.one, callee.many, max_inflight=2, on_batch=sizes.append)
    calls = [asyncio.create_task(coalescer(i)) for i in range(10)]
    await until(lambda: len(callee.trips) == 2, "two trips on their way")
    assert callee.trips == [[0], [1]]
    assert coalescer.waiting == 8
    callee.gate.set()
    assert await asyncio.gather(*calls) == [i * 2 for i in range(10)]
    # The eight that waited went in one trip, when the first place came free.
    assert callee.trips[2:] == [[2, 3, 4, 5, 6, 7, 8, 9]]
    assert sizes == [1, 1, 8]
    assert callee.most_on_way <= 2


async def test_a_batch_carries_at_most_max_items_and_max_weight() -> None:
    callee = Callee(open_gate=False)
    coalescer = Coalescer(
        callee.one, callee.many, max_inflight=1, max_items=4, max_weight=10, weight=lambda i: i
    )
    calls = [asyncio.create_task(coalescer(i)) for i in (1, 1, 1, 1, 1, 1, 5, 5, 5)]
    await until(lambda: callee.trips, "the first trip")
    callee.gate.set()
    await asyncio.gather(*calls)
    assert callee.trips == [[1], [1, 1, 1, 1], [1, 5], [5, 5]]


async def test_one_callers_bad_item_fails_only_that_caller() -> None:
    callee = Callee(open_gate=False)
    coalescer = Coalescer(callee.one, callee.many, max_inflight=1)
    first = asyncio.create_task(coalescer(0))
    await until(lambda: callee.trips, "the first trip")
    calls = [asyncio.create_task(coalescer(i)) for i in (1, -2, 3)]
    await until(lambda: coalescer.waiting == 3, "three waiting")
    callee.gate.set()
    results = await asyncio.gather(first, *calls, return_exceptions=True)
    assert results[:2] == [0, 2] and results[3] == 6
    assert isinstance(results[2], ValueError)
    # The refused batch was sent again an item at a time.
    assert callee.trips == [[0], [1, -2, 3], [1], [-2], [3]]


async def test_a_failure_of_the_callee_is_every_callers_answer() -> None:
    class Unavailable(Exception):
        pass

    async def many(items: list[int]) -> list[int]:
        await callee.many(items)
        raise Unavailable

    callee = Callee(open_gate=False)
    coalescer = Coalescer(
        callee.one, many, max_inflight=1, isolates=lambda exc: not isinstance(exc, Unavailable)
    )
    first = asyncio.create_task(coalescer(0))
    await until(lambda: callee.trips, "the first trip")
    calls = [asyncio.create_task(coalescer(i)) for i in (1, 2, 3)]
    await until(lambda: coalescer.waiting == 3, "three waiting")
    callee.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert await first == 0
    assert all(isinstance(r, Unavailable) for r in results)
    assert len(callee.trips) == 2  # no trip again alone


async def test_a_caller_that_gives_up_is_left_out_and_the_others_are_answered() -> None:
    callee = Callee(open_gate=False)
    coalescer = Coalescer(callee.one, callee.many, max_inflight=1)
    first = asyncio.create_task(coalescer(0))
    await until(lambda: callee.trips, "the first trip")
    quitter = asyncio.create_task(coalescer(1))
    stayer = asyncio.create_task(coalescer(2))
    await until(lambda: coalescer.waiting == 2, "two waiting")
    quitter.cancel()
    callee.gate.set()
    assert (await first, await stayer) == (0, 4)
    assert callee.trips == [[0], [2]]


async def test_each_trip_runs_in_the_context_of_the_caller_it_leads() -> None:
    callee = Callee(open_gate=False)
    coalescer = Coalescer(callee.one, callee.many, max_inflight=1)

    async def as_caller(name: str, item: int) -> int:
        caller.set(name)
        return await coalescer(item)

    first = asyncio.create_task(as_caller("a", 0))
    await until(lambda: callee.trips, "the first trip")
    later = [asyncio.create_task(as_caller(n, i)) for n, i in (("b", 1), ("c", 2))]
    await until(lambda: coalescer.waiting == 2, "two waiting")
    callee.gate.set()
    await asyncio.gather(first, *later)
    assert callee.callers == ["a", "b"]  # the batch [1, 2] is in b's trace


async def test_max_items_one_turns_coalescing_off() -> None:
    callee = Callee()
    coalescer = Coalescer(callee.one, callee.many, max_items=1)
    assert await asyncio.gather(*(coalescer(i) for i in range(6))) == [0, 2, 4, 6, 8, 10]
    assert all(len(t) == 1 for t in callee.trips)
