"""Recommender quality: association rules against arules, recommenders on MSWeb.

Two real data sets from `../shared/datasets/` (see its README), in process, one run:

- Groceries (9,835 baskets): `AssociationRules.mine` at support 0.001 and confidence
  0.5 beside arules' published `apriori(Groceries, support = 0.001, confidence = 0.5)`:
  5,668 rules, by length 2: 11, 3: 1,461, 4: 3,211, 5: 939, 6: 46, and {honey} =>
  {whole milk} with support 0.001118, confidence 0.7333, lift 2.870.
- MSWeb (UCI anonymous-msweb.data, one week of www.microsoft.com, 32,711 users): every
  user with at least two distinct visited areas has one of them held out, chosen at
  random with a fixed seed; every other visit is learnt as a `view` interaction. Each
  method ranks the areas the user has not visited in training, and hit rate@10 (the
  held-out area is in the top 10) and NDCG@10 (1 / log2(rank + 1) when it is, one
  relevant item so the ideal DCG is 1) are averaged over those users. Methods:
  popularity, item-to-item cosine, our ALS (`apps.recommender.als`, which the service
  serves by default), the `hybrid` policy of `Recommender.recommend` (reciprocal rank
  fusion of ALS and item-to-item), the library peer: implicit's
  `AlternatingLeastSquares` called directly with the same hyperparameters, confidence
  matrix and seed, ranking with its own `recommend`, and **ALS through our service**: a
  local system (recommender and gateway, each beside its daprd, on Redis) is started,
  every training visit is posted to `POST /v1/interactions` and learnt over pub/sub, a
  retraining is asked for, and each test user's top 10 comes from
  `GET /v1/recommendations/{user}` at the gateway (`--no-service` leaves it out).

Results: bench/results/quality-recommender.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from threadpoolctl import threadpool_limits

from apps.recommender.als import AlsParameters, bm25_stats, confidence_matrix, train_als
from apps.recommender.interactions import Interaction, InteractionKind
from apps.recommender.recommend import DEFAULT_POLICY, ModelRegistry, Recommender
from apps.recommender.rules import AssociationRules
from bench.machine import describe
from bench.recommender_service import (
    ingest,
    model_status,
    recommend_all,
    retrain,
    visits_as_interactions,
)

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results"
K = 10

PUBLISHED_GROCERIES = {
    "source": (
        "arules (Hahsler, Gruen and Hornik 2005): apriori(Groceries, support = 0.001, "
        "confidence = 0.5), as in ../shared/datasets/README.md"
    ),
    "rules": 5668,
    "by_length": {"2": 11, "3": 1461, "4": 3211, "5": 939, "6": 46},
    "honey_whole_milk": {"support": 0.001118, "confidence": 0.7333, "lift": 2.870},
}


def load_groceries(path: Path) -> list[list[str]]:
    """One basket per line, items comma-separated (kept as written, spaces included)."""
    with path.open(encoding="utf-8") as lines:
        return [line.rstrip("\r\n").split(",") for line in lines if line.strip()]


def load_msweb(path: Path) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """Areas (id -> title) and users with their visited areas in file order (DST format:
    `A` lines are areas, a `C` line starts a user, its `V` lines are the visits)."""
    areas: dict[str, str] = {}
    users: list[tuple[str, list[str]]] = []
    with gzip.open(path, "rt", encoding="latin-1") as lines:
        for line in lines:
            fields = line.rstrip("\r\n").split(",")
            if fields[0] == "A":
                areas[fields[1]] = fields[3].strip('"')
            elif fields[0] == "C":
                users.append((fields[2], []))
            elif fields[0] == "V":
                users[-1][1].append(fields[1])
    return areas, users


def evaluate_groceries(path: Path) -> dict[str, Any]:
    baskets = load_groceries(path)
    started = time.perf_counter()
    rules = AssociationRules.mine(baskets, min_support=0.001, min_confidence=0.5)
    seconds = time.perf_counter() - started
    honey = rules.find(["honey"], "whole milk")
    ours = {
        "rules": len(rules),
        "by_length": {str(n): c for n, c in rules.lengths().items()},
        "honey_whole_milk": {
            "support": round(honey.support, 6),
            "confidence": round(honey.confidence, 4),
            "lift": round(honey.lift, 3),
        }
        if honey
        else None,
    }
    published = PUBLISHED_GROCERIES
    return {
        "data": str(path.relative_to(ROOT.parent)),
        "transactions": len(baskets),
        "items": len({item for basket in baskets for item in basket}),
        "parameters": rules.parameters,
        "ours": ours,
        "published": published,
        "matches_published": all(ours[key] == published[key] for key in ours),
        "mining_seconds": round(seconds, 3),
        "example_completion": [
            asdict(c) for c in rules.complete_basket(["yogurt", "whipped/sour cream"], 3)
        ],
    }


def split_leave_one_out(
    users: Sequence[tuple[str, list[str]]], seed: int
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(user, area) training pairs, and the held-out area of every user with >= 2 areas."""
    rng = random.Random(seed)
    train: list[tuple[str, str]] = []
    held_out: dict[str, str] = {}
    for user, visits in users:
        areas = list(dict.fromkeys(visits))
        if len(areas) >= 2:
            held = rng.randrange(len(areas))
            held_out[user] = areas[held]
            del areas[held]
        train.extend((user, area) for area in areas)
    return train, held_out


