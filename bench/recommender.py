"""The recommender under load, on MSWeb's 75,938 training visits (the leave-one-out split
of bench/eval_recommender.py, seed 0), in one run:

1. Ingestion through pub/sub: every visit is posted to `POST /v1/interactions` (batches
   of 1,000, 4 at a time); each becomes an `interactions.recorded` event that the
   recommender journals and learns. Interactions/s is from the first post until the
   recommender reports all of them applied.
2. Model swap: ALS (the service's MSWeb defaults) and the rules are retrained three times
   while 16 clients ask for recommendations throughout; the time from the retrain request
   until the new version serves, the training time, and every failed request are counted.
3. Recommendations/s and p50/p99 through the gateway (gateway -> daprd -> daprd ->
   recommender) at concurrency 16, against `Recommender.recommend` in this process on the
   same data and models; similar items and basket completion through the gateway too.

Results: bench/results/recommender.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from apps.recommender.interactions import Interaction, InteractionKind
from apps.recommender.recommend import Recommender, train_models
from apps.recommender.settings import RecommenderSettings
from bench.eval_recommender import DATASETS, load_msweb, split_leave_one_out
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from bench.recommender_service import (
    first_items,
    ingest,
    model_status,
    retrain,
    visits_as_interactions,
)
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
MSWEB = DATASETS / "msweb" / "anonymous-msweb.data.gz"
K = 10


# -- the benchmark -------------------------------------------------------------------------------
#: Answers other than 200 seen by the benchmark's clients: by status, or by the client's
#: exception when there was no answer.
FAILURES: Counter[str] = Counter()


def getter(
    client: httpx.AsyncClient, urls: Sequence[str], versions: list[int] | None = None
) -> Callable[[], Awaitable[bool]]:
    cycle = itertools.cycle(urls)

    async def call() -> bool:
        try:
            response = await client.get(next(cycle))
        except httpx.HTTPError as exc:
            FAILURES[type(exc).__name__] += 1
            return False
        if response.status_code != 200:
            FAILURES[str(response.status_code)] += 1
            return False
        if versions is not None:
            versions.append(response.json()["model_version"])
        return True

    return call


async def swaps_under_load(
    client: httpx.AsyncClient, gateway: str, urls: list[str], rounds: int
) -> dict[str, Any]:
    """Retrain `rounds` times while 16 clients keep asking for recommendations."""
    versions: list[int] = []
    call = getter(client, urls, versions)
    stop = asyncio.Event()
    outcomes: list[bool] = []
    latencies: list[float] = []

    async def client_loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            outcomes.append(await call())
            latencies.append((time.perf_counter() - started) * 1000)

    loops = [asyncio.create_task(client_loop()) for _ in range(16)]
    swaps = []
    try:
        await asyncio.sleep(1)
        for _ in range(rounds):
            async with httpx.AsyncClient(
                headers=client.headers, timeout=60
            ) as ops:  # not queued behind the load
                status = await retrain(ops, gateway)
            swaps.append(
                {
                    "version": status["version"],
                    "swap_s": status["swap_s"],
                    "training_s": status["last_training_s"],
                }
            )
            print(f"swap to version {status['version']}: {status['swap_s']} s")
        await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    latencies.sort()
    status = await model_status(client, gateway)
    return {
        "rounds": rounds,
        "swaps": swaps,
        "swap_s_mean": round(statistics.fmean(s["swap_s"] for s in swaps), 3),
        "requests": len(outcomes),
        "failed": outcomes.count(False),
        "versions_served": sorted(set(versions)),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "snapshot": status["snapshot"],
    }


def in_process(
    train: Sequence[tuple[str, str]], users: list[str], requests: int
) -> tuple[Recommender, dict[str, Any]]:
    """The same recommender in this process: learn, train, and time `recommend`."""
    settings = RecommenderSettings()
    recommender = Recommender(policy=settings.policy, neighbourhood=settings.knn_neighbourhood)
    when = datetime(1998, 2, 1, tzinfo=UTC)
    for u, a in train:
        recommender.learn(Interaction(f"msweb:{u}:{a}", u, a, InteractionKind.VIEW, when, 1.0))
    started = time.perf_counter()
    als, rules = train_models(
        recommender.snapshot(),
        version=1,
        als_parameters=settings.als_parameters,
        min_support=settings.rules_min_support,
        min_confidence=settings.rules_min_confidence,
        max_len=settings.rules_max_len,
    )
    training_s = time.perf_counter() - started
    recommender.registry.install(als=als, rules=rules)
    cycle = itertools.cycle(users)

    async def one() -> bool:
        recommender.recommend(next(cycle), K)
        return True

    figures = asyncio.run(closed_loop(one, requests=requests, concurrency=1, warmup=50))
    return recommender, {"training_s": round(training_s, 2), "recommend": figures.as_dict()}


async def through_service(
    system: LocalSystem, interactions: list[dict[str, Any]], users: list[str], requests: int
) -> dict[str, Any]:
    gateway = system.url("gateway")
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(headers=system.api_headers, timeout=60, limits=limits) as client:
        out["ingest"] = await ingest(client, gateway, interactions)
        print(f"ingest: {out['ingest']}")
        first = await retrain(client, gateway)
        out["first_training"] = {
            "training_s": first["last_training_s"],
            "swap_s": first["swap_s"],
            "users": first["users"],
            "items": first["items"],
            "rules": first["rules"],
        }
        rec_urls = [f"{gateway}/v1/recommendations/{u}?k={K}" for u in users]
        out["model_swap"] = await swaps_under_load(client, gateway, rec_urls, rounds=3)
        print(
            f"model swap: {out['model_swap']['failed']} of {out['model_swap']['requests']} "
            f"requests failed"
        )
        routes: dict[str, list[str]] = {
            "recommendations": rec_urls,
            "recommendations_cold_start": [
                f"{gateway}/v1/recommendations/new-{i}?k={K}" for i in range(100)
            ],
            "similar_items": [
                f"{gateway}/v1/items/{a}/similar?k={K}" for a in first_items(interactions)
            ],
        }
        for name, urls in routes.items():
            figures = await closed_loop(
                getter(client, urls), requests=requests, concurrency=16, warmup=50
            )
            out[name] = {"c16": figures.as_dict()}
            report(f"gateway {name}", figures)
        baskets = [
            {"items": [a, b], "k": K} for a, b in itertools.pairwise(first_items(interactions))
        ]
        basket_cycle = itertools.cycle(baskets)

        async def basket() -> bool:
            try:
                response = await client.post(
                    f"{gateway}/v1/baskets/complete", json=next(basket_cycle)
                )
            except httpx.HTTPError as exc:
                FAILURES[type(exc).__name__] += 1
                return False
            if response.status_code != 200:
                FAILURES[str(response.status_code)] += 1
            return response.status_code == 200

        figures = await closed_loop(basket, requests=requests, concurrency=16, warmup=50)
        out["basket_completion"] = {"c16": figures.as_dict()}
        report("gateway basket completion", figures)
    return out


def report(name: str, figures: Figures) -> None:
    print(
        f"{name:>32} c={figures.concurrency:<2} p50 {figures.p50_ms:8.2f} ms  "
        f"p99 {figures.p99_ms:8.2f} ms  {figures.throughput_rps:8.1f} /s  errors {figures.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS / "recommender.json")
    parser.add_argument("--visits", type=int, default=None, help="only the first N visits")
    args = parser.parse_args()
    if not MSWEB.is_file():
        raise SystemExit(f"{MSWEB} missing (see ../shared/datasets/README.md)")
    started = time.monotonic()
    _, users = load_msweb(MSWEB)
    train, held_out = split_leave_one_out(users, seed=0)
    train = train[: args.visits]
    trained_users = {u for u, _ in train}
    known = [u for u in held_out if u in trained_users][:2000]
    interactions = visits_as_interactions(train)

    _, local = in_process(train, known, args.requests)
    report("in-process recommend", Figures(**local["recommend"]))
    with local_system(["recommender", "gateway"]) as system:
        service = asyncio.run(through_service(system, interactions, known, args.requests))
    gateway = service["recommendations"]["c16"]
    result = {
        "benchmark": "recommender",
        "description": __doc__,
        "machine": describe(),
        "data": {
            "source": "MSWeb (UCI anonymous-msweb), leave-one-out training visits, seed 0",
            "interactions": len(interactions),
            "users_asked": len(known),
        },
        "in_process": local,
        "service": service,
        "failed_answers_by_status": dict(FAILURES),
        "summary": {
            "recommendations_per_s_gateway_c16": gateway["throughput_rps"],
            "recommendations_p50_p99_ms_gateway_c16": [gateway["p50_ms"], gateway["p99_ms"]],
            "recommendations_per_s_in_process": local["recommend"]["throughput_rps"],
            "recommendations_p50_p99_ms_in_process": [
                local["recommend"]["p50_ms"],
                local["recommend"]["p99_ms"],
            ],
            "interactions_learnt_per_s_through_pubsub": service["ingest"]["learnt_per_s"],
            "model_swap_s_mean": service["model_swap"]["swap_s_mean"],
            "training_s_mean": round(
                statistics.fmean(s["training_s"] for s in service["model_swap"]["swaps"]), 2
            ),
            "requests_during_swaps": service["model_swap"]["requests"],
            "failed_during_swaps": service["model_swap"]["failed"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
