"""The sentiment service: transport only. Scoring lives in `analyzer`.

Results are cached in the state store under `sentiment:<model version>:<sha256 of text>`
(written in bulk within 100 ms of being computed; this process keeps its recent ones in
memory), and every result served through the API is announced as a `texts.analyzed` CloudEvent.
Reviews arrive as `reviews.submitted` events; their scores leave as
`reviews.sentiment-scored`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body
from fastapi.responses import JSONResponse

from apps.sentiment.analyzer import SentimentAnalyzer, text_sha256
from apps.sentiment.cache import ResultCache
from apps.sentiment.settings import SentimentSettings
from consort.contracts.events import (
    PUBSUB,
    REVIEWS_SENTIMENT_SCORED,
    REVIEWS_SUBMITTED,
    TEXTS_ANALYZED,
    TextsAnalyzed,
)
from consort.contracts.reviews import ReviewSentimentScored, ReviewSubmitted
from consort.contracts.sentiment import (
    SentimentBatchRequest,
    SentimentBatchResult,
    SentimentRequest,
    SentimentResult,
)
from consort.kit.dapr import SidecarError
from consort.kit.events import Bulk, Subscription, declare_subscriptions, relay
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("sentiment")
tracer = get_tracer("sentiment")
settings = SentimentSettings()
kit = ServiceKit(settings, version="1.0.0")
analyzer_slot = kit.load_model("vader", SentimentAnalyzer)
# Announcements leave in bulk, off the request path (at most 100 ms later).
announcements = kit.event_batcher(settings.pubsub_name, TEXTS_ANALYZED)
# Results are immutable per model version: the hottest stay in process, in front of the
# state store's shared cache.
recent: ResultCache[SentimentResult] = ResultCache(settings.local_cache_entries)
# Fresh results reach the store's shared cache in bulk, every 100 ms: a result costs VADER
# about 0.2 ms, and a store write of its own per request had cost more than that twice over
# (in this app and its sidecar); this process serves them from `recent` meanwhile.
stored = kit.state_write_behind(settings.statestore_name, ttl_s=settings.cache_ttl_s)


app = create_app(
    kit,
    title="Consort sentiment",
    description="Sentence and document sentiment (VADER). Reached through Dapr invocation.",
)


def _cache_key(version: str, sha: str) -> str:
    return f"sentiment:{version}:{sha}"


async def _score(texts: list[str], *, announce: bool = True) -> list[SentimentResult]:
    """Results for `texts`, from the cache where present, computed and cached otherwise;
    each result served is announced as `texts.analyzed` unless `announce` is False."""
    analyzer = analyzer_slot.get()
    keys = [_cache_key(analyzer.model.version, text_sha256(t)) for t in texts]
    cached: dict[str, SentimentResult] = recent.get_many(keys)
    missing = sorted(set(keys) - cached.keys())
    try:
        if missing:
            for item in await kit.sidecar.get_bulk_state(settings.statestore_name, missing):
                cached[item.key] = SentimentResult.model_validate(item.value)
                recent.put(item.key, cached[item.key])
    except SidecarError as exc:
        # The cache is an optimisation: without it the service still answers.
        log.warning("state store unavailable, scoring without cache: %s", exc)
    to_score = {k: t for t, k in zip(texts, keys, strict=True) if k not in cached}
    fresh: dict[str, SentimentResult] = {}
    if to_score:
        model = f"{analyzer.model.name}@{analyzer.model.version}"
        with (
            tracer.start_as_current_span(
                "model.infer", attributes={"model": model, "items": len(to_score)}
            ),
            kit.metrics.inferring(model, items=len(to_score)),
        ):
            fresh = {k: analyzer.analyze(t) for k, t in to_score.items()}
    results = [
        fresh[k] if k in fresh else cached[k].model_copy(update={"cached": True}) for k in keys
    ]
    if announce:
        _announce(texts, results)
    _cache(fresh)
    return results


def _cache(fresh: dict[str, SentimentResult]) -> None:
    for key, result in fresh.items():
        recent.put(key, result)
        stored.put(key, result.model_dump(mode="json"))


def _announce(texts: list[str], results: list[SentimentResult]) -> None:
    """Queue one `texts.analyzed` event per result served (published in bulk)."""
    now = datetime.now(UTC)
    for t, r in zip(texts, results, strict=True):
        announcements.add(
            TextsAnalyzed(
                text_sha256=r.text_sha256,
                chars=len(t),
                label=r.label,
                compound=r.compound,
                cached=r.cached,
                model=r.model,
                analyzed_at=now,
            )
        )


@app.post("/v1/sentiment", response_model=SentimentResult, tags=["sentiment"])
async def score_text(request: SentimentRequest) -> SentimentResult:
    """Sentiment of one text: compound score, label and per-sentence scores."""
    (result,) = await _score([request.text])
    return result


@app.post("/v1/sentiment/batch", response_model=SentimentBatchResult, tags=["sentiment"])
async def score_batch(request: SentimentBatchRequest) -> SentimentBatchResult:
    """Sentiment of several texts, in the order given."""
    results = await _score(request.texts)
    return SentimentBatchResult(results=results, model=analyzer_slot.get().model)


# -- the review pipeline ----------------------------------------------------------------------
declare_subscriptions(
    app, [Subscription(PUBSUB, REVIEWS_SUBMITTED, "/events/reviews-submitted", bulk=Bulk())]
)


@app.post("/events/reviews-submitted", include_in_schema=False)
async def on_reviews_submitted(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Score submitted reviews and publish each result as `reviews.sentiment-scored`.

    Idempotent: a redelivered review is scored again (from the cache) and its result
    published under the same event id, which the join treats as the same event.
    """

    async def work(reviews: list[ReviewSubmitted]) -> list[SentimentResult]:
        return await _score([r.text for r in reviews], announce=False)

    async def publish(review: ReviewSubmitted, result: SentimentResult) -> str:
        return await kit.sidecar.publish_event(
            settings.pubsub_name,
            REVIEWS_SENTIMENT_SCORED,
            ReviewSentimentScored(review_id=review.review_id, sentiment=result),
            event_id=f"{review.review_id}:sentiment",
            source=settings.app_id,
        )

    # daprd delivers as soon as the app is alive, maybe before the model has loaded.
    await analyzer_slot.wait()
    return await relay(body, payload=ReviewSubmitted, work=work, publish=publish, log=log)
