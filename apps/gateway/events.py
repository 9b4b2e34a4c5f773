"""The gateway's event handlers: what it subscribes to, and how each delivery is handled.

Every subscription is in `SUBSCRIPTIONS` (served at `/dapr/subscribe` by `main`) and its
handler is a route of `router`, under `/events/`, outside the OpenAPI document. They keep
the read models of `apps.gateway.read_models` (and the review join of `review_join`):

    texts.analyzed                          -> text stats       (bulk: one write a batch)
    reviews.entities-extracted, -sentiment-scored -> review:<id> (the join)
    anomalies.detected                      -> recent anomalies (bulk)
    <every topic>.dead-letter               -> its dead letters
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from apps.gateway.calls import SidecarDep, log, settings
from apps.gateway.read_models import (
    DEAD_LETTERS_KEY,
    RECENT_ANOMALIES_KEY,
    REVIEW_KEY,
    REVIEW_TTL_S,
    STATS_KEY,
    counted,
    dead_letter_of,
    kept_anomalies,
    kept_dead_letters,
)
from apps.gateway.review_join import joined
from consort.contracts.anomaly import ANOMALIES_DETECTED, AnomaliesDetected
from consort.contracts.events import (
    PUBSUB,
    REVIEWS_ENTITIES_EXTRACTED,
    REVIEWS_SENTIMENT_SCORED,
    TEXTS_ANALYZED,
    TOPICS,
    TextsAnalyzed,
    dead_letter,
)
from consort.contracts.gateway import DeadLetters, RecentAnomalies, TextStats
from consort.contracts.reviews import (
    ReviewAnalysis,
    ReviewEntitiesExtracted,
    ReviewSentimentScored,
    ReviewStatus,
)
from consort.kit.dapr import UNCHANGED, EtagMismatch, Sidecar, SidecarError
from consort.kit.events import (
    AlreadyApplied,
    Bulk,
    CloudEvent,
    Delivery,
    Subscription,
    apply_once,
    deliveries,
    delivery,
    delivery_response,
    fold_delivery,
)

router = APIRouter(prefix="/events", include_in_schema=False)

SUBSCRIPTIONS = [
    # In bulk: one compare-and-set of the stats per batch, not one per event. One event
    # comes of every text any client sends, so batches are let fill for up to 250 ms: a
    # batch costs about 6 ms of CPU whatever its size (the stats' compare-and-set twice,
    # the markers), and at 20 ms the batches of ~8 events cost every cached sentiment
    # 0.7 ms in this app and its sidecar (bench/cost.py); the stats lag by as much more.
    Subscription(PUBSUB, TEXTS_ANALYZED, "/events/texts-analyzed", bulk=Bulk(max_await_ms=250)),
    Subscription(PUBSUB, REVIEWS_ENTITIES_EXTRACTED, "/events/review-results", bulk=Bulk()),
    Subscription(PUBSUB, REVIEWS_SENTIMENT_SCORED, "/events/review-results", bulk=Bulk()),
    Subscription(PUBSUB, ANOMALIES_DETECTED, "/events/anomalies-detected", bulk=Bulk()),
    # Operators list every topic's dead letters through /v1/ops/dead-letters/{topic}.
    *(
        Subscription(PUBSUB, dead_letter(t), "/events/dead-letters", with_dead_letter=False)
        for t in sorted({t.name for t in TOPICS})
    ),
]

ReviewResult = ReviewEntitiesExtracted | ReviewSentimentScored


@router.post("/texts-analyzed")
async def on_texts_analyzed(
    body: Annotated[dict[str, Any], Body()], sc: SidecarDep
) -> JSONResponse:
    """Count analyzed texts; a redelivered event is counted once."""
    return await fold_delivery(
        body,
        sidecar=sc,
        store=settings.statestore_name,
        topic=TEXTS_ANALYZED,
        payload=TextsAnalyzed,
        key=STATS_KEY,
        model=TextStats,
        update=counted,
        log=log,
    )


@router.post("/anomalies-detected")
async def on_anomalies_detected(
    body: Annotated[dict[str, Any], Body()], sc: SidecarDep
) -> JSONResponse:
    """Keep the most recent anomalies; a redelivered event is kept once."""
    return await fold_delivery(
        body,
        sidecar=sc,
        store=settings.statestore_name,
        topic=ANOMALIES_DETECTED,
        payload=AnomaliesDetected,
        key=RECENT_ANOMALIES_KEY,
        model=RecentAnomalies,
        update=partial(kept_anomalies, kept=settings.anomalies_kept),
        log=log,
    )


@router.post("/review-results")
async def on_review_results(
    body: Annotated[dict[str, Any], Body()], sc: SidecarDep
) -> JSONResponse:
    """Join nlp's and sentiment's results per review id into one stored analysis."""
    entries = deliveries(body)
    outcomes = await asyncio.gather(*(handle_review_result(sc, raw) for _, raw in entries))
    return delivery_response({e: o for (e, _), o in zip(entries, outcomes, strict=True)})


async def handle_review_result(sc: Sidecar, raw: Any) -> Delivery:
    """One delivered review result: joined, dropped (poison) or to be redelivered."""
    try:
        event = CloudEvent.model_validate(raw)
        result: ReviewResult
        if event.topic == REVIEWS_ENTITIES_EXTRACTED:
            result = ReviewEntitiesExtracted.model_validate(event.data)
        else:
            result = ReviewSentimentScored.model_validate(event.data)
    except ValidationError as exc:
        log.error("poison review result, dropped to dead letter: %s", exc)
        return Delivery.DROP
    try:
        await join_review(sc, result)
    except (EtagMismatch, SidecarError) as exc:
        log.warning("review %s not joined yet, will be redelivered: %s", result.review_id, exc)
        return Delivery.RETRY
    return Delivery.SUCCESS


async def join_review(sc: Sidecar, result: ReviewResult) -> None:
    """Add one service's result to its review; complete it when both are in. Idempotent:
    a result already present is left as it is, and a review completes once."""

    def change(value: Any | None) -> Any:
        current = ReviewAnalysis.model_validate(value) if value is not None else None
        review = joined(current, result, datetime.now(UTC))
        return UNCHANGED if review is None else review.model_dump(mode="json")

    value, changed = await sc.update_state(
        settings.statestore_name,
        REVIEW_KEY.format(id=result.review_id),
        change,
        metadata={"ttlInSeconds": str(REVIEW_TTL_S)},
    )
    if changed and value is not None and value["status"] == ReviewStatus.COMPLETE.value:
        log.info("review %s complete", result.review_id)


@router.post("/dead-letters")
async def on_dead_letter(
    envelope: Annotated[dict[str, Any], Body()], sc: SidecarDep
) -> JSONResponse:
    """Keep an event that went to a dead-letter topic, under the topic it failed on."""
    letter = dead_letter_of(envelope, datetime.now(UTC))
    try:
        await apply_once(
            sc,
            settings.statestore_name,
            event_id=f"dead-letter:{letter.topic}:{letter.id or uuid.uuid4()}",
            key=DEAD_LETTERS_KEY.format(topic=letter.topic),
            model=DeadLetters,
            update=partial(kept_dead_letters, letter=letter, kept=settings.dead_letters_kept),
        )
    except AlreadyApplied:
        pass
    except (EtagMismatch, SidecarError) as exc:
        log.warning("dead letter %s not stored yet: %s", letter.id, exc)
        return delivery(Delivery.RETRY)
    return delivery(Delivery.SUCCESS)
