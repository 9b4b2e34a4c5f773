"""The in-process monolith: `/v1/text/analyze` with both models in one FastAPI process.

The floor of bench/peer.py: no gateway, no sidecar, no network between the models. The
same route, request and response models as the gateway's, the same domain classes as the
nlp and sentiment apps with their default settings (spaCy behind the nlp app's
`MicroBatcher`: up to 16 texts, no wait; VADER called in the event loop as the sentiment
app calls it), and the same join (`aspect_sentiments`). No cache: every text is scored.

Served by `consort serve bench.peers.monolith:app` (the uvicorn settings of every app).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from apps.nlp.analyzer import NlpAnalyzer
from apps.nlp.batching import MicroBatcher
from apps.nlp.settings import NlpSettings
from apps.sentiment.analyzer import SentimentAnalyzer
from consort.contracts.analysis import TextAnalysis, aspect_sentiments
from consort.contracts.gateway import AnalyzeRequest
from consort.contracts.nlp import NlpResult

settings = NlpSettings()
nlp = NlpAnalyzer(
    settings.pipeline, batch_size=settings.batch_max_size, max_keyphrases=settings.keyphrases_max
)
sentiment = SentimentAnalyzer()


def _process(items: list[tuple[str, bool]]) -> list[NlpResult]:
    return nlp.analyze_many([text for text, _ in items], [tokens for _, tokens in items])


batcher: MicroBatcher[tuple[str, bool], NlpResult] = MicroBatcher(
    _process, max_size=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with batcher:
        yield


app = FastAPI(title="Consort text monolith (bench only)", lifespan=lifespan)


@app.post("/v1/text/analyze", response_model=TextAnalysis)
async def text_analyze(request: AnalyzeRequest) -> TextAnalysis:
    """nlp (in the batcher's thread) and sentiment (here) at once, then the join."""
    parsing = asyncio.ensure_future(batcher.submit((request.text, request.tokens)))
    sentiment_result = sentiment.analyze(request.text)
    nlp_result = await parsing
    return TextAnalysis(
        nlp=nlp_result,
        sentiment=sentiment_result,
        aspects=aspect_sentiments(nlp_result, sentiment_result),
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
