"""The nlp service: transport only. Analysis lives in `analyzer`, batching in `batching`.

Requests that arrive within a few milliseconds of each other are analyzed together with
spaCy's `nlp.pipe` (micro-batching, bounded by NLP_BATCH_MAX_SIZE and
NLP_BATCH_MAX_WAIT_MS). Reviews arrive as `reviews.submitted` events; their analysis
leaves as `reviews.entities-extracted`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from apps.nlp.analyzer import NlpAnalyzer
from apps.nlp.batching import MicroBatcher
from apps.nlp.settings import NlpSettings
from consort.contracts.events import PUBSUB, REVIEWS_ENTITIES_EXTRACTED, REVIEWS_SUBMITTED
from consort.contracts.nlp import NlpBatchRequest, NlpBatchResult, NlpRequest, NlpResult
from consort.contracts.reviews import ReviewEntitiesExtracted, ReviewSubmitted
from consort.kit.events import Bulk, Subscription, declare_subscriptions, relay
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("nlp")
tracer = get_tracer("nlp")
settings = NlpSettings()
kit = ServiceKit(settings, version="1.0.0")
analyzer_slot = kit.load_model(
    settings.pipeline,
    lambda: NlpAnalyzer(
        settings.pipeline,
        batch_size=settings.batch_max_size,
        max_keyphrases=settings.keyphrases_max,
    ),
)


def _process(items: list[tuple[str, bool]]) -> list[NlpResult]:
    analyzer = analyzer_slot.get()
    return analyzer.analyze_many([text for text, _ in items], [tokens for _, tokens in items])


def _record_batch(size: int, seconds: float) -> None:
    analyzer = analyzer_slot.loaded
    model = f"{analyzer.model.name}@{analyzer.model.version}" if analyzer else settings.pipeline
    kit.metrics.inference.labels(model).observe(seconds)
    kit.metrics.batch_size.labels(model).observe(size)


batcher: MicroBatcher[tuple[str, bool], NlpResult] = MicroBatcher(
    _process,
    max_size=settings.batch_max_size,
    max_wait_ms=settings.batch_max_wait_ms,
    on_batch=_record_batch,
)
kit.metrics.queue_depth.set_function(lambda: batcher.queue_depth)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with batcher:
        yield


app = create_app(
    kit,
    title="Consort nlp",
    description="Sentences, entities, noun chunks, keyphrases (spaCy), micro-batched.",
    lifespan=lifespan,
)


async def analyze(texts: list[str], tokens: bool) -> list[NlpResult]:
    """Analyze texts through the micro-batcher (they may share batches with others)."""
    analyzer_slot.get()  # 503 while the pipeline loads
    with tracer.start_as_current_span("model.infer", attributes={"items": len(texts)}):
        return list(await asyncio.gather(*(batcher.submit((t, tokens)) for t in texts)))


@app.post("/v1/nlp", response_model=NlpResult, tags=["nlp"])
async def analyze_text(request: NlpRequest) -> NlpResult:
    """Sentences, entities, noun chunks and keyphrases of one text (tokens on request)."""
    (result,) = await analyze([request.text], request.tokens)
    return result


@app.post("/v1/nlp/batch", response_model=NlpBatchResult, tags=["nlp"])
async def analyze_batch(request: NlpBatchRequest) -> NlpBatchResult:
    """The analysis of several texts, in the order given."""
    results = await analyze(request.texts, request.tokens)
    return NlpBatchResult(results=results, model=analyzer_slot.get().model)


# -- the review pipeline ----------------------------------------------------------------------
declare_subscriptions(
    app, [Subscription(PUBSUB, REVIEWS_SUBMITTED, "/events/reviews-submitted", bulk=Bulk())]
)


@app.post("/events/reviews-submitted", include_in_schema=False)
async def on_reviews_submitted(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Analyze submitted reviews and publish each result as `reviews.entities-extracted`.

    Idempotent: a redelivered review is analyzed again and its result published under the
    same event id, which the join treats as the same event.
    """

    async def work(reviews: list[ReviewSubmitted]) -> list[NlpResult]:
        return await analyze([r.text for r in reviews], tokens=False)

    async def publish(review: ReviewSubmitted, result: NlpResult) -> str:
        return await kit.sidecar.publish_event(
            settings.pubsub_name,
            REVIEWS_ENTITIES_EXTRACTED,
            ReviewEntitiesExtracted(review_id=review.review_id, nlp=result),
            event_id=f"{review.review_id}:entities",
            source=settings.app_id,
        )

    # daprd delivers as soon as the app is alive, maybe before the model has loaded.
    await analyzer_slot.wait()
    return await relay(body, payload=ReviewSubmitted, work=work, publish=publish, log=log)
