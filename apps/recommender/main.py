"""The recommender service: transport only (routes, the event subscription, the lifespan).
What it does as it runs (snapshots, journal, trainer) is `service.Service`; the models
live in `recommend` (with `als`, `itemknn`, `rules`), their training in `training`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from threadpoolctl import threadpool_limits

from apps.recommender.recommend import Recommender
from apps.recommender.service import NotReady, Service, decode_deliveries, recommendations
from apps.recommender.settings import RecommenderSettings
from consort.contracts.events import INTERACTIONS_RECORDED, PUBSUB
from consort.contracts.recommender import (
    BasketCompletion,
    BasketRequest,
    BasketSuggestion,
    ModelStatus,
    RecommendationBatchRequest,
    RecommendationBatchResult,
    RecommendationRequest,
    Recommendations,
    RetrainAccepted,
    SimilarItem,
    SimilarItems,
    SimilarRequest,
    UserInteractions,
    UserItem,
    UserRequest,
)
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.events import (
    Bulk,
    Delivery,
    Subscription,
    declare_subscriptions,
    deliveries,
    delivery_response,
)
from consort.kit.service import ServiceKit, create_app

settings = RecommenderSettings()
kit = ServiceKit(settings, version="1.0.0")
service: Service | None = None


def running() -> Service:
    """The service once its models serve, or a 503 problem."""
    current = service
    try:
        if current is None:
            raise NotReady("the service is starting")
        current.serving()
    except NotReady as exc:
        raise unavailable(
            "Model not ready", str(exc), slug="model-not-ready", retry_after_s=1
        ) from exc
    return current


def serving() -> Recommender:
    """The serving recommender, or a 503 problem while the snapshot loads."""
    return running().serving()


async def _readiness() -> str | None:
    return await service.readiness() if service else "the service is starting"


kit.add_readiness_check("recommender", _readiness)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global service
    # One BLAS thread: a request's algebra is small (64 x 64), and OpenBLAS's idle threads
    # spinning beside the event loop and the training process cost more than they give.
    threadpool_limits(limits=1, user_api="blas")
    service = Service(settings, lambda: kit.sidecar, kit.extra_models)
    tasks = [
        asyncio.create_task(service.start()),
        asyncio.create_task(service.schedule()),
        asyncio.create_task(service.trainer()),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        service.close()


app = create_app(
    kit,
    title="Consort recommender",
    description=(
        "Recommendations (ALS, item-to-item, popular), similar items and basket completion "
        "(association rules), learnt from `interactions.recorded` events."
    ),
    lifespan=lifespan,
)


def _within_k_max(k: int, field: str = "k") -> None:
    if k > settings.k_max:
        raise invalid_field(
            field,
            f"must be at most {settings.k_max}",
            detail=f"{field} must be at most {settings.k_max}",
            limit=settings.k_max,
        )


@app.post("/v1/recommend", response_model=Recommendations, tags=["recommender"])
async def recommend(request: RecommendationRequest) -> Recommendations:
    """Up to `k` items for a user, best first; an unknown user gets popular items."""
    _within_k_max(request.k)
    (result,) = _recommend([request])
    return result


@app.post("/v1/recommend/batch", response_model=RecommendationBatchResult, tags=["recommender"])
async def recommend_batch(request: RecommendationBatchRequest) -> RecommendationBatchResult:
    """The answers to several users' requests, in the order given, each as by /v1/recommend
    (the gateway sends concurrent requests together)."""
    for i, r in enumerate(request.requests):
        _within_k_max(r.k, f"requests.{i}.k")
    return RecommendationBatchResult(results=_recommend(request.requests))


def _recommend(requests: list[RecommendationRequest]) -> list[Recommendations]:
    recommender = serving()
    with kit.metrics.inferring(
        f"recommender@{recommender.registry.current.version}", items=len(requests)
    ):
        return recommendations(recommender, requests)


@app.post(
    "/v1/similar",
    response_model=SimilarItems,
    tags=["recommender"],
    responses={404: {"description": "No interaction with this item was learnt."}},
)
async def similar(request: SimilarRequest) -> SimilarItems:
    """Up to `k` items most similar to an item (item-to-item cosine)."""
    _within_k_max(request.k)
    recommender = serving()
    if not recommender.knn.knows(request.item):
        raise ProblemError(
            404,
            "Item not found",
            f"No interaction with item {request.item!r} was learnt.",
            slug="item-not-found",
        )
    return SimilarItems(
        item=request.item,
        items=[
            SimilarItem(item=i, similarity=s)
            for i, s in recommender.similar(request.item, request.k)
        ],
        model_version=recommender.registry.current.version,
    )


@app.post("/v1/baskets/complete", response_model=BasketCompletion, tags=["recommender"])
async def complete_basket(request: BasketRequest) -> BasketCompletion:
    """Up to `k` items completing a basket, each with its best association rule."""
    _within_k_max(request.k)
    models = serving().registry.current
    suggestions = models.rules.complete_basket(request.items, request.k) if models.rules else []
    return BasketCompletion(
        items=request.items,
        suggestions=[
            BasketSuggestion(
                item=s.item,
                because=list(s.because),
                support=s.support,
                confidence=s.confidence,
                lift=s.lift,
            )
            for s in suggestions
        ],
        rules=len(models.rules) if models.rules is not None else 0,
        model_version=models.version,
    )


@app.post("/v1/users/interactions", response_model=UserInteractions, tags=["recommender"])
async def user_interactions(request: UserRequest) -> UserInteractions:
    """What was learnt of a user: items and summed weights (empty for an unknown user)."""
    seen = serving().store.seen(request.user)
    return UserInteractions(
        user=request.user,
        items=[UserItem(item=i, weight=w) for i, w in sorted(seen.items())],
    )


@app.get("/v1/model", response_model=ModelStatus, tags=["operations"])
async def model_status() -> ModelStatus:
    """The serving version, what it learnt from, the training state, the last snapshot and
    how the last retraining went (ok, cut short or failed, and why)."""
    return running().status()


@app.post("/v1/model/retrain", status_code=202, response_model=RetrainAccepted, tags=["operations"])
async def retrain() -> RetrainAccepted:
    """Retrain ALS and the rules now (or right after the retraining under way);
    `GET /v1/model` shows the new version once it serves."""
    return running().trigger()


# -- events --------------------------------------------------------------------------------
# A short wait: daprd's bulk subscriber holds at most the pub/sub component's messages in
# flight (16 in every profile: its concurrency or prefetch, docs/profiles.md), so a batch
# never reaches 100 and would otherwise always wait the whole window; ingestion runs at
# about 16 events per (wait + handling).
declare_subscriptions(
    app,
    [
        Subscription(
            PUBSUB,
            INTERACTIONS_RECORDED,
            "/events/interactions-recorded",
            bulk=Bulk(max_await_ms=settings.events_max_await_ms),
        )
    ],
)


@app.post("/events/interactions-recorded", include_in_schema=False)
async def on_interactions_recorded(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Learn interactions; malformed ones are dropped to the dead-letter topic."""
    statuses, valid = decode_deliveries(deliveries(body))
    if valid:
        outcome = await service.deliver(list(valid.values())) if service else Delivery.RETRY
        statuses.update(dict.fromkeys(valid, outcome))
    return delivery_response(statuses)
