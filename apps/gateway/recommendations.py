"""The gateway's recommendation routes: interactions in (as events), recommendations out.

`POST /v1/interactions` publishes `interactions.recorded` events and answers 202; the
recommender learns from them. The reads are forwarded to the recommender through Dapr
service invocation, with the same error mapping as every other route of the gateway.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel

from apps.gateway.settings import GatewaySettings
from consort.contracts.common import Problem
from consort.contracts.events import INTERACTIONS_RECORDED, topic
from consort.contracts.recommender import (
    K_DEFAULT,
    K_MAX,
    BasketCompletion,
    BasketRequest,
    Id,
    InteractionIn,
    InteractionRecorded,
    InteractionsAccepted,
    InteractionsSubmission,
    ModelStatus,
    RecommendationRequest,
    Recommendations,
    RetrainAccepted,
    SimilarItems,
    SimilarRequest,
    UserInteractions,
    UserRequest,
)
from consort.kit.dapr import Reply, Sidecar, SidecarError
from consort.kit.errors import unavailable


class Forward(Protocol):
    """The gateway's `forward`: invoke an app, map its failures to problems."""

    def __call__(
        self,
        sc: Sidecar,
        app_id: str,
        method: str,
        *,
        timeout_s: float | None = None,
        **request: Any,
    ) -> Awaitable[Reply]: ...


K_DESCRIPTION = f"How many items, 1 to {K_MAX}."


def event_id(interaction: InteractionIn) -> str:
    """The CloudEvent id of an interaction: the client's id; else, when the client gave the
    time, a hash of the content (the same interaction sent again is the same event); else
    a random one."""
    if interaction.id is not None:
        return interaction.id
    if interaction.time is None:
        return uuid.uuid4().hex
    content = interaction.model_dump(mode="json", exclude={"id"})
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"interaction-{digest[:32]}"


def router(
    *,
    sidecar: Callable[[], Sidecar],
    forward: Forward,
    settings: GatewaySettings,
    responses: dict[int | str, dict[str, Any]],
) -> APIRouter:
    """The routes, bound to the gateway's sidecar, `forward` and settings."""
    routes = APIRouter(prefix="/v1", responses=responses)
    app_id = settings.recommender_app_id
    recorded = topic(INTERACTIONS_RECORDED)
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": Problem, "description": "No interaction with this item was learnt."}
    }

    async def call(method: str, payload: BaseModel) -> Any:
        reply = await forward(sidecar(), app_id, method, json=payload.model_dump(mode="json"))
        return reply.json()

    @routes.post(
        "/interactions",
        status_code=202,
        response_model=InteractionsAccepted,
        tags=["recommendations"],
        responses={202: {"description": "Published: the recommender learns them in moments."}},
    )
    async def record_interactions(submission: InteractionsSubmission) -> InteractionsAccepted:
        """Record up to 1,000 interactions (view, add-to-cart, purchase) for the recommender.

        Each becomes an `interactions.recorded` event; its id (given, derived, or random)
        makes it count once however often it is sent.
        """
        sc = sidecar()
        now = datetime.now(UTC)
        ids = [event_id(i) for i in submission.interactions]
        # An id given twice is one event: the last one sent with it is published.
        events = {
            i: InteractionRecorded(
                user=x.user, item=x.item, kind=x.kind, weight=x.weight, time=x.time or now
            )
            for i, x in zip(ids, submission.interactions, strict=True)
        }
        try:
            failed = await sc.publish_bulk(
                settings.pubsub_name,
                INTERACTIONS_RECORDED,
                {i: data.model_dump(mode="json") for i, data in events.items()},
                source=settings.app_id,
                event_type=recorded.event_type,
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

    @routes.get(
        "/recommendations/{user:path}", response_model=Recommendations, tags=["recommendations"]
    )
    async def recommendations(
        user: Annotated[Id, PathParam(description="The user id (unknown: cold start).")],
        k: Annotated[int, Query(ge=1, le=K_MAX, description=K_DESCRIPTION)] = K_DEFAULT,
        include_seen: Annotated[
            bool, Query(description="Also recommend items the user already interacted with.")
        ] = False,
    ) -> Any:
        """Up to `k` items for a user, best first, each with why it was chosen (`reason`,
        `because`). A user without interactions gets popular items (`cold_start`)."""
        return await call(
            "v1/recommend", RecommendationRequest(user=user, k=k, include_seen=include_seen)
        )

    @routes.get(
        "/items/{item:path}/similar",
        response_model=SimilarItems,
        tags=["recommendations"],
        responses=not_found,
    )
    async def similar_items(
        item: Annotated[Id, PathParam(description="The item id.")],
        k: Annotated[int, Query(ge=1, le=K_MAX, description=K_DESCRIPTION)] = K_DEFAULT,
    ) -> Any:
        """Up to `k` items most similar to an item (cosine of who interacted with them)."""
        return await call("v1/similar", SimilarRequest(item=item, k=k))

    @routes.post("/baskets/complete", response_model=BasketCompletion, tags=["recommendations"])
    async def complete_basket(request: BasketRequest) -> Any:
        """Items that complete a partial basket, from association rules, each with its rule's
        support, confidence and lift."""
        return await call("v1/baskets/complete", request)

    @routes.get(
        "/users/{user:path}/interactions", response_model=UserInteractions, tags=["recommendations"]
    )
    async def user_interactions(user: Annotated[Id, PathParam(description="The user id.")]) -> Any:
        """What the recommender learnt of a user: items and summed weights."""
        return await call("v1/users/interactions", UserRequest(user=user))

    @routes.get("/ops/recommender/model", response_model=ModelStatus, tags=["operations"])
    async def recommender_model() -> Any:
        """The recommender's serving model version, what it learnt from, its last snapshot."""
        reply = await forward(sidecar(), app_id, "v1/model", http_method="GET")
        return reply.json()

    @routes.post(
        "/ops/recommender/retrain",
        status_code=202,
        response_model=RetrainAccepted,
        tags=["operations"],
    )
    async def retrain_recommender() -> Any:
        """Retrain the recommender's ALS and rules now (beside the serving ones); poll
        `GET /v1/ops/recommender/model` for the new version."""
        reply = await forward(sidecar(), app_id, "v1/model/retrain")
        return reply.json()

    return routes
