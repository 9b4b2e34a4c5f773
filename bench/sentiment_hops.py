"""What each Dapr hop costs: the same sentiment request by four routes, in one run.

    in-process   the VADER model called in this process (no HTTP at all)
    direct       HTTP straight to the sentiment app
    sidecar      through the sentiment app's own daprd (one sidecar hop)
    gateway      client -> gateway -> its daprd -> sentiment's daprd -> sentiment

Each at concurrency 1 and 16. The system is started fresh (free ports, temporary run
folder) exactly as the tests start it. Results: bench/results/sentiment-hops.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from apps.sentiment.analyzer import SentimentAnalyzer
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
TEXT = "The battery life is awful, but the screen is gorgeous and the price is fair."
# Dapr's published overhead of one app-to-app call over HTTP (runtime v1.17 performance docs).
DAPR_PUBLISHED = {"p50_ms": 1.06, "p99_ms": 2.90}


def post(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    return call


async def in_process(analyzer: SentimentAnalyzer) -> bool:
    analyzer.analyze(TEXT)
    return True


async def measure(system: LocalSystem, requests: int) -> dict[str, dict[str, Figures]]:
    analyzer = SentimentAnalyzer()
    body = {"text": TEXT}
    results: dict[str, dict[str, Figures]] = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(headers=system.api_headers, timeout=30, limits=limits) as client:
        routes: dict[str, Callable[[], Awaitable[bool]]] = {
            "in-process": lambda: in_process(analyzer),
            "direct": post(
                client,
                f"{system.url('sentiment')}/v1/sentiment",
                body,
                system.app_headers("sentiment"),
            ),
            "sidecar": post(
                client,
                f"{system.sidecar_url('sentiment')}/v1.0/invoke/sentiment/method/v1/sentiment",
                body,
                system.sidecar_headers("sentiment"),
            ),
            "gateway": post(client, f"{system.url('gateway')}/v1/text/sentiment", body),
        }
        stats_url = f"{system.url('gateway')}/v1/text/stats"
        for concurrency in (1, 16):
            for name, call in routes.items():
                n = requests if concurrency == 1 else requests * 2
                before = (await client.get(stats_url)).json()["total"]
                figures = await closed_loop(call, requests=n, concurrency=concurrency)
                results.setdefault(name, {})[f"c{concurrency}"] = figures
                drain = ""
                if name != "in-process":
                    # Every request published a texts.analyzed event: let the gateway's
                    # consumer catch up, so the next route starts on a quiet system.
                    started = time.perf_counter()
                    expected = before + n + 50  # the warm-up requests publish too
                    while (await client.get(stats_url)).json()["total"] < expected:
                        if time.perf_counter() - started > 300:
                            raise RuntimeError("the texts.analyzed consumer fell behind")
                        await asyncio.sleep(0.05)
                    figures.drain_s = round(time.perf_counter() - started, 2)
                    drain = f"  events drained {figures.drain_s:5.2f} s after"
                print(
                    f"{name:>10} c={concurrency:<2} p50 {figures.p50_ms:7.2f} ms  "
                    f"p99 {figures.p99_ms:7.2f} ms  {figures.throughput_rps:8.1f} req/s  "
                    f"errors {figures.errors}{drain}"
                )
    return results


def summarise(results: dict[str, dict[str, Figures]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for level in ("c1", "c16"):
        direct = results["direct"][level]
        sidecar = results["sidecar"][level]
        gateway = results["gateway"][level]
        summary[level] = {
            "sidecar_hop_overhead_ms": {
                "p50": round(sidecar.p50_ms - direct.p50_ms, 3),
                "p99": round(sidecar.p99_ms - direct.p99_ms, 3),
            },
            "gateway_route_overhead_ms": {
                "p50": round(gateway.p50_ms - direct.p50_ms, 3),
                "p99": round(gateway.p99_ms - direct.p99_ms, 3),
            },
            "latency_ratio_to_direct": {
                "in-process": round(results["in-process"][level].p50_ms / direct.p50_ms, 3),
                "sidecar": round(sidecar.p50_ms / direct.p50_ms, 3),
                "gateway": round(gateway.p50_ms / direct.p50_ms, 3),
            },
            "throughput_ratio_to_direct": {
                "sidecar": round(sidecar.throughput_rps / direct.throughput_rps, 3),
                "gateway": round(gateway.throughput_rps / direct.throughput_rps, 3),
            },
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per run at c=1")
    parser.add_argument("--out", type=Path, default=RESULTS / "sentiment-hops.json")
    parser.add_argument(
        "--no-tracing", action="store_true", help="run without Zipkin and span export"
    )
    args = parser.parse_args()
    started = time.monotonic()
    with local_system(["sentiment", "gateway"], tracing=not args.no_tracing) as system:
        print(f"system ready in {time.monotonic() - started:.1f} s; measuring …")
        results = asyncio.run(measure(system, args.requests))
    report = {
        "benchmark": "sentiment-hops",
        "description": __doc__,
        "machine": describe(),
        "tracing": not args.no_tracing,
        "request": {"text": TEXT},
        "notes": (
            "Load generator, services, sidecars and Redis share the same cores. Every route "
            "does the same work in the sentiment app (a cached result read from the state "
            "store and one texts.analyzed event published)."
        ),
        "results": {k: {lv: f.as_dict() for lv, f in v.items()} for k, v in results.items()},
        "summary": summarise(results),
        "dapr_published_app_to_app_http_overhead_v1_17": DAPR_PUBLISHED,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
