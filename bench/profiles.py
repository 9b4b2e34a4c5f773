"""The same event path and state path on each infrastructure profile, side by side, in one run.

Profiles (docs/profiles.md): `redis` (Redis for state and pub/sub) and `postgres-rabbitmq`
(PostgreSQL 15 for state, RabbitMQ 3.10 for pub/sub). For each, a fresh system (gateway,
sentiment, anomaly, recommender, each beside its daprd; the profile's servers, placement,
scheduler) is started as the tests start it, then:

- **events** (P5, end to end): `POST /v1/interactions` in requests of 100, 16 requests in
  flight; the gateway publishes each interaction as an `interactions.recorded` event, the
  recommender takes them in bulk and folds them into its journal in the state store
  (compare-and-set, once per event id). Measured from the first request to the moment
  every user's learnt items (`GET /v1/users/{user}/interactions`) hold every event: events/s
  end to end, and how many were lost or doubled (both must be 0).
- **cached sentiment**: the same text again and again through the gateway (the result is a
  state-store read in sentiment), concurrency 16.
- **actor points**: `POST /v1/metrics/{series}/points`, 10 points a request over 64 series
  (one actor each, its state saved per call), concurrency 16: points/s.

Beside each figure, the CPU seconds the kernel charged to every process of the system per
unit of work (from /proc, steadier than wall time on a shared machine). Results:
bench/results/profiles.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.load import closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.processes import group_cpu_seconds
from consort.dev.system import LocalSystem
from tests.conftest import RECOMMENDER_TEST_ENV

RESULTS = Path(__file__).parent / "results"
PROFILES = ["redis", "postgres-rabbitmq"]
APPS = ["sentiment", "anomaly", "recommender", "gateway"]
TEXT = "The battery life is awful, but the screen is gorgeous and the price is fair."
START = datetime(2026, 1, 1, tzinfo=UTC)


def cpu_seconds(system: LocalSystem) -> float:
    return group_cpu_seconds({p.popen.pid for p in system.supervisor.procs if p.popen})


async def events(system: LocalSystem, total: int, users: int = 20) -> dict[str, Any]:
    """Publish `total` interactions through the gateway and wait until all are learnt."""
    run = uuid.uuid4().hex[:8]
    per_request = 100
    bodies = []
    for start in range(0, total, per_request):
        bodies.append(
            {
                "interactions": [
                    {
                        "id": f"{run}-{n}",
                        "user": f"u{n % users}-{run}",
                        "item": f"item-{n}",
                        "kind": "view",
                        "weight": 1.0,
                    }
                    for n in range(start, min(start + per_request, total))
                ]
            }
        )
    queue = iter(bodies)
    refused = 0
    async with httpx.AsyncClient(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60
    ) as api:
        cpu0 = cpu_seconds(system)
        started = time.perf_counter()

        async def sender() -> None:
            nonlocal refused
            for body in queue:
                while (await api.post("/v1/interactions", json=body)).status_code != 202:
                    refused += 1  # resubmitted: the ids make it idempotent
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(sender() for _ in range(16)))
        published_s = time.perf_counter() - started
        learnt: dict[str, int] = {}
        deadline = time.perf_counter() + 300
        while True:
            for u in range(users):
                user = f"u{u}-{run}"
                reply = await api.get(f"/v1/users/{user}/interactions")
                if reply.is_success:
                    items = reply.json()["items"]
                    learnt[user] = sum(round(i["weight"]) for i in items)
            if sum(learnt.values()) >= total or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(system) - cpu0
    got = sum(learnt.values())
    return {
        "events": total,
        "publish_s": round(published_s, 2),
        "end_to_end_s": round(elapsed, 2),
        "events_per_s": round(total / elapsed, 1),
        "learnt": got,
        "lost": max(total - got, 0),
        "doubled": max(got - total, 0),
        "resubmitted_requests": refused,
        "cpu_ms_per_event": round(1000 * cpu / total, 3),
    }


async def cached_sentiment(system: LocalSystem, requests: int) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=30
    ) as api:

        async def call() -> bool:
            reply = await api.post("/v1/text/sentiment", json={"text": TEXT})
            return reply.status_code == 200 and bool(reply.json().get("cached"))

        await api.post("/v1/text/sentiment", json={"text": TEXT})  # cached from now on
        cpu0 = cpu_seconds(system)
        figures = await closed_loop(call, requests=requests, concurrency=16)
        cpu = cpu_seconds(system) - cpu0
    return {**figures.as_dict(), "cpu_ms_per_request": round(1000 * cpu / requests, 3)}


async def actor_points(system: LocalSystem, requests: int, series: int = 64) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    counter = itertools.count()
    async with httpx.AsyncClient(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60
    ) as api:

        async def call() -> bool:
            n = next(counter)
            s, step = n % series, n // series
            points = [
                {
                    "timestamp": (START + timedelta(minutes=10 * step + i)).isoformat(),
                    "value": 100 + (step * 10 + i) % 7,
                }
                for i in range(10)
            ]
            reply = await api.post(f"/v1/metrics/bench.{run}.{s}/points", json={"points": points})
            return reply.status_code == 200

        cpu0 = cpu_seconds(system)
        figures = await closed_loop(call, requests=requests, concurrency=16, warmup=series)
        cpu = cpu_seconds(system) - cpu0
    return {
        **figures.as_dict(),
        "points_per_s": round(figures.throughput_rps * 10, 1),
        "cpu_ms_per_point": round(1000 * cpu / (requests * 10), 3),
    }


def run_profile(profile: str, n_events: int, requests: int) -> dict[str, Any]:
    env = {**RECOMMENDER_TEST_ENV, "RECOMMENDER_RETRAIN_INTERVAL_S": "3600"}
    with local_system(APPS, env=env, profile=profile) as system:
        return {
            "servers": system.servers,
            "events": asyncio.run(events(system, n_events)),
            "cached_sentiment": asyncio.run(cached_sentiment(system, requests)),
            "actor_points": asyncio.run(actor_points(system, requests)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    args = parser.parse_args()
    results = {p: run_profile(p, args.events, args.requests) for p in args.profiles.split(",")}
    base = results.get("redis")
    ratios: dict[str, Any] = {}
    if base:
        for p, r in results.items():
            if p != "redis":
                ratios[p] = {
                    "events_per_s": round(
                        r["events"]["events_per_s"] / base["events"]["events_per_s"], 2
                    ),
                    "cached_sentiment_rps": round(
                        r["cached_sentiment"]["throughput_rps"]
                        / base["cached_sentiment"]["throughput_rps"],
                        2,
                    ),
                    "actor_points_per_s": round(
                        r["actor_points"]["points_per_s"] / base["actor_points"]["points_per_s"], 2
                    ),
                }
    out = {
        "benchmark": "profiles",
        "description": __doc__,
        "machine": describe(),
        "args": vars(args),
        "results": results,
        "ratio_to_redis": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "profiles.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"results": results, "ratio_to_redis": ratios}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
