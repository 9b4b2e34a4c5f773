"""Points/s scored online: in this process, through the series' actors, and over events.

200 series, each first given 60 points (so each has a fitted model), then one point per
request, the series taken in turn:

- in-process: `AnomalyDetector.observe` on detectors held in a dict (the baseline);
- actor, direct: `POST /v1/metrics/{series}/points` on the anomaly app (app -> its daprd
  -> the actor's host, here the same app -> back);
- actor, gateway: the same through the gateway (gateway -> daprd -> daprd -> anomaly ->
  daprd -> actor);
- events: 20,000 points as 2,000 `metrics.observed` events (10 points each) published in
  bulk to the sidecar; points/s from the first publish to the last point taken.

Concurrency 16 (and 1 for latency). Results: bench/results/anomaly.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from apps.anomaly.detector import AnomalyDetector, DetectorConfig
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.observe import counter_total
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
SERIES = 200
HISTORY = 60
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)


def value(series: int, i: int) -> float:
    return 50 + 10 * math.sin(i / 9 + series) + 2 * math.sin(3.1 * i)


class Feed:
    """The next point of each series, the series taken in turn."""

    def __init__(self, prefix: str, start_at: int) -> None:
        self.prefix = prefix
        self.next = [start_at] * SERIES
        self.turn = 0

    def take(self) -> tuple[int, str, dict[str, Any]]:
        s = self.turn % SERIES
        self.turn += 1
        i = self.next[s]
        self.next[s] += 1
        point = {"timestamp": (START + i * STEP).isoformat(), "value": value(s, i)}
        return s, f"{self.prefix}-{s:03d}", point


async def seed(client: httpx.AsyncClient, url: str, prefix: str) -> None:
    async def one(s: int) -> None:
        points = [
            {"timestamp": (START + i * STEP).isoformat(), "value": value(s, i)}
            for i in range(HISTORY)
        ]
        for attempt in range(3):
            response = await client.post(
                f"{url}/v1/metrics/{prefix}-{s:03d}/points", json={"points": points}
            )
            if response.status_code == 200:
                return
            print(f"seeding {prefix}-{s:03d}: {response.status_code} {response.text[:300]}")
            await asyncio.sleep(1 + attempt)
        response.raise_for_status()

    for first in range(0, SERIES, 16):
        await asyncio.gather(*(one(s) for s in range(first, min(SERIES, first + 16))))


def points_taken(system: LocalSystem) -> int:
    text = httpx.get(f"{system.url('anomaly')}/metrics", timeout=5).text
    return int(counter_total(text, "consort_anomaly_points"))


async def events(system: LocalSystem, total_events: int) -> dict[str, float]:
    """Publish `total_events` events of 10 points in bulk; time until every point is taken."""
    before = points_taken(system)
    # Published as the topic's producer, the gateway, is allowed to (pubsub.yaml's scopes).
    sidecar = system.sidecar_url("gateway")
    feed = Feed("events", 0)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, headers=system.sidecar_headers("gateway")) as client:
        for first in range(0, total_events, 500):
            entries = []
            for n in range(first, min(total_events, first + 500)):
                s = n % SERIES
                points = []
                for _ in range(10):
                    i = feed.next[s]
                    feed.next[s] += 1
                    points.append(
                        {"timestamp": (START + i * STEP).isoformat(), "value": value(s, i)}
                    )
                entries.append(
                    {
                        "entryId": str(n),
                        "contentType": "application/json",
                        "event": {"series": f"events-{s:03d}", "points": points},
                    }
                )
            response = await client.post(
                f"{sidecar}/v1.0-alpha1/publish/bulk/pubsub/metrics.observed", json=entries
            )
            assert response.status_code == 204, response.text
    published = time.perf_counter() - started
    expected = before + total_events * 10
    while points_taken(system) < expected:
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - started
    return {
        "events": total_events,
        "points": total_events * 10,
        "publish_s": round(published, 2),
        "elapsed_s": round(elapsed, 2),
        "points_per_s": round(total_events * 10 / elapsed, 1),
    }


async def run(system: LocalSystem, requests: int, total_events: int) -> dict[str, Any]:
    out: dict[str, Any] = {"online": {}}
    detectors = {s: AnomalyDetector(config=DetectorConfig(step=60.0)) for s in range(SERIES)}
    for s, detector in detectors.items():
        for i in range(HISTORY):
            detector.observe((START + i * STEP).timestamp(), value(s, i))
    local_feed = Feed("local", HISTORY)

    async def in_process() -> bool:
        s, _, point = local_feed.take()
        detectors[s].observe(datetime.fromisoformat(point["timestamp"]).timestamp(), point["value"])
        return True

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    # The anomaly app is called straight, with the token its sidecar would send; the
    # gateway with the system's API key.
    headers = {**system.api_headers, **system.app_headers("anomaly")}
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        routes: dict[str, Any] = {"in-process": in_process}
        for route, app in (("actor via anomaly app", "anomaly"), ("actor via gateway", "gateway")):
            prefix = app
            await seed(client, system.url("anomaly"), prefix)
            feed = Feed(prefix, HISTORY)
            url = system.url(app)

            async def remote(feed: Feed = feed, url: str = url) -> bool:
                _, series, point = feed.take()
                response = await client.post(
                    f"{url}/v1/metrics/{series}/points", json={"points": [point]}
                )
                return response.status_code == 200 and response.json()["scores"][0]["status"] in (
                    "scored",
                    "warming_up",
                )

            routes[route] = remote
        for route, call in routes.items():
            for concurrency in (1, 16):
                figures: Figures = await closed_loop(
                    call, requests=requests, concurrency=concurrency, warmup=20
                )
                out["online"].setdefault(route, {})[f"c{concurrency}"] = figures.as_dict()
                print(
                    f"{route:>22} c={concurrency:<2} p50 {figures.p50_ms:7.2f} ms  "
                    f"p99 {figures.p99_ms:7.2f} ms  {figures.throughput_rps:8.1f} points/s  "
                    f"errors {figures.errors}"
                )
    out["events"] = await events(system, total_events)
    print(f"{'events (bulk)':>22} {out['events']['points_per_s']:8.1f} points/s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "anomaly.json")
    args = parser.parse_args()
    started = time.monotonic()
    with local_system(["anomaly", "gateway"]) as system:
        results = asyncio.run(run(system, args.requests, args.events))
    online = results["online"]
    base = online["in-process"]
    report = {
        "benchmark": "anomaly",
        "description": __doc__,
        "machine": describe(),
        "results": results,
        "summary": {
            "throughput_vs_in_process": {
                route: {
                    level: round(figures["throughput_rps"] / base[level]["throughput_rps"], 4)
                    for level, figures in levels.items()
                }
                for route, levels in online.items()
            },
            "events_points_per_s": results["events"]["points_per_s"],
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
