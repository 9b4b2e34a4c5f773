"""Text routes: sentiment, linguistic analysis, both together, and the text stats."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from apps.gateway import coalesced
from apps.gateway.calls import SidecarDep, json_body, relay, settings
from apps.gateway.edge import requires
from apps.gateway.read_models import STATS_KEY
from consort.contracts.analysis import TextAnalysis, aspect_sentiments
from consort.contracts.gateway import AnalyzeRequest, TextStats
from consort.contracts.nlp import NlpResult
from consort.contracts.sentiment import (
    SentimentBatchRequest,
    SentimentBatchResult,
    SentimentRequest,
    SentimentResult,
)
from consort.kit.events import read_tracked

router = APIRouter(prefix="/text", tags=["text"], dependencies=[requires("text")])


@router.post("/sentiment", response_model=SentimentResult)
async def text_sentiment(request: SentimentRequest) -> Any:
    """Sentiment of one text: compound score (-1 to 1), label and per-sentence scores.

    The label uses VADER's published thresholds: positive at compound >= 0.05,
    negative at <= -0.05, neutral between.
    """
    return json_body(await coalesced.sentiment(request.text))


@router.post("/sentiment/batch", response_model=SentimentBatchResult)
async def text_sentiment_batch(request: SentimentBatchRequest, sc: SidecarDep) -> Any:
    """Sentiment of up to 64 texts in one call, in the order given."""
    return await relay(sc, settings.sentiment_app_id, "v1/sentiment/batch", request)


@router.post("/nlp", response_model=NlpResult)
async def text_nlp(request: AnalyzeRequest) -> Any:
    """Sentences, entities, noun chunks and keyphrases of one text (tokens on request)."""
    return json_body(await coalesced.nlp[request.tokens](request.text))


@router.post("/analyze", response_model=TextAnalysis)
async def text_analyze(request: AnalyzeRequest) -> Response:
    """Entities, noun chunks, keyphrases, sentiment and aspect sentiment of one text.

    nlp and sentiment are called in parallel, so this takes about as long as the slower.
    """
    nlp, sentiment = await asyncio.gather(
        coalesced.nlp[request.tokens](request.text), coalesced.sentiment(request.text)
    )
    nlp_result = NlpResult.model_validate_json(nlp)
    sentiment_result = SentimentResult.model_validate_json(sentiment)
    analysis = TextAnalysis(
        nlp=nlp_result,
        sentiment=sentiment_result,
        aspects=aspect_sentiments(nlp_result, sentiment_result),
    )
    # Built here from validated parts: FastAPI would validate it again on the way out.
    return json_body(analysis.model_dump_json().encode())


@router.get("/stats", response_model=TextStats)
async def text_stats(sc: SidecarDep) -> TextStats:
    """How many texts were analyzed, by label and model (fed by `texts.analyzed` events)."""
    return await read_tracked(sc, settings.statestore_name, STATS_KEY, TextStats) or TextStats()
