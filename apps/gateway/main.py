"""The gateway: Consort's public, versioned REST API. Transport only.

It validates requests against the shared contracts, reaches the AI services through Dapr
service invocation, and keeps read models fed by events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from functools import reduce
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile

from apps.gateway import metrics, recommendations, workflows
from apps.gateway.calls import (
    ERRORS,
    SidecarDep,
    call_service,
    forward,
    install_passthrough,
    kit,
    settings,
    sidecar,
)
from apps.gateway.review_join import joined
from apps.gateway.stats import TextStats, apply_event
from consort.contracts.analysis import TextAnalysis, aspect_sentiments
from consort.contracts.catalog import Catalog, CatalogEntry, ServiceInfo
from consort.contracts.common import FieldProblem, Problem
from consort.contracts.events import (
    PUBSUB,
    REVIEWS_ENTITIES_EXTRACTED,
    REVIEWS_SENTIMENT_SCORED,
    REVIEWS_SUBMITTED,
    TEXTS_ANALYZED,
    TOPICS,
    TextsAnalyzed,
    dead_letter,
)
from consort.contracts.forecast import ForecastRequest, ForecastResponse
from consort.contracts.nlp import NlpRequest, NlpResult
from consort.contracts.reviews import (
    REVIEW_ID_PATTERN,
    ReviewAnalysis,
    ReviewEntitiesExtracted,
    ReviewsAccepted,
    ReviewSentimentScored,
    ReviewsSubmission,
    ReviewStatus,
    ReviewSubmitted,
)
from consort.contracts.sentiment import (
    MAX_TEXT_CHARS,
    SentimentBatchRequest,
    SentimentBatchResult,
    SentimentRequest,
    SentimentResult,
    Text,
)
from consort.contracts.vision import (
    IMAGE_MEDIA_TYPES,
    MAX_IMAGE_BYTES,
    FaceModel,
    Feature,
    ImageAnalysis,
)
from consort.kit.dapr import UNCHANGED, EtagMismatch, SidecarError, TargetUnavailable
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.events import (
    AlreadyApplied,
    Bulk,
    CloudEvent,
    Delivery,
    Subscription,
    apply_once,
    declare_subscriptions,
    deliveries,
    delivery,
    delivery_response,
    fold_delivery,
    read_tracked,
)
from consort.kit.service import create_app

log = logging.getLogger("gateway")

STATS_KEY = "text-stats"
DEAD_LETTERS_KEY = "dead-letters:{topic}"

app = create_app(
    kit,
    title="Consort API",
    description=(
        "The public API of Consort: AI services behind one versioned REST interface. "
        "Every error is `application/problem+json` with the field, the limit and a trace id."
    ),
    docs_url="/docs",
)

install_passthrough(app)

v1 = APIRouter(prefix="/v1", responses=ERRORS)


@v1.post("/text/sentiment", response_model=SentimentResult, tags=["text"])
async def text_sentiment(request: SentimentRequest, sc: SidecarDep) -> Any:
    """Sentiment of one text: compound score (-1 to 1), label and per-sentence scores.

    The label uses VADER's published thresholds: positive at compound >= 0.05,
    negative at <= -0.05, neutral between.
    """
    return await call_service(sc, settings.sentiment_app_id, "v1/sentiment", request)


@v1.post("/text/sentiment/batch", response_model=SentimentBatchResult, tags=["text"])
async def text_sentiment_batch(request: SentimentBatchRequest, sc: SidecarDep) -> Any:
    """Sentiment of up to 64 texts in one call, in the order given."""
    return await call_service(sc, settings.sentiment_app_id, "v1/sentiment/batch", request)


class AnalyzeRequest(BaseModel):
    """One text for every language service."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description=f"The text, 1 to {MAX_TEXT_CHARS} characters.")
    tokens: bool = Field(default=False, description="Also return every token (lemma, POS).")