def score(
    held_out: dict[str, str], ranked: Callable[[str], Sequence[str]]
) -> dict[str, float | int]:
    """Hit rate and NDCG at K of one method, and its time per user."""
    hits = 0
    gain = 0.0
    started = time.perf_counter()
    for user, target in held_out.items():
        top = list(ranked(user))[:K]
        if target in top:
            hits += 1
            gain += 1.0 / math.log2(top.index(target) + 2)
    seconds = time.perf_counter() - started
    return {
        f"hit_rate@{K}": round(hits / len(held_out), 4),
        f"ndcg@{K}": round(gain / len(held_out), 4),
        "hits": hits,
        "ranking_seconds": round(seconds, 2),
    }


def als_through_service(
    train: list[tuple[str, str]], users: list[str], parameters: AlsParameters
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The top K of each of `users` from our recommender service, after it learnt `train`
    over pub/sub and retrained with `parameters`; and what that took."""
    from bench.local import local_system

    env = {
        "RECOMMENDER_ALS_FACTORS": str(parameters.factors),
        "RECOMMENDER_ALS_ITERATIONS": str(parameters.iterations),
        "RECOMMENDER_ALS_REGULARIZATION": str(parameters.regularization),
        "RECOMMENDER_ALS_ALPHA": str(parameters.alpha),
        "RECOMMENDER_ALS_WEIGHTING": parameters.weighting,
        "RECOMMENDER_ALS_RANDOM_SEED": str(parameters.random_seed),
        "RECOMMENDER_ALS_THREADS": str(parameters.threads),
    }

    async def run(
        gateway: str, headers: dict[str, str]
    ) -> tuple[dict[str, list[str]], dict[str, Any]]:
        async with httpx.AsyncClient(headers=headers, timeout=60) as client:
            ingested = await ingest(client, gateway, visits_as_interactions(train))
            status = await retrain(client, gateway)
            started = time.perf_counter()
            lists = await recommend_all(client, gateway, users, k=K)
            seconds = time.perf_counter() - started
            saved = (await model_status(client, gateway))["snapshot"]
        return lists, {
            "ingest": ingested,
            "model_version": status["version"],
            "training_s": status["last_training_s"],
            "users_learnt": status["users"],
            "snapshot": saved,
            "requests_s": round(seconds, 1),
            "requests_per_s": round(len(users) / seconds),
        }

    started = time.perf_counter()
    with local_system(["recommender", "gateway"], env=env) as system:
        lists, figures = asyncio.run(run(system.url("gateway"), system.api_headers))
    figures["seconds_in_all"] = round(time.perf_counter() - started, 1)
    return lists, figures


def evaluate_msweb(
    path: Path, seed: int, parameters: AlsParameters, *, service: bool = True
) -> dict[str, Any]:
    areas, users = load_msweb(path)
    train, held_out = split_leave_one_out(users, seed)
    recommender = Recommender(registry=ModelRegistry(), policy="hybrid")
    when = datetime(1998, 2, 1, tzinfo=UTC)
    started = time.perf_counter()
    for user, area in train:
        recommender.learn(
            Interaction(f"{user}:{area}", user, area, InteractionKind.VIEW, when, weight=1.0)
        )
    ingest_seconds = time.perf_counter() - started
    store = recommender.store

    snapshot = recommender.snapshot()
    started = time.perf_counter()
    ours = train_als(snapshot.matrix, parameters, version=1)
    train_seconds = time.perf_counter() - started
    recommender.registry.install(als=ours)

    peer, peer_seconds = _fit_peer(snapshot.matrix.weights, parameters)
    user_row = snapshot.matrix.user_index()
    rows = np.asarray([user_row[u] for u in held_out])
    peer_ids, _ = peer.recommend(
        rows, snapshot.matrix.weights[rows], N=K, filter_already_liked_items=True
    )
    peer_lists = {
        user: [snapshot.matrix.items[j] for j in ids]
        for user, ids in zip(held_out, peer_ids, strict=True)
    }

    def popularity(user: str) -> list[str]:
        return [item for item, _ in store.popular(K, exclude=store.seen(user))]

    def item_knn(user: str) -> list[str]:
        return [s.item for s in recommender.knn.recommend(store.seen(user), K)]

    our_lists: dict[str, list[str]] = {}

    def our_als(user: str) -> list[str]:
        our_lists[user] = [s.item for s in ours.recommend(user, store.seen(user), K)]
        return our_lists[user]

    def hybrid_rrf(user: str) -> list[str]:
        return [r.item for r in recommender.recommend(user, K)]

    methods = {
        "popularity": score(held_out, popularity),
        "item_knn": score(held_out, item_knn),
        "als_ours": score(held_out, our_als),
        "als_implicit_direct": score(held_out, peer_lists.__getitem__),
        "hybrid_rrf": score(held_out, hybrid_rrf),
    }
    same = sum(our_lists[user] == peer_lists[user] for user in held_out)
    methods["als_implicit_direct"]["fit_seconds"] = round(peer_seconds, 2)
    methods["als_ours"]["fit_seconds"] = round(train_seconds, 2)
    service_run: dict[str, Any] | None = None
    if service:
        service_lists, service_run = als_through_service(train, list(held_out), parameters)
        methods["als_service"] = score(held_out, service_lists.__getitem__)
        methods["als_service"]["ranking_seconds"] = service_run["requests_s"]
        service_run["identical_top10_to_als_ours_users"] = sum(
            service_lists[user] == our_lists[user] for user in held_out
        )
    return {
        "data": str(path.relative_to(ROOT.parent)),
        "users": len(users),
        "areas": len(areas),
        "visits": sum(len(v) for _, v in users),
        "protocol": {
            "name": "leave-one-out (all-but-1) over users with at least two distinct areas",
            "held_out": f"one visited area per user, uniformly at random, random.Random({seed})",
            "test_users": len(held_out),
            "training_interactions": len(train),
            "candidates": "every area the user did not visit in training",
            "k": K,
        },
        "ingest": {
            "interactions": len(train),
            "seconds": round(ingest_seconds, 2),
            "per_second": round(len(train) / ingest_seconds),
            "note": "InteractionStore + incremental ItemKnn, in process, one thread",
        },
        "als_parameters": asdict(parameters),
        "served_policy": (
            f"Recommender's default, {DEFAULT_POLICY!r}: ALS for every user with a known item "
            "(all test users here), so its figures are als_ours'. hybrid_rrf is the "
            "'hybrid' policy: reciprocal rank fusion of ALS and item-to-item"
        ),
        "methods": methods,
        "als_ours_vs_implicit_identical_top10_users": same,
        "als_service": service_run,
    }


def _fit_peer(weights: Any, parameters: AlsParameters) -> tuple[Any, float]:
    """implicit's own ALS on the same confidence matrix, hyperparameters and seed."""
    from implicit.cpu.als import AlternatingLeastSquares

    stats = bm25_stats(weights) if parameters.weighting == "bm25" else None
    confidences = confidence_matrix(weights, parameters, stats)
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=parameters.factors,
            regularization=parameters.regularization,
            alpha=parameters.alpha,
            iterations=parameters.iterations,
            random_state=parameters.random_seed,
            num_threads=parameters.threads,
        )
        model.fit(confidences, show_progress=False)
    return model, time.perf_counter() - started


