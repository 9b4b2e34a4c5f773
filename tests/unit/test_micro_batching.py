"""The nlp service's micro-batcher (pure asyncio, no model, no sidecar)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from apps.nlp.batching import BatcherClosed, MicroBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Deadline for waiting on a worker thread; never reached when the code is right.
DEADLINE_S = 5.0


class Recorder:
    """A `process` that doubles numbers and records its batches and their overlap."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.sizes: list[int] = []
        self.gate = gate
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self._active = 0
        self.most_active = 0

    def __call__(self, items: list[int]) -> list[int]:
        with self._lock:
            self._active += 1
            self.most_active = max(self.most_active, self._active)
            self.batches.append(items)
        self.entered.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(DEADLINE_S)
            if any(i < 0 for i in items):
                raise ValueError(f"negative item in {items}")
            return [i * 2 for i in items]
        finally:
            with self._lock:
                self._active -= 1

    def on_batch(self, size: int, seconds: float) -> None:
        assert seconds >= 0
        self.sizes.append(size)


def batcher_for(recorder: Recorder, **kwargs: float) -> MicroBatcher[int, int]:
    size = int(kwargs.pop("max_size", 16))
    return MicroBatcher(recorder, max_size=size, on_batch=recorder.on_batch, **kwargs)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds (a deadline, not a sleep)."""
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.001)


async def test_submits_within_the_window_form_one_batch() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_wait_ms=50) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert recorder.sizes == [5]


async def test_a_late_item_still_joins_within_the_wait() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_size=2, max_wait_ms=5_000) as batcher:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        assert not first.done()  # held for company
        # The second item fills the batch, which then goes at once, not after 5 s.
        assert await batcher.submit(2) == 4
        assert await first == 2
    assert recorder.sizes == [2]


async def test_an_item_alone_goes_when_the_wait_is_over() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_wait_ms=10) as batcher:
        assert await batcher.submit(1) == 2
        assert await batcher.submit(2) == 4
    assert recorder.sizes == [1, 1]


async def test_max_size_is_respected_and_results_reach_their_waiters() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_size=4, max_wait_ms=5_000) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10, 18)))
    assert results == [i * 2 for i in range(10, 18)]
    assert recorder.batches == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert recorder.sizes == [4, 4]


async def test_items_queued_behind_a_busy_batch_go_together_at_once() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    async with batcher_for(recorder, max_size=8, max_wait_ms=1) as batcher:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(recorder.entered.wait, DEADLINE_S)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await wait_for(lambda: batcher.queue_depth == 5)
        gate.set()
        assert await asyncio.gather(first, *rest) == [0, 2, 4, 6, 8, 10]
    assert recorder.sizes == [1, 5]
    assert recorder.most_active == 1


async def test_an_exception_reaches_every_waiter_of_its_batch() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_size=3, max_wait_ms=20) as batcher:
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in [1, -1, 2, 3]), return_exceptions=True
        )
    failed = outcomes[:3]
    assert all(isinstance(o, ValueError) for o in failed)
    assert failed[0] is failed[1] is failed[2]
    # The batcher lives on after a failed batch: the next item had its own.
    assert outcomes[3] == 6
    assert recorder.sizes == [3, 1]


async def test_a_wrong_number_of_results_fails_the_batch() -> None:
    async with MicroBatcher(lambda items: items[:1], max_size=2, max_wait_ms=5_000) as batcher:
        outcomes = await asyncio.gather(
            batcher.submit(1), batcher.submit(2), return_exceptions=True
        )
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert "1 results for 2 items" in str(outcomes[0])


async def test_without_batching_items_go_one_at_a_time() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_size=1, max_wait_ms=50) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert recorder.sizes == [1] * 6
    assert recorder.batches == [[i] for i in range(6)]
    assert recorder.most_active == 1


async def test_without_a_wait_only_a_backlog_is_batched() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    async with batcher_for(recorder, max_size=16, max_wait_ms=0) as batcher:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.to_thread(recorder.entered.wait, DEADLINE_S)  # alone, not waiting
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
        await wait_for(lambda: batcher.queue_depth == 5)
        gate.set()
        assert await asyncio.gather(first, *rest) == [0, 2, 4, 6, 8, 10]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_batches_never_overlap() -> None:
    recorder = Recorder()
    async with batcher_for(recorder, max_size=3, max_wait_ms=1) as batcher:
        await asyncio.gather(*(batcher.submit(i) for i in range(30)))
    assert sum(recorder.sizes) == 30
    assert recorder.most_active == 1


async def test_a_cancelled_waiter_is_left_out_of_its_batch() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    async with batcher_for(recorder, max_size=1, max_wait_ms=5_000) as batcher:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(recorder.entered.wait, DEADLINE_S)
        second = asyncio.create_task(batcher.submit(2))
        third = asyncio.create_task(batcher.submit(3))
        await wait_for(lambda: batcher.queue_depth == 2)
        second.cancel()
        await wait_for(lambda: batcher.queue_depth == 1)
        gate.set()
        assert (await first, await third) == (2, 6)
        with pytest.raises(asyncio.CancelledError):
            await second
    assert recorder.batches == [[1], [3]]


async def test_a_waiter_cancelled_mid_batch_does_not_break_it() -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    async with batcher_for(recorder, max_size=2, max_wait_ms=20) as batcher:
        first = asyncio.create_task(batcher.submit(1))
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.to_thread(recorder.entered.wait, DEADLINE_S)
        first.cancel()
        gate.set()
        assert await second == 4
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await batcher.submit(3) == 6  # the worker lives on
    assert recorder.batches == [[1, 2], [3]]


async def test_close_finishes_what_was_submitted_then_refuses() -> None:
    recorder = Recorder()
    batcher = batcher_for(recorder, max_size=4, max_wait_ms=5_000)
    with pytest.raises(BatcherClosed):
        await batcher.submit(1)
    await batcher.start()
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await wait_for(lambda: batcher.queue_depth == 3)
    # Closing does not wait out the 5 s window: it processes what is there.
    async with asyncio.timeout(DEADLINE_S / 2):
        await batcher.aclose()
    assert [await p for p in pending] == [0, 2, 4]
    assert not batcher.running
    with pytest.raises(BatcherClosed):
        await batcher.submit(1)


async def test_a_failing_metrics_callback_does_not_stop_the_batcher() -> None:
    def broken(size: int, seconds: float) -> None:
        raise RuntimeError("metrics down")

    async with MicroBatcher(lambda items: items, max_wait_ms=1, on_batch=broken) as batcher:
        assert await batcher.submit(1) == 1
        assert await batcher.submit(2) == 2


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        MicroBatcher(lambda items: items, max_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(lambda items: items, max_wait_ms=-1)
