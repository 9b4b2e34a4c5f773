"""Driving a running recommender through the gateway, for the benchmark and the evaluation:
load interactions over pub/sub, retrain, ask for recommendations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

#: The time given to MSWeb's visits (the data set covers one week of February 1998).
WHEN = "1998-02-01T00:00:00+00:00"


def visits_as_interactions(train: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """MSWeb (user, area) visits as `POST /v1/interactions` items, one view of weight 1
    each, with ids of their own (so a resent batch counts once)."""
    return [
        {"id": f"msweb:{u}:{a}", "user": u, "item": a, "kind": "view", "weight": 1.0, "time": WHEN}
        for u, a in train
    ]


async def model_status(client: httpx.AsyncClient, gateway: str) -> dict[str, Any]:
    response = await client.get(f"{gateway}/v1/ops/recommender/model")
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


async def ingest(
    client: httpx.AsyncClient,
    gateway: str,
    interactions: list[dict[str, Any]],
    *,
    batch: int = 1000,
    parallel: int = 4,
) -> dict[str, float]:
    """Post `interactions` through the gateway and wait until the recommender applied them
    all; returns the seconds to publish and to learn, and the rates."""
    before = (await model_status(client, gateway))["events"]
    batches = [interactions[i : i + batch] for i in range(0, len(interactions), batch)]
    queue = iter(batches)
    started = time.perf_counter()

    async def poster() -> None:
        for chunk in queue:
            for _ in range(5):
                response = await client.post(
                    f"{gateway}/v1/interactions", json={"interactions": chunk}
                )
                if response.status_code == 202:
                    break
                await asyncio.sleep(1)  # resending is idempotent: the ids are the same
            else:
                raise RuntimeError(f"interactions not accepted: {response.text[:300]}")

    await asyncio.gather(*(poster() for _ in range(parallel)))
    published = time.perf_counter() - started
    wanted = before + len(interactions)
    while (await model_status(client, gateway))["events"] < wanted:
        await asyncio.sleep(0.1)
    learnt = time.perf_counter() - started
    return {
        "interactions": len(interactions),
        "published_s": round(published, 2),
        "published_per_s": round(len(interactions) / published),
        "learnt_s": round(learnt, 2),
        "learnt_per_s": round(len(interactions) / learnt),
    }


async def retrain(client: httpx.AsyncClient, gateway: str) -> dict[str, Any]:
    """Ask for a retraining and wait until its version serves; returns the new status and
    the seconds from the request until the new version answered."""
    started = time.perf_counter()
    response = await client.post(f"{gateway}/v1/ops/recommender/retrain")
    response.raise_for_status()
    wanted = response.json()["next_version"]
    while (status := await model_status(client, gateway))["version"] < wanted:
        await asyncio.sleep(0.05)
    status["swap_s"] = round(time.perf_counter() - started, 3)
    return status


async def recommendations(
    client: httpx.AsyncClient, gateway: str, user: str, k: int = 10
) -> dict[str, Any]:
    response = await client.get(f"{gateway}/v1/recommendations/{user}", params={"k": k})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def recommend_all(
    client: httpx.AsyncClient, gateway: str, users: Sequence[str], *, k: int, concurrency: int = 16
) -> dict[str, list[str]]:
    """Each user's top `k` item ids through the gateway, `concurrency` requests at a time."""
    out: dict[str, list[str]] = {}
    queue = iter(users)

    async def worker() -> None:
        for user in queue:
            body = await recommendations(client, gateway, user, k)
            out[user] = [i["item"] for i in body["items"]]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def first_items(interactions: list[dict[str, Any]], n: int = 50) -> list[str]:
    """The first `n` distinct items of `interactions`."""
    return list(dict.fromkeys(i["item"] for i in interactions))[:n]
