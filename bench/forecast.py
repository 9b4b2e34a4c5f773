"""Forecasts/s per model, in this process and through the gateway (gateway -> daprd ->
daprd -> forecast, fitted in its worker processes), one series per request, at
concurrency 1 and 4. The series: 120 monthly points with trend and a yearly cycle,
horizon 18. Results: bench/results/forecast.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx

from apps.forecast.methods import forecast
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
MODELS = ("ets", "theta", "arima", "combination")
VALUES = [200 + t + 25 * math.sin(2 * math.pi * t / 12) + 5 * math.cos(t) for t in range(120)]


async def run(system: LocalSystem, requests: int) -> dict[str, dict[str, dict[str, Figures]]]:
    out: dict[str, dict[str, dict[str, Figures]]] = {}
    async with httpx.AsyncClient(headers=system.api_headers, timeout=60) as client:
        for model in MODELS:
            body = {
                "series": [
                    {"id": "s", "values": VALUES, "period": 12, "horizon": 18, "model": model}
                ]
            }

            async def local(model: str = model) -> bool:
                forecast(VALUES, 12, 18, model)
                return True

            async def remote(body: dict[str, Any] = body) -> bool:
                response = await client.post(f"{system.url('gateway')}/v1/forecasts", json=body)
                return response.status_code == 200

            for route, call in (("in-process", local), ("gateway", remote)):
                for concurrency in (1, 4):
                    figures = await closed_loop(
                        call, requests=requests, concurrency=concurrency, warmup=3
                    )
                    out.setdefault(model, {}).setdefault(route, {})[f"c{concurrency}"] = figures
                    print(
                        f"{model:>12} {route:>10} c={concurrency} p50 {figures.p50_ms:8.2f} ms  "
                        f"p99 {figures.p99_ms:8.2f} ms  {figures.throughput_rps:6.1f} forecasts/s"
                    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS / "forecast.json")
    args = parser.parse_args()
    started = time.monotonic()
    with local_system(["forecast", "gateway"]) as system:
        results = asyncio.run(run(system, args.requests))
    report = {
        "benchmark": "forecast",
        "description": __doc__,
        "machine": describe(),
        "results": {
            m: {r: {lv: f.as_dict() for lv, f in lvs.items()} for r, lvs in routes.items()}
            for m, routes in results.items()
        },
        "summary": {
            m: {
                lv: round(
                    routes["gateway"][lv].throughput_rps / routes["in-process"][lv].throughput_rps,
                    3,
                )
                for lv in ("c1", "c4")
            }
            for m, routes in results.items()
        },
        "summary_meaning": "forecasts/s through the gateway divided by forecasts/s in-process "
        "(in-process runs one fit at a time; the service fits in 2 worker processes)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
