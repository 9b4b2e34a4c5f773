"""The gateway's calls to AI services that concurrent requests share (`consort.kit.coalesce`):
sentiment and nlp of a text (`/v1/text/...`), and a user's recommendations.

Sixteen clients asking for the sentiment of a text at once cost sixteen invocations of the
sentiment service, each paying the gateway's HTTP client, two sidecars and the service's
HTTP server; coalesced, the ones that arrive while `coalesce_inflight` calls are already on
their way go together as one invocation of the batch route. A lone request still goes
alone by the single route, so at low load nothing changes, traces included.

Each item was validated against the single route's contract before it got here, and a batch
stays within the batch route's limits (items, and `coalesce_max_chars` of text so the body
stays far below the service's body limit); a batch the service refuses or fails on is sent
again an item at a time, so each caller gets its own answer. An unavailable service is
every caller's 503.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from apps.gateway.calls import _Passthrough, kit, send, settings
from consort.contracts.nlp import MAX_NLP_BATCH_TEXTS, NlpBatchRequest, NlpRequest
from consort.contracts.recommender import (
    MAX_RECOMMEND_BATCH,
    RecommendationBatchRequest,
    RecommendationRequest,
)
from consort.contracts.sentiment import MAX_BATCH_TEXTS, SentimentBatchRequest, SentimentRequest
from consort.kit.coalesce import Coalescer
from consort.kit.errors import ProblemError

# The callee's own word that it cannot serve anyone now (not ready, over its time budget or
# capacity), or the gateway's that it cannot reach it: no use sending each item again.
_EVERYONES = (429, 503)

Item = TypeVar("Item")


def _isolates(exc: BaseException) -> bool:
    status = exc.status if isinstance(exc, ProblemError | _Passthrough) else None
    return status not in _EVERYONES


def _split(body: bytes) -> list[bytes]:
    """A batch answer's `results`, each as the single route's JSON body."""
    return [json.dumps(r, separators=(",", ":")).encode() for r in json.loads(body)["results"]]


def _coalescer(
    app_id: str,
    single: str,
    batch: str,
    one: Callable[[Item], BaseModel],
    many: Callable[[list[Item]], BaseModel],
    max_items: int,
    weight: Callable[[Item], int] | None = None,
) -> Coalescer[Item, bytes]:
    """Items sent to `app_id`'s `single` route (as `one(item)`), coalesced into its `batch`
    route (as `many(items)`, answering `{"results": [...]}` in the same order)."""
    target = f"{app_id}/{single}"

    async def alone(item: Item) -> bytes:
        return (await send(kit.sidecar, app_id, single, one(item))).body

    async def together(items: list[Item]) -> list[bytes]:
        return _split((await send(kit.sidecar, app_id, batch, many(items))).body)

    return Coalescer(
        alone,
        together,
        max_items=max(1, min(settings.coalesce_max_items, max_items)),
        max_weight=settings.coalesce_max_chars if weight else None,
        weight=weight,
        max_inflight=settings.coalesce_inflight,
        isolates=_isolates,
        on_batch=kit.metrics.coalesced.labels(target).observe,
    )


# The items were validated by the gateway's own request models (the same limits), so the
# service's models are built without validating them a second time here.
sentiment: Coalescer[str, bytes] = _coalescer(
    settings.sentiment_app_id,
    "v1/sentiment",
    "v1/sentiment/batch",
    lambda text: SentimentRequest.model_construct(text=text),
    lambda texts: SentimentBatchRequest.model_construct(texts=texts),
    MAX_BATCH_TEXTS,
    weight=len,
)


def _nlp(tokens: bool) -> Coalescer[str, bytes]:
    return _coalescer(
        settings.nlp_app_id,
        "v1/nlp",
        "v1/nlp/batch",
        lambda text: NlpRequest.model_construct(text=text, tokens=tokens),
        lambda texts: NlpBatchRequest.model_construct(texts=texts, tokens=tokens),
        MAX_NLP_BATCH_TEXTS,
        weight=len,
    )


# One for each value of `tokens`: a batch asks for tokens for all its texts or for none.
nlp = {tokens: _nlp(tokens) for tokens in (False, True)}
recommend: Coalescer[RecommendationRequest, bytes] = _coalescer(
    settings.recommender_app_id,
    "v1/recommend",
    "v1/recommend/batch",
    lambda request: request,
    lambda requests: RecommendationBatchRequest.model_construct(requests=requests),
    MAX_RECOMMEND_BATCH,
)
