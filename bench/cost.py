"""The cost of a request: CPU seconds the whole system spends per request, route by route.

One system is started as `make run` starts it (tracing on, so Zipkin's JVM is counted too;
security on), with gateway, sentiment, nlp, anomaly and recommender. For each route, a
closed loop of requests at concurrency 1 and 16 (from the Go load generator, whose own CPU
is reported beside, so the client does not crowd out the system; the anomaly routes, whose
requests follow the answers, from Python); around each run, the user + system CPU seconds
the kernel charged to every process of the system (apps, sidecars, Redis,
placement, scheduler, sentry, Zipkin), read from /proc, divided by the requests. CPU per
request is steady on a shared machine where wall time is not. Beside each route, the
in-process cost of the model work it wraps (the floor), and the split by process.

    sentiment-direct    HTTP straight to the sentiment app (cached result)
    sentiment-sidecar   through sentiment's own daprd
    sentiment-gateway   client -> gateway -> daprd -> daprd -> sentiment
    analyze-gateway     /v1/text/analyze: nlp and sentiment in parallel, joined
    recommend-gateway   /v1/recommendations/{user} on a model trained from MSWeb
    anomaly-gateway     /v1/metrics/{series}/points, a batch of 100 points per request
    anomaly-batch       /v1/metrics/points, 16 series of 50 points each per request

The anomaly routes count a request as done only when every point in it was scored: each
concurrent client sends its own series, in order (points of one series sent by two
clients at once would arrive late, and be rejected at almost no cost).

The whole run is made twice: at trace sampling 1 (every request traced, the development
default) and 0.01 (`CONSORT_TRACE_SAMPLING`, a production-like rate), so what tracing
costs is the difference; then the gateway routes once more at 0.01 with the gateway's
coalescing off (`GATEWAY_COALESCE_MAX_ITEMS=1`, every request its own invocation), so what
sharing trips is worth is the difference. Results: bench/results/cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.load import Figures, closed_loop, http_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.processes import cpu_seconds_by_group
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
TEXT = "The battery life is awful, but the screen is gorgeous and the price is fair."
APPS = ["gateway", "sentiment", "nlp", "anomaly", "recommender"]
POINTS_PER_BATCH = 100
BATCH_SERIES, BATCH_POINTS = 16, 50
# The routes whose service calls the gateway coalesces (apps/gateway/coalesced.py).
COALESCED = ("sentiment-gateway", "analyze-gateway", "recommend-gateway")


def cpu_by_process(system: LocalSystem) -> dict[str, float]:
    """CPU seconds so far of each supervised process (with its children), by name."""
    return cpu_seconds_by_group({p.popen.pid: p.name for p in system.supervisor.procs if p.popen})


def in_process_ms(work: Callable[[], object], seconds: float = 1.0) -> float:
    """CPU milliseconds per call of `work` in this process (the floor under a route)."""
    work()
    calls, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        work()
        calls += 1
    return round(1000 * (time.process_time() - started) / calls, 4)


Call = Callable[[], Awaitable[bool]]


@dataclass
class Http:
    """A route driven by the Go load generator: the same method and headers, these targets
    in turn (`bench.load.http_loop`)."""

    method: str
    targets: list[dict[str, Any]]
    headers: dict[str, str]


Route = Http | Call


async def drive(route: Route, requests: int, concurrency: int) -> Figures:
    if isinstance(route, Http):
        return await http_loop(
            route.targets,
            method=route.method,
            headers=route.headers,
            requests=requests,
            concurrency=concurrency,
        )
    return await closed_loop(route, requests=requests, concurrency=concurrency, warmup=0)


class SeriesGroups:
    """Series groups handed to one call at a time: a client sends its own series' points
    in order, as a real source does (two calls on one series at once would make one's
    points late, rejected for almost nothing). With as many groups as concurrent calls,
    a call never waits for one."""

    def __init__(self, groups: int) -> None:
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for group in range(groups):
            self._free.put_nowait(group)
        self.clocks = dict.fromkeys(range(groups), 0)

    async def take(self) -> int:
        return await self._free.get()

    def give_back(self, group: int) -> None:
        self._free.put_nowait(group)


def metric_points(start: int, n: int, rng: Any) -> list[dict[str, float]]:
    """`n` points of a daily sine with noise, one a minute from step `start`."""
    import math

    return [
        {
            "timestamp": 1_700_000_000 + 60 * t,
            "value": 100 + 10 * math.sin(2 * math.pi * t / 1440) + rng.gauss(0, 1),
        }
        for t in range(start, start + n)
    ]


def all_scored(body: Any) -> bool:
    """Whether every point of an answer was scored (or kept while warming up): an answer
    with a series' problem in it, or late points, is not a success."""
    results = body["results"] if "results" in body else [body]
    return all(
        r.get("problem") is None
        and all(s["status"] in ("scored", "warming_up") for s in r.get("scores") or [])
        for r in results
    )


