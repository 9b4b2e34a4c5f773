"""Worker processes that fit series, each killable on its own.

Plain infrastructure: no web framework, no Dapr. statsmodels holds the GIL while fitting,
so series are fitted in processes. A fit cannot be interrupted from outside but its process
can: when a request runs out of its time budget, the workers running *its* fits are killed
and replaced, and every other worker goes on with the fits of other requests.

Fairness: a request waits for workers through at most `lanes` places in line, taking its
next series only when one of its fits ends, so a request of many series and a request of
one take turns at the workers instead of the small one queueing behind all of the large
one's series.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("forecast.workers")

#: A fit: a picklable top-level function and its arguments.
Job = tuple[Callable[..., Any], tuple[Any, ...]]


def _serve(conn: Connection) -> None:
    """A worker's loop: run each job received, send back (ok, result or exception)."""
    while True:
        try:
            function, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, function(*args)))
        except Exception as exc:  # the caller re-raises it
            conn.send((False, exc))


def worker_context(preload: Sequence[str]) -> Any:
    """Where worker processes come from: forks of a fork server, a fresh single-threaded
    interpreter that imported `preload` once (not forks of this process, with its threads
    and sockets). A worker then starts in milliseconds instead of importing statsmodels
    itself: at start-up, each spawned worker had spent about 4 CPU seconds on that, and a
    replaced one kept requests waiting as long."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


class Worker:
    """One worker process and the pipe to it."""

    def __init__(self, warm_up: Job | None, context: Any = None) -> None:
        context = context or multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        if warm_up is not None:
            # The first real fit should not pay for importing statsmodels.
            self.conn.send(warm_up)

    def warmed(self) -> Worker:
        """Wait for the warm-up job's answer (statsmodels imported); this worker."""
        if self.conn.poll(None):
            self.conn.recv()
        return self

    async def run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run one job here and wait for its result without blocking the event loop."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        self.conn.send((function, args))

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        ok, outcome = self.conn.recv()
        if not ok:
            raise outcome
        return outcome

    def kill(self) -> None:
        """End the process now, whatever it is fitting."""
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class Workers:
    """A fixed number of workers; one running a fit its request gave up on is replaced.

    Args:
        size: worker processes (about one per core).
        warm_up: a cheap job each new worker runs before it takes work.
        preload: modules the fork server imports once for all workers (what the jobs
            need); none: each worker is a fresh interpreter (spawned).
    """

    def __init__(self, size: int, warm_up: Job | None = None, preload: Sequence[str] = ()) -> None:
        # One BLAS thread each: the workers are the parallelism, and BLAS threads on top
        # of them made fits 10 to 50 times slower on two cores. Spawned workers inherit it.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = "1"
        self.size = size
        self._warm_up = warm_up
        self._context = worker_context(preload) if preload else None
        self._idle: asyncio.Queue[Worker] | None = None
        # Started together, so that they import statsmodels in parallel.
        self._started = [w.warmed() for w in [Worker(warm_up, self._context) for _ in range(size)]]
        self._replacing = 0
        self._lock = threading.Lock()
        self._all: set[Worker] = set(self._started)
        self.replaced = 0
        self._closed = False

    def _queue(self) -> asyncio.Queue[Worker]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for worker in self._started:
                self._idle.put_nowait(worker)
        return self._idle

    @property
    def ready(self) -> bool:
        """Whether any worker is up (not all of them being replaced)."""
        with self._lock:
            return self._replacing < self.size

    async def map(
        self, function: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], lanes: int
    ) -> list[Any]:
        """Run `function(*args)` for each of `jobs`, at most `lanes` at once; the results in
        order. Cancelled (the request's budget ran out): the workers running its jobs are
        killed and replaced, its jobs not yet started never start."""
        results: list[Any] = [None] * len(jobs)
        pending = iter(enumerate(jobs))

        async def lane() -> None:
            for index, args in pending:
                results[index] = await self._run(function, args)

        await asyncio.gather(*(lane() for _ in range(max(1, min(lanes, len(jobs))))))
        return results

    async def _run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        idle = self._queue()
        worker = await idle.get()
        try:
            result = await worker.run(function, args)
        except asyncio.CancelledError:
            self._replace(worker)
            raise
        except BaseException:
            idle.put_nowait(worker)
            raise
        idle.put_nowait(worker)
        return result

    def _replace(self, worker: Worker) -> None:
        """Kill `worker` and start another in a thread (a fresh one imports statsmodels,
        seconds on a busy machine); it joins the idle ones when warm."""
        loop = asyncio.get_running_loop()
        idle = self._queue()
        with self._lock:
            self._replacing += 1
            self._all.discard(worker)

        def replace() -> None:
            worker.kill()
            try:
                fresh = Worker(self._warm_up, self._context).warmed()
            except Exception:
                with self._lock:
                    self._replacing -= 1
                    closed = self._closed
                if not closed:
                    log.exception("a forecast worker could not be started")
                return
            with self._lock:
                self._replacing -= 1
                if self._closed:
                    fresh.kill()
                    return
                self._all.add(fresh)
                self.replaced += 1
            try:
                loop.call_soon_threadsafe(idle.put_nowait, fresh)
            except RuntimeError:  # the loop closed while it warmed (the app stopping)
                fresh.kill()

        threading.Thread(target=replace, name="forecast-worker-replace", daemon=True).start()

    def close(self) -> None:
        """Kill every worker (and any that finishes warming after)."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
        for worker in workers:
            worker.kill()
