"""Coalescing: concurrent calls of one kind share one call of its batch form.

Every call to another service pays the same fixed price whatever it carries: the caller's
HTTP client, two sidecars, the callee's HTTP server, a span each. When sixteen clients ask
the gateway for sentiment at once, sixteen invocations of `v1/sentiment` pay it sixteen
times; one invocation of `v1/sentiment/batch` with the sixteen texts pays it once.
`Coalescer` does that without holding anybody back: a call made while fewer than
`max_inflight` calls of its kind are on their way goes at once, alone and by the single
route, exactly as it would without coalescing; only calls that arrive while that many are
on their way wait, and they wait for nothing but the next free place, leaving together.
So a lone client sees no change, and under load the wait a call would have spent queued
behind others in the callee is spent in the caller instead, sharing one trip.

A batch that fails for a reason that may belong to one of its items (the callee refused
one, or broke on one) is sent again an item at a time, so one caller's bad input never
fails the others' calls; a failure that belongs to the callee (it is unavailable) is every
caller's answer.

Pure asyncio: no web framework, no Dapr.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Call(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    # The caller's context, so the trip it leads (or makes alone) is in its trace.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    alone: bool = False


class Coalescer(Generic[In, Out]):
    """Sends calls one at a time while few are on their way, and together when many are.

    Args:
        one: makes one call alone (the single route).
        many: makes one call for several items (the batch route); returns their results
            in the same order.
        max_items: the most items one batch call carries; 1 turns coalescing off.
        max_weight: the most total `weight` one batch call carries (a body size limit).
        weight: an item's share of `max_weight` (1 each by default).
        max_inflight: how many calls of this kind may be on their way at once before
            the next ones wait to go together.
        isolates: given a batch call's exception, whether it may be one item's fault, so
            each item is sent again alone (True by default); False makes it every item's.
        on_batch: called with the size of every call sent (1 for a call alone); metrics.
    """

    def __init__(
        self,
        one: Callable[[In], Awaitable[Out]],
        many: Callable[[list[In]], Awaitable[Sequence[Out]]],
        *,
        max_items: int = 32,
        max_weight: int | None = None,
        weight: Callable[[In], int] | None = None,
        max_inflight: int = 2,
        isolates: Callable[[BaseException], bool] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_items < 1 or max_inflight < 1:
            raise ValueError("max_items and max_inflight must be at least 1")
        self._one, self._many = one, many
        self.max_items, self.max_weight, self.max_inflight = max_items, max_weight, max_inflight
        self._weight = weight or (lambda _item: 1)
        self._isolates = isolates or (lambda _exc: True)
        self._on_batch = on_batch
        self._waiting: deque[_Call[In, Out]] = deque()
        self._inflight = 0
        self._trips: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Calls waiting for a place (a measure of the load on this kind of call)."""
        return len(self._waiting)

    async def __call__(self, item: In) -> Out:
        """The result of `item`'s call, made alone or in a batch."""
        if self.max_items == 1:
            return await self._one(item)
        call: _Call[In, Out] = _Call(item, asyncio.get_running_loop().create_future())
        self._waiting.append(call)
        self._dispatch()
        # If this caller gives up (cancelled), its future is cancelled with it: a trip not
        # yet gone leaves it out, one on its way drops its result.
        return await call.future

    def _dispatch(self) -> None:
        while self._inflight < self.max_inflight and (batch := self._next_batch()):
            self._inflight += 1
            trip = asyncio.create_task(self._trip(batch), context=batch[0].context)
            self._trips.add(trip)
            trip.add_done_callback(self._trips.discard)

    def _next_batch(self) -> list[_Call[In, Out]]:
        batch: list[_Call[In, Out]] = []
        weight = 0
        while self._waiting and len(batch) < self.max_items:
            call = self._waiting[0]
            if call.future.done():  # its caller gave up
                self._waiting.popleft()
                continue
            if call.alone or (batch and batch[0].alone):
                if batch:
                    break
                batch.append(self._waiting.popleft())
                break
            w = self._weight(call.item)
            if batch and self.max_weight is not None and weight + w > self.max_weight:
                break
            batch.append(self._waiting.popleft())
            weight += w
        return batch

    async def _trip(self, batch: list[_Call[In, Out]]) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(len(batch))
            if len(batch) == 1:
                results: Sequence[Out] = [await self._one(batch[0].item)]
            else:
                results = await self._many([c.item for c in batch])
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"a batch of {len(batch)} came back with {len(results)} results"
                    )
        except Exception as exc:
            if len(batch) > 1 and self._isolates(exc):
                # Again, an item at a time, ahead of the calls that came later.
                for call in reversed(batch):
                    call.alone = True
                    self._waiting.appendleft(call)
            else:
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)
        except BaseException:  # cancelled: so are the calls it carried
            for call in batch:
                call.future.cancel()
            raise
        else:
            for call, result in zip(batch, results, strict=True):
                if not call.future.done():
                    call.future.set_result(result)
        finally:
            self._inflight -= 1
            self._dispatch()