def anomaly_batches(
    client: httpx.AsyncClient, gateway: str, headers: dict[str, str], groups: SeriesGroups
) -> Call:
    """Each call sends the next 100 points of one series (a series per group)."""
    import random

    rng = random.Random(7)

    async def call() -> bool:
        s = await groups.take()
        start = groups.clocks[s]
        groups.clocks[s] += POINTS_PER_BATCH
        try:
            response = await client.post(
                f"{gateway}/v1/metrics/cost-{s}/points",
                json={"points": metric_points(start, POINTS_PER_BATCH, rng)},
                headers=headers,
            )
        except httpx.HTTPError:
            return False
        finally:
            groups.give_back(s)
        return response.status_code == 200 and all_scored(response.json())

    return call


def anomaly_multi_series(
    client: httpx.AsyncClient, gateway: str, headers: dict[str, str], groups: SeriesGroups
) -> Call:
    """Each call sends the next 50 points of each of a group's 16 series in one batch."""
    import random

    rng = random.Random(11)

    async def call() -> bool:
        g = await groups.take()
        start = groups.clocks[g]
        groups.clocks[g] += BATCH_POINTS
        body = {
            "series": [
                {"series": f"cost-batch-{g}-{s}", "points": metric_points(start, BATCH_POINTS, rng)}
                for s in range(BATCH_SERIES)
            ]
        }
        try:
            response = await client.post(f"{gateway}/v1/metrics/points", json=body, headers=headers)
        except httpx.HTTPError:
            return False
        finally:
            groups.give_back(g)
        return response.status_code == 200 and all_scored(response.json())

    return call


async def train_recommender(client: httpx.AsyncClient, gateway: str) -> list[str]:
    """Load MSWeb's visits, retrain, and return some users to ask for."""
    from bench.eval_recommender import DATASETS, load_msweb
    from bench.recommender_service import ingest, retrain, visits_as_interactions

    _, users = load_msweb(DATASETS / "msweb" / "anonymous-msweb.data.gz")
    visits = [(u, a) for u, areas in users[:5000] for a in areas]
    await ingest(client, gateway, visits_as_interactions(visits))
    await retrain(client, gateway)
    return [u for u, _ in users[:200]]