@v1.post("/text/nlp", response_model=NlpResult, tags=["text"])
async def text_nlp(request: AnalyzeRequest, sc: SidecarDep) -> Any:
    """Sentences, entities, noun chunks and keyphrases of one text (tokens on request)."""
    return await call_service(
        sc, settings.nlp_app_id, "v1/nlp", NlpRequest(text=request.text, tokens=request.tokens)
    )


@v1.post("/text/analyze", response_model=TextAnalysis, tags=["text"])
async def text_analyze(request: AnalyzeRequest, sc: SidecarDep) -> TextAnalysis:
    """Entities, noun chunks, keyphrases, sentiment and aspect sentiment of one text.

    nlp and sentiment are called in parallel, so this takes about as long as the slower.
    """
    nlp, sentiment = await asyncio.gather(
        call_service(
            sc, settings.nlp_app_id, "v1/nlp", NlpRequest(text=request.text, tokens=request.tokens)
        ),
        call_service(
            sc, settings.sentiment_app_id, "v1/sentiment", SentimentRequest(text=request.text)
        ),
    )
    nlp_result = NlpResult.model_validate(nlp)
    sentiment_result = SentimentResult.model_validate(sentiment)
    return TextAnalysis(
        nlp=nlp_result,
        sentiment=sentiment_result,
        aspects=aspect_sentiments(nlp_result, sentiment_result),
    )


@v1.get("/text/stats", response_model=TextStats, tags=["text"])
async def text_stats(sc: SidecarDep) -> TextStats:
    """How many texts were analyzed, by label and model (fed by `texts.analyzed` events)."""
    return await read_tracked(sc, settings.statestore_name, STATS_KEY, TextStats) or TextStats()


class DeadLetter(BaseModel):
    """An event its consumer could not handle, as the dead-letter topic received it."""

    id: str
    topic: str
    received_at: datetime
    event: dict[str, Any]


class DeadLetters(BaseModel):
    topic: str
    dead_letters: list[DeadLetter]


@v1.get("/ops/dead-letters/{topic}", response_model=DeadLetters, tags=["operations"])
async def list_dead_letters(
    topic: Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9.-]{0,99}$")], sc: SidecarDep
) -> DeadLetters:
    """The most recent events of `topic` that went to its dead-letter topic."""
    key = DEAD_LETTERS_KEY.format(topic=topic)
    stored = await read_tracked(sc, settings.statestore_name, key, DeadLetters)
    return stored or DeadLetters(topic=topic, dead_letters=[])


@v1.get("/catalog", response_model=Catalog, tags=["operations"])
async def catalog(sc: SidecarDep) -> Catalog:
    """Every service, its version, models, routes and topics, read from the running system.

    Each service describes itself (`/info`, reached through Dapr) with what its own sidecar
    reports through the metadata API: runtime version, components, subscriptions.
    """

    async def entry(app_id: str) -> CatalogEntry:
        try:
            response = await sc.invoke(
                app_id, "info", http_method="GET", timeout_s=settings.catalog_timeout_s
            )
        except TargetUnavailable as exc:
            return CatalogEntry(app_id=app_id, status="unreachable", detail=str(exc))
        if response.status != 200:
            return CatalogEntry(
                app_id=app_id, status="unreachable", detail=f"/info answered {response.status}"
            )
        return CatalogEntry(
            app_id=app_id, status="available", info=ServiceInfo.model_validate(response.json())
        )

    return Catalog(services=list(await asyncio.gather(*map(entry, settings.catalog_apps))))