def print_summary(report: dict[str, Any]) -> None:
    g = report["groceries"]
    print(
        f"Groceries: {g['ours']['rules']} rules (published {g['published']['rules']}), "
        f"by length {g['ours']['by_length']}; honey => whole milk {g['ours']['honey_whole_milk']}"
        f"; matches published: {g['matches_published']} ({g['mining_seconds']} s)"
    )
    m = report["msweb"]
    print(f"MSWeb: {m['protocol']['test_users']} test users, k = {K}")
    print(f"{'method':<22} {'hit@10':>7} {'ndcg@10':>8} {'seconds':>8}")
    for name, figures in m["methods"].items():
        print(
            f"{name:<22} {figures[f'hit_rate@{K}']:>7.4f} {figures[f'ndcg@{K}']:>8.4f} "
            f"{figures['ranking_seconds']:>8.2f}"
        )
    print(
        f"our ALS and implicit's give the same top 10 for "
        f"{m['als_ours_vs_implicit_identical_top10_users']} of {m['protocol']['test_users']}"
    )
    if m["als_service"]:
        s = m["als_service"]
        print(
            f"ALS through the service: {s['ingest']['interactions']} visits learnt over pub/sub "
            f"at {s['ingest']['learnt_per_s']}/s, trained in {s['training_s']} s; the same top "
            f"10 as our ALS in process for {s['identical_top10_to_als_ours_users']} users"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATASETS, help="the shared datasets folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-recommender.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    parser.add_argument(
        "--no-service", action="store_true", help="leave out ALS through the running service"
    )
    args = parser.parse_args()
    groceries = args.data / "groceries" / "groceries.csv"
    msweb = args.data / "msweb" / "anonymous-msweb.data.gz"
    for path in (groceries, msweb):
        if not path.is_file():
            raise SystemExit(f"{path} missing (see ../shared/datasets/README.md)")
    started = time.perf_counter()
    parameters = AlsParameters()
    report = {
        "evaluation": "quality-recommender",
        "description": __doc__,
        "machine": describe(),
        "libraries": {name: version(name) for name in ("implicit", "numpy", "scipy")},
        "groceries": evaluate_groceries(groceries),
        "msweb": evaluate_msweb(msweb, args.seed, parameters, service=not args.no_service),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_summary(report)
    print(f"{report['seconds']} s in all; written to {args.out}")


if __name__ == "__main__":
    main()
