"""Micro-batching: concurrent requests share one model call.

A model that parses 16 texts in one call does it faster than 16 calls of one text. Requests
arrive one by one, so `MicroBatcher` holds each briefly (`max_wait_ms`) to let others join
it, then runs the batch through a synchronous function in a worker thread. Batches run one
at a time: the model is not thread-safe, and the event loop keeps serving while it works.

Pure asyncio: no web framework, no Dapr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

log = logging.getLogger(__name__)


@dataclass
class _Waiting(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    arrived: float


class BatcherClosed(RuntimeError):
    """The batcher is not running, so it cannot take or finish an item."""


class MicroBatcher(Generic[In, Out]):
    """Groups items submitted close together into batches for one `process` call each.

    The oldest waiting item waits at most `max_wait_ms` for others; a batch goes as soon as
    it holds `max_size` items or that time is up. Items that queued while a batch was being
    processed go in the next batch at once (their wait is already over), so under load
    batches fill up without adding delay. `max_wait_ms=0` never waits: a lone item goes at
    once, and only a backlog is batched. `max_size=1` processes one item at a time: the
    baseline without micro-batching.

    Use it as `async with MicroBatcher(...) as batcher:`, or call `start()` and `aclose()`.

    Args:
        process: turns a batch of items into their results, in the same order; called in
            a worker thread, one batch at a time. If it raises, every item of that batch
            gets the exception.
        max_size: the most items in one batch.
        max_wait_ms: how long the oldest waiting item waits for others to join it.
        on_batch: called after every batch `process` finished (or raised) with the batch
            size and the seconds `process` took; for metrics.
    """

    def __init__(
        self,
        process: Callable[[list[In]], list[Out]],
        *,
        max_size: int = 16,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {max_wait_ms}")
        self._process = process
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self._on_batch = on_batch
        self._waiting: deque[_Waiting[In, Out]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch being processed)."""
        return sum(1 for w in self._waiting if not w.future.done())

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self._closing

    async def start(self) -> None:
        """Start the worker task that forms and processes batches."""
        if self._worker is not None:
            raise RuntimeError("the batcher is already started")
        self._closing = False
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._work(self._wakeup), name="micro-batcher")

    async def aclose(self) -> None:
        """Stop taking items, process those already submitted, then stop the worker."""
        if self._worker is None:
            return
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        try:
            await self._worker
        finally:
            self._worker = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def submit(self, item: In) -> Out:
        """Queue `item` for the next batch and return its result once processed.

        Raises:
            BatcherClosed: the batcher is not running.
            Exception: whatever `process` raised for the batch holding `item`.
        """
        if not self.running or self._wakeup is None:
            raise BatcherClosed("the batcher is not running: start it first")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._waiting.append(_Waiting(item, future, loop.time()))
        self._wakeup.set()
        # Cancelling this await cancels `future`; the worker then leaves the item out, or
        # drops its result if its batch is already being processed.
        return await future

    async def _work(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self._waiting and self._waiting[0].future.done():
                    self._waiting.popleft()  # cancelled while waiting
                if not self._waiting:
                    if self._closing:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                if self.queue_depth < self.max_size and not self._closing:
                    left = self._waiting[0].arrived + self.max_wait_ms / 1000 - loop.time()
                    if left > 0:
                        wakeup.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(left):
                                await wakeup.wait()
                        continue  # more arrived, or the wait is over: look again
                batch: list[_Waiting[In, Out]] = []
                while self._waiting and len(batch) < self.max_size:
                    waiting = self._waiting.popleft()
                    if not waiting.future.done():
                        batch.append(waiting)
                if batch:
                    await self._run(batch)
        finally:
            # Reached only when the worker itself is cancelled (or has a bug): nobody may
            # wait forever.
            while self._waiting:
                waiting = self._waiting.popleft()
                if not waiting.future.done():
                    waiting.future.set_exception(BatcherClosed("the batcher stopped"))

    async def _run(self, batch: list[_Waiting[In, Out]]) -> None:
        items = [w.item for w in batch]
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self._process, items)
            if len(results) != len(items):
                raise ValueError(f"process returned {len(results)} results for {len(items)} items")
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        else:
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)
        if self._on_batch is not None:
            try:
                self._on_batch(len(items), time.perf_counter() - started)
            except Exception:  # metrics must not stop the batcher
                log.exception("on_batch callback failed")
