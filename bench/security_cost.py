"""What security costs per hop: the same requests on a system with and without it, in one run.

Secure (the default everywhere): mTLS between sidecars with identities from sentry, the
Dapr API token on every sidecar call, the app token on every call to an app, each callee's
access-control policy. Plain: none of it (`LocalSystem(secure=False)`, used only here).
Both keep the gateway's API key check and Redis's password. Each system runs gateway and
sentiment; for each, the cached sentiment request by two routes:

    sidecar   client -> sentiment's daprd -> sentiment            (token checks, no mTLS)
    gateway   client -> gateway -> its daprd -> sentiment's daprd -> sentiment
              (tokens at three places, one mTLS hop between the sidecars, an ACL check)

at concurrency 1 and 16, with the CPU seconds the kernel charged to every process of the
system (apps, sidecars, Redis, placement, scheduler, sentry) per request, read from /proc.
Results: bench/results/security-cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.load import closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.processes import group_cpu_seconds
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
TEXT = "The battery life is awful, but the screen is gorgeous and the price is fair."


def cpu_seconds(system: LocalSystem) -> float:
    """CPU seconds of every live process in the system's process groups."""
    return group_cpu_seconds({p.popen.pid for p in system.supervisor.procs if p.popen})


def poster(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        try:
            response = await client.post(url, json={"text": TEXT}, headers=headers)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    return call


async def measure(system: LocalSystem, requests: int) -> dict[str, Any]:
    sidecar = f"{system.sidecar_url('sentiment')}/v1.0/invoke/sentiment/method/v1/sentiment"
    routes = {
        "sidecar": (sidecar, system.sidecar_headers("sentiment")),
        "gateway": (f"{system.url('gateway')}/v1/text/sentiment", system.api_headers),
    }
    figures: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        for concurrency in (1, 16):
            for name, (url, headers) in routes.items():
                call = poster(client, url, headers)
                await closed_loop(call, requests=50, concurrency=concurrency)  # warm
                before = cpu_seconds(system)
                run = await closed_loop(call, requests=requests, concurrency=concurrency)
                spent = cpu_seconds(system) - before
                entry = run.as_dict() | {"cpu_ms_per_request": round(1000 * spent / requests, 3)}
                figures.setdefault(name, {})[f"c{concurrency}"] = entry
                print(
                    f"{name:>8} c={concurrency:<2} p50 {run.p50_ms:6.2f} ms  p99 "
                    f"{run.p99_ms:6.2f} ms  {run.throughput_rps:7.1f} req/s  "
                    f"cpu {entry['cpu_ms_per_request']:6.2f} ms/req  errors {run.errors}"
                )
    return figures


def ratios(plain: dict[str, Any], secure: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for route, levels in secure.items():
        for level, s in levels.items():
            p = plain[route][level]
            out[f"{route}_{level}"] = {
                "p50_added_ms": round(s["p50_ms"] - p["p50_ms"], 3),
                "p99_added_ms": round(s["p99_ms"] - p["p99_ms"], 3),
                "cpu_added_ms_per_request": round(
                    s["cpu_ms_per_request"] - p["cpu_ms_per_request"], 3
                ),
                "cpu_ratio": round(s["cpu_ms_per_request"] / p["cpu_ms_per_request"], 3),
                "throughput_ratio": round(s["throughput_rps"] / p["throughput_rps"], 3),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS / "security-cost.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for label, secure in (("plain", False), ("secure", True)):
        started = time.monotonic()
        with local_system(["sentiment", "gateway"], secure=secure) as system:
            print(f"{label}: ready in {time.monotonic() - started:.1f} s")
            results[label] = asyncio.run(measure(system, args.requests))
    report = {
        "benchmark": "security-cost",
        "description": __doc__,
        "machine": describe(),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "requests_per_run": args.requests,
        "results": results,
        "secure_vs_plain": ratios(results["plain"], results["secure"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["secure_vs_plain"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