IMAGE_BODY = {
    "required": True,
    "content": {
        **{
            media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_MEDIA_TYPES
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
    },
}


async def read_image(request: Request) -> tuple[bytes, str]:
    """The uploaded image and its media type: the raw body (Content-Type: image/...), or
    the `image` field of a multipart form."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5)
        upload = form.get("image")
        if not isinstance(upload, StarletteUploadFile):
            raise invalid_field(
                "body.image", "is required", detail="The multipart form has no file field `image`."
            )
        data = await upload.read()
        content_type = (upload.content_type or "").lower()
    elif content_type in IMAGE_MEDIA_TYPES:
        data = await request.body()
    else:
        raise ProblemError(
            415,
            "Unsupported media type",
            "Send the image as the body with Content-Type "
            f"{', '.join(IMAGE_MEDIA_TYPES)}, or as the multipart field `image`; "
            f"not {content_type or 'no Content-Type'!r}.",
            slug="unsupported-media-type",
        )
    if len(data) > MAX_IMAGE_BYTES:
        raise ProblemError(
            413,
            "Image too large",
            f"The image must be at most {MAX_IMAGE_BYTES} bytes; it has {len(data)}.",
            slug="image-too-large",
            errors=[
                FieldProblem(
                    field="body.image",
                    message=f"must be at most {MAX_IMAGE_BYTES} bytes",
                    limit=MAX_IMAGE_BYTES,
                )
            ],
        )
    return data, content_type


def parse_features(features: str) -> list[Feature]:
    names = [f.strip() for f in features.split(",") if f.strip()]
    allowed = ", ".join(f.value for f in Feature)
    unknown = [n for n in names if n not in {f.value for f in Feature}]
    if unknown or not names:
        raise invalid_field(
            "query.features",
            f"must list some of: {allowed}",
            detail=f"query.features must list some of: {allowed}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
        )
    return [Feature(n) for n in dict.fromkeys(names)]


@v1.post(
    "/images/analyze",
    response_model=ImageAnalysis,
    tags=["images"],
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def analyze_image(
    request: Request,
    sc: SidecarDep,
    features: Annotated[
        str, Query(description="Comma-separated: faces, text, quality.")
    ] = "faces,text,quality",
    face_model: Annotated[FaceModel, Query(description="Face detector.")] = FaceModel.BLAZEFACE,
) -> Any:
    """Faces (BlazeFace or Haar), text lines (PP-OCR) and quality of one JPEG, PNG or WebP
    image of at most 4 MiB and 40 megapixels."""
    wanted = parse_features(features)
    data, media_type = await read_image(request)
    reply = await forward(
        sc,
        settings.vision_app_id,
        "v1/images/analyze",
        data=data,
        params={"features": ",".join(wanted), "face_model": face_model.value},
        headers={"content-type": media_type},
        timeout_s=settings.vision_timeout_s,
    )
    return reply.json()


@v1.post(
    "/images/redact",
    tags=["images"],
    openapi_extra={"requestBody": IMAGE_BODY},
    response_class=Response,
    responses={
        200: {
            "content": {m: {} for m in IMAGE_MEDIA_TYPES},
            "description": "The image, faces blurred.",
        }
    },
)
async def redact_image(
    request: Request,
    sc: SidecarDep,
    face_model: Annotated[FaceModel, Query(description="Face detector.")] = FaceModel.BLAZEFACE,
) -> Response:
    """The same image with every detected face blurred (privacy redaction), in its format.
    `x-faces-redacted` says how many faces were blurred."""
    data, media_type = await read_image(request)
    reply = await forward(
        sc,
        settings.vision_app_id,
        "v1/images/redact",
        data=data,
        params={"face_model": face_model.value},
        headers={"content-type": media_type},
        timeout_s=settings.vision_timeout_s,
    )
    return Response(
        reply.body,
        media_type=reply.content_type,
        headers={"x-faces-redacted": reply.headers.get("x-faces-redacted", "0")},
    )


@v1.post("/forecasts", response_model=ForecastResponse, tags=["forecasts"])
async def create_forecasts(request: ForecastRequest, sc: SidecarDep) -> Any:
    """Point forecasts with prediction intervals (80 and 95 % by default) for up to 100
    series: ETS (automatic selection), Theta, ARIMA, or their combination (`auto`)."""
    reply = await forward(
        sc,
        settings.forecast_app_id,
        "v1/forecasts",
        json=request.model_dump(mode="json"),
        timeout_s=settings.forecast_timeout_s,
    )
    return reply.json()


REVIEW_KEY = "review:{id}"
REVIEW_TTL_S = 30 * 24 * 3600


@v1.post(
    "/reviews",
    status_code=202,
    response_model=ReviewsAccepted,
    tags=["reviews"],
    responses={202: {"description": "Accepted: poll `GET /v1/reviews/{id}` for each id."}},
)
async def submit_reviews(submission: ReviewsSubmission, sc: SidecarDep) -> ReviewsAccepted:
    """Accept up to 100 reviews for analysis by nlp and sentiment, over events.

    Answers at once with the review ids. A review submitted again with the same `id` is
    not analyzed twice once complete; while pending, it is queued again.
    """
    now = datetime.now(UTC)
    reviews = {r.id or uuid.uuid4().hex: r for r in submission.reviews}
    keys = {REVIEW_KEY.format(id=i): i for i in reviews}
    stored = {
        keys[item.key]: ReviewAnalysis.model_validate(item.value)
        for item in await sc.get_bulk_state(settings.statestore_name, list(keys))
    }
    fresh = {i: r for i, r in reviews.items() if i not in stored}
    if fresh:
        await sc.save_states(
            settings.statestore_name,
            {
                REVIEW_KEY.format(id=i): ReviewAnalysis(
                    id=i, status=ReviewStatus.PENDING, product=r.product, submitted_at=now
                ).model_dump(mode="json")
                for i, r in fresh.items()
            },
            ttl_s=REVIEW_TTL_S,
        )
    # Also those stored but still pending: a submission whose publish failed (or whose
    # gateway crashed) before. Publishing again is safe: the event id is the same, and
    # the join ignores what it already has.
    to_queue = {
        i: r for i, r in reviews.items() if i in fresh or stored[i].status is ReviewStatus.PENDING
    }
    outcomes = await asyncio.gather(
        *(
            sc.publish_event(
                settings.pubsub_name,
                REVIEWS_SUBMITTED,
                ReviewSubmitted(
                    review_id=i,
                    text=r.text,
                    product=r.product,
                    submitted_at=stored[i].submitted_at if i in stored else now,
                ),
                event_id=f"{i}:submitted",
                source=settings.app_id,
            )
            for i, r in to_queue.items()
        ),
        return_exceptions=True,
    )
    failed = [i for i, o in zip(to_queue, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise unavailable(
            "Reviews not queued",
            f"{len(failed)} of {len(to_queue)} reviews could not be queued; submit them again "
            f"with these ids (resubmission is idempotent): {', '.join(failed)}",
            slug="reviews-not-queued",
            retry_after_s=2,
        )
    return ReviewsAccepted(ids=list(reviews))


@v1.get(
    "/reviews/{review_id}",
    response_model=ReviewAnalysis,
    tags=["reviews"],
    responses={404: {"model": Problem, "description": "No review with this id."}},
)
async def get_review(
    review_id: Annotated[str, PathParam(pattern=REVIEW_ID_PATTERN)], sc: SidecarDep
) -> ReviewAnalysis:
    """A review's analysis: `pending` until nlp and sentiment both reported, then `complete`."""
    item = await sc.get_state(settings.statestore_name, REVIEW_KEY.format(id=review_id))
    if item is None:
        raise ProblemError(404, "Review not found", f"No review has the id {review_id!r}.")
    return ReviewAnalysis.model_validate(item.value)


app.include_router(v1)
app.include_router(metrics.router)
metrics.install_events(app)
app.include_router(workflows.router)
app.include_router(
    recommendations.router(sidecar=sidecar, forward=forward, settings=settings, responses=ERRORS)
)

# -- events ------------------------------------------------------------------------------
declare_subscriptions(
    app,
    [
        # In bulk: one compare-and-set of the stats per batch, not one per event.
        Subscription(PUBSUB, TEXTS_ANALYZED, "/events/texts-analyzed", bulk=Bulk()),
        Subscription(PUBSUB, REVIEWS_ENTITIES_EXTRACTED, "/events/review-results", bulk=Bulk()),
        Subscription(PUBSUB, REVIEWS_SENTIMENT_SCORED, "/events/review-results", bulk=Bulk()),
        *metrics.SUBSCRIPTIONS,
        # Operators list every topic's dead letters through /v1/ops/dead-letters/{topic}.
        *(
            Subscription(PUBSUB, dead_letter(t), "/events/dead-letters", with_dead_letter=False)
            for t in sorted({t.name for t in TOPICS})
        ),
    ],
)


@app.post("/events/texts-analyzed", include_in_schema=False)
async def on_texts_analyzed(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    return await fold_delivery(
        body,
        sidecar=kit.sidecar,
        store=settings.statestore_name,
        topic=TEXTS_ANALYZED,
        payload=TextsAnalyzed,
        key=STATS_KEY,
        model=TextStats,
        update=lambda stats, fresh: reduce(apply_event, fresh, stats or TextStats()),
        log=log,
    )


@app.post("/events/review-results", include_in_schema=False)
async def on_review_results(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Join nlp's and sentiment's results per review id into one stored analysis."""

    async def handle(raw: Any) -> Delivery:
        try:
            event = CloudEvent.model_validate(raw)
            result: ReviewEntitiesExtracted | ReviewSentimentScored
            if event.topic == REVIEWS_ENTITIES_EXTRACTED:
                result = ReviewEntitiesExtracted.model_validate(event.data)
            else:
                result = ReviewSentimentScored.model_validate(event.data)
        except ValidationError as exc:
            log.error("poison review result, dropped to dead letter: %s", exc)
            return Delivery.DROP
        try:
            await join_review(result)
        except (EtagMismatch, SidecarError) as exc:
            log.warning("review %s not joined yet, will be redelivered: %s", result.review_id, exc)
            return Delivery.RETRY
        return Delivery.SUCCESS

    entries = deliveries(body)
    outcomes = await asyncio.gather(*(handle(raw) for _, raw in entries))
    return delivery_response({e: o for (e, _), o in zip(entries, outcomes, strict=True)})


async def join_review(result: ReviewEntitiesExtracted | ReviewSentimentScored) -> None:
    """Add one service's result to its review; complete it when both are in. Idempotent:
    a result already present is left as it is, and a review completes once."""

    def change(value: Any | None) -> Any:
        current = ReviewAnalysis.model_validate(value) if value is not None else None
        review = joined(current, result, datetime.now(UTC))
        return UNCHANGED if review is None else review.model_dump(mode="json")

    value, changed = await kit.sidecar.update_state(
        settings.statestore_name,
        REVIEW_KEY.format(id=result.review_id),
        change,
        metadata={"ttlInSeconds": str(REVIEW_TTL_S)},
    )
    if changed and value is not None and value["status"] == ReviewStatus.COMPLETE.value:
        log.info("review %s complete", result.review_id)


@app.post("/events/dead-letters", include_in_schema=False)
async def on_dead_letter(envelope: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    topic = str(envelope.get("topic", "")).removesuffix(".dead-letter") or "unknown"
    letter = DeadLetter(
        id=str(envelope.get("id", "")),
        topic=topic,
        received_at=datetime.now(UTC),
        event=envelope,
    )

    def keep(current: DeadLetters | None) -> DeadLetters:
        letters = current.dead_letters if current else []
        return DeadLetters(
            topic=topic, dead_letters=[letter, *letters][: settings.dead_letters_kept]
        )

    try:
        await apply_once(
            kit.sidecar,
            settings.statestore_name,
            event_id=f"dead-letter:{topic}:{letter.id or uuid.uuid4()}",
            key=DEAD_LETTERS_KEY.format(topic=topic),
            model=DeadLetters,
            update=keep,
        )
    except AlreadyApplied:
        pass
    except (EtagMismatch, SidecarError) as exc:
        log.warning("dead letter %s not stored yet: %s", letter.id, exc)
        return delivery(Delivery.RETRY)
    return delivery(Delivery.SUCCESS)
