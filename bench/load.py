"""A small closed-loop HTTP load generator: N requests at a fixed concurrency."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Figures:
    """Latency percentiles (ms) and throughput of one run."""

    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rps: float
    drain_s: float | None = None  # how long the events it caused took to be consumed after

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_ms: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, by linear interpolation."""
    if not sorted_ms:
        return float("nan")
    position = q * (len(sorted_ms) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_ms) - 1)
    return sorted_ms[low] + (sorted_ms[high] - sorted_ms[low]) * (position - low)


async def closed_loop(
    call: Callable[[], Awaitable[bool]], *, requests: int, concurrency: int, warmup: int = 50
) -> Figures:
    """Run `requests` calls, `concurrency` at a time; `call` returns True on success."""
    for _ in range(warmup):
        await call()
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            ok = await call()
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Figures(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        p50_ms=round(percentile(latencies, 0.50), 3),
        p90_ms=round(percentile(latencies, 0.90), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        mean_ms=round(statistics.fmean(latencies), 3),
        throughput_rps=round(len(latencies) / elapsed, 1),
    )