async def measure(
    system: LocalSystem, requests: int, only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    from apps.sentiment.analyzer import SentimentAnalyzer

    gateway = system.url("gateway")
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=system.api_headers) as client:
        users = await train_recommender(client, gateway)

        sentiment = [{"json": {"text": TEXT}}]
        routes: dict[str, Route] = {
            "sentiment-direct": Http(
                "POST",
                [{"url": f"{system.url('sentiment')}/v1/sentiment"} | t for t in sentiment],
                system.app_headers("sentiment"),
            ),
            "sentiment-sidecar": Http(
                "POST",
                [
                    {
                        "url": f"{system.sidecar_url('sentiment')}/v1.0/invoke/sentiment/method"
                        "/v1/sentiment"
                    }
                    | t
                    for t in sentiment
                ],
                system.sidecar_headers("sentiment"),
            ),
            "sentiment-gateway": Http(
                "POST",
                [{"url": f"{gateway}/v1/text/sentiment"} | t for t in sentiment],
                system.api_headers,
            ),
            "analyze-gateway": Http(
                "POST",
                [{"url": f"{gateway}/v1/text/analyze"} | t for t in sentiment],
                system.api_headers,
            ),
            "recommend-gateway": Http(
                "GET",
                [{"url": f"{gateway}/v1/recommendations/{user}"} for user in users],
                system.api_headers,
            ),
            "anomaly-gateway": anomaly_batches(
                client, gateway, system.api_headers, SeriesGroups(16)
            ),
            "anomaly-batch": anomaly_multi_series(
                client, gateway, system.api_headers, SeriesGroups(16)
            ),
        }
        # What the system spends doing nothing (health probes, placement, heartbeats): at a
        # low request rate it weighs on every request, so it is also subtracted below.
        idle_before, idle_started = cpu_by_process(system), time.monotonic()
        await asyncio.sleep(5)
        idle_rate = (sum(cpu_by_process(system).values()) - sum(idle_before.values())) / (
            time.monotonic() - idle_started
        )
        analyzer = SentimentAnalyzer()
        floors = {
            "sentiment": in_process_ms(lambda: analyzer.analyze(TEXT)),
        }
        for name, call in routes.items():
            if only and name not in only:
                continue
            for concurrency in (1, 16):
                n = requests if not name.startswith("anomaly") else max(requests // 5, 100)
                await drive(call, 20, concurrency)
                before, began = cpu_by_process(system), time.monotonic()
                run = await drive(call, n, concurrency)
                after, elapsed = cpu_by_process(system), time.monotonic() - began
                spent = {k: after[k] - before.get(k, 0.0) for k in after}
                total = sum(spent.values())
                entry = run.as_dict() | {
                    "cpu_ms_per_request": round(1000 * total / n, 3),
                    "cpu_ms_per_request_above_idle": round(
                        1000 * (total - idle_rate * elapsed) / n, 3
                    ),
                    "cpu_ms_per_request_by_process": {
                        k: round(1000 * v / n, 3)
                        for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                        if v > 0
                    },
                }
                if name.startswith("anomaly"):
                    per = (
                        POINTS_PER_BATCH
                        if name == "anomaly-gateway"
                        else BATCH_SERIES * BATCH_POINTS
                    )
                    entry["points_per_s"] = round(run.throughput_rps * per, 1)
                    entry["cpu_us_per_point"] = round(1e6 * total / n / per, 2)
                results.setdefault(name, {})[f"c{concurrency}"] = entry
                top = ", ".join(
                    f"{k} {v:.2f}"
                    for k, v in list(entry["cpu_ms_per_request_by_process"].items())[:4]
                )
                print(
                    f"{name:>18} c={concurrency:<2} p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f}"
                    f" ms  {run.throughput_rps:7.1f} req/s  cpu {entry['cpu_ms_per_request']:6.2f}"
                    f" ms/req ({top})  errors {run.errors}",
                    flush=True,
                )
    return {
        "routes": results,
        "in_process_cpu_ms": floors,
        "idle_cpu_ms_per_s": round(1000 * idle_rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    parser.add_argument("--sampling", default="1,0.01", help="trace sampling rates to run")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    runs: dict[str, Any] = {}
    rates = args.sampling.split(",")
    variants: list[tuple[str, str, tuple[str, ...] | None]] = [
        (f"sampling_{rate}", rate, None) for rate in rates
    ]
    # The gateway's coalescing off (every request its own invocation), on the routes it
    # touches, at the last rate: what sharing trips is worth, in the same run.
    variants.append((f"sampling_{rates[-1]}_uncoalesced", rates[-1], COALESCED))
    for name, rate, only in variants:
        os.environ["CONSORT_TRACE_SAMPLING"] = rate
        if only:
            os.environ["GATEWAY_COALESCE_MAX_ITEMS"] = "1"
        print(f"-- {name}", flush=True)
        started = time.monotonic()
        with local_system(APPS, tracing=True) as system:
            ready_s = round(time.monotonic() - started, 1)
            print(f"system ready in {ready_s} s", flush=True)
            runs[name] = {
                "system_ready_s": ready_s,
                "load_average_1m": os.getloadavg()[0],
                **asyncio.run(measure(system, args.requests, only)),
            }
        os.environ.pop("GATEWAY_COALESCE_MAX_ITEMS", None)
    report = {
        "benchmark": "cost",
        "description": __doc__,
        "machine": describe(),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "requests_per_run": args.requests,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
