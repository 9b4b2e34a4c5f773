"""Recommendation routes: interactions in (as events), recommendations out.

`POST /v1/interactions` publishes `interactions.recorded` events and answers 202; the
recommender learns from them. The reads are forwarded to the recommender through Dapr
service invocation. Its model's status and retraining are operations
(`apps.gateway.routes.operations`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel

from apps.gateway import coalesced
from apps.gateway.calls import SidecarDep, json_body, relay, settings
from apps.gateway.edge import requires
from apps.gateway.interactions import recorded
from consort.contracts.common import Problem
from consort.contracts.events import INTERACTIONS_RECORDED, topic
from consort.contracts.recommender import (
    K_DEFAULT,
    K_MAX,
    BasketCompletion,
    BasketRequest,
    Id,
    InteractionsAccepted,
    InteractionsSubmission,
    RecommendationRequest,
    Recommendations,
    SimilarItems,
    SimilarRequest,
    UserInteractions,
    UserRequest,
)
from consort.kit.dapr import Sidecar, SidecarError
from consort.kit.errors import unavailable

router = APIRouter(tags=["recommendations"], dependencies=[requires("recommendations")])

K = Annotated[int, Query(ge=1, le=K_MAX, description=f"How many items, 1 to {K_MAX}.")]
NOT_LEARNT: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No interaction with this item was learnt."}
}


async def call_recommender(sc: Sidecar, method: str, payload: BaseModel) -> Response:
    """Invoke the recommender's `method` with `payload` as JSON; its JSON answer, as it came."""
    return await relay(sc, settings.recommender_app_id, method, payload)


@router.post(
    "/interactions",
    status_code=202,
    response_model=InteractionsAccepted,
    responses={202: {"description": "Published: the recommender learns them in moments."}},
)
async def record_interactions(
    submission: InteractionsSubmission, sc: SidecarDep
) -> InteractionsAccepted:
    """Record up to 1,000 interactions (view, add-to-cart, purchase) for the recommender.

    Each becomes an `interactions.recorded` event; its id (given, derived, or random)
    makes it count once however often it is sent.
    """
    ids, events = recorded(submission.interactions, datetime.now(UTC))
    try:
        failed = await sc.publish_bulk(
            settings.pubsub_name,
            INTERACTIONS_RECORDED,
            {i: data.model_dump(mode="json") for i, data in events.items()},
            source=settings.app_id,
            event_type=topic(INTERACTIONS_RECORDED).event_type,
        )
    except SidecarError:
        failed = list(events)
    if failed:
        raise unavailable(
            "Interactions not recorded",
            f"{len(failed)} of {len(events)} interactions could not be published; send them "
            f"again with these ids (resending is idempotent): {', '.join(failed[:20])}",
            slug="interactions-not-recorded",
            retry_after_s=2,
        )
    return InteractionsAccepted(ids=ids)


@router.get("/recommendations/{user:path}", response_model=Recommendations)
async def recommendations(
    user: Annotated[Id, PathParam(description="The user id (unknown: cold start).")],
    k: K = K_DEFAULT,
    include_seen: Annotated[
        bool, Query(description="Also recommend items the user already interacted with.")
    ] = False,
) -> Any:
    """Up to `k` items for a user, best first, each with why it was chosen (`reason`,
    `because`). A user without interactions gets popular items (`cold_start`)."""
    asked = RecommendationRequest(user=user, k=k, include_seen=include_seen)
    return json_body(await coalesced.recommend(asked))


@router.get("/items/{item:path}/similar", response_model=SimilarItems, responses=NOT_LEARNT)
async def similar_items(
    item: Annotated[Id, PathParam(description="The item id.")], sc: SidecarDep, k: K = K_DEFAULT
) -> Any:
    """Up to `k` items most similar to an item (cosine of who interacted with them)."""
    return await call_recommender(sc, "v1/similar", SimilarRequest(item=item, k=k))


@router.post("/baskets/complete", response_model=BasketCompletion)
async def complete_basket(request: BasketRequest, sc: SidecarDep) -> Any:
    """Items that complete a partial basket, from association rules, each with its rule's
    support, confidence and lift."""
    return await call_recommender(sc, "v1/baskets/complete", request)


@router.get("/users/{user:path}/interactions", response_model=UserInteractions)
async def user_interactions(
    user: Annotated[Id, PathParam(description="The user id.")], sc: SidecarDep
) -> Any:
    """What the recommender learnt of a user: items and summed weights."""
    return await call_recommender(sc, "v1/users/interactions", UserRequest(user=user))
