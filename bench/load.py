"""Closed-loop load: N requests at a fixed concurrency.

`http_loop` drives plain HTTP requests with the Go load generator in `bench/loadgen` (built
once into the setup cache), so the client's own CPU does not crowd out the system it
measures on a two-core machine; `closed_loop` runs any Python coroutine, for calls whose
next request depends on the last answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from consort.kit.settings import cache_dir

LOADGEN = Path(__file__).parent / "loadgen"


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
    client_cpu_ms_per_request: float | None = None  # the load generator's own (http_loop)

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


def figures(concurrency: int, latencies: list[float], errors: int, elapsed_s: float) -> Figures:
    """A run's figures from its latencies (ms, any order)."""
    latencies = sorted(latencies)
    return Figures(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        p50_ms=round(percentile(latencies, 0.50), 3),
        p90_ms=round(percentile(latencies, 0.90), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        mean_ms=round(statistics.fmean(latencies), 3),
        throughput_rps=round(len(latencies) / elapsed_s, 1),
    )


def loadgen_binary() -> Path:
    """The Go load generator, built when its source changed (cached by its hash)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((LOADGEN / name).read_bytes())
    binary = cache_dir() / "bin" / f"loadgen-{digest.hexdigest()[:16]}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        # Standard library only: nothing to download.
        env = os.environ | {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        subprocess.run(["go", "build", "-o", str(partial), "."], cwd=LOADGEN, env=env, check=True)
        partial.rename(binary)
    return binary


async def http_loop(
    targets: Sequence[Mapping[str, Any]],
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    requests: int,
    concurrency: int,
    warmup: int = 0,
) -> Figures:
    """`requests` HTTP requests, `concurrency` at a time, from the Go load generator.

    Args:
        targets: `{"url": ..., "json": ...}` (json optional), used in turn and cycled.
        method: every request's method.
        headers: every request's headers.
        requests: how many are measured; `warmup` more are made first.
    """
    binary = loadgen_binary()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as lines:
        for t in targets:
            line = {"url": t["url"]}
            if "json" in t:
                line["body"] = json.dumps(t["json"])
            lines.write(json.dumps(line) + "\n")
    try:
        args = [str(binary), "-method", method, "-targets", lines.name]
        args += ["-c", str(concurrency), "-n", str(requests), "-warmup", str(warmup)]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        process = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await process.communicate()
    finally:
        os.unlink(lines.name)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen failed ({process.returncode}): {err.decode()[-2000:]}")
    run = json.loads(out)
    if run["errors"] and run["errors"] == run["requests"]:
        raise RuntimeError(f"every request failed: {run['first_error']} {run['statuses']}")
    result = figures(concurrency, run["latencies_ms"], run["errors"], run["elapsed_s"])
    result.client_cpu_ms_per_request = round(1000 * run["client_cpu_s"] / run["requests"], 3)
    return result


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
    return figures(concurrency, latencies, errors, time.perf_counter() - started)
