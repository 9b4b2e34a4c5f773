"""The search service's HTTP contract, as a FastAPI app that only describes it.

The service itself is the Rust binary built from this folder (`src/`); it has no Python
code to import. This app declares its routes with the contract's models
(`consort.contracts.search`) so that `make contracts` generates
`contracts/openapi/search.json` the same way as for every other app, the governance
gate (`make contracts-check`) covers it, and the integration tests validate the Rust
service's answers against that document. Its handlers are never served.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi import Query as QueryParam

from consort.contracts.catalog import ServiceInfo
from consort.contracts.common import Problem
from consort.contracts.events import PUBSUB, REVIEWS_SUBMITTED, dead_letter
from consort.contracts.search import (
    COLLECTION_PATTERN,
    DOCUMENT_ID_PATTERN,
    MAX_K,
    CollectionInfo,
    DocumentsIn,
    DocumentsIndexed,
    EmbeddingsRequest,
    EmbeddingsResult,
    QueryRequest,
    QueryResult,
    SimilarResult,
)

PROBLEM_JSON = "application/problem+json"

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in {
        400: "The body is not valid JSON.",
        401: "The request did not come from this app's own sidecar (no `dapr-api-token`).",
        413: "The body is over the size limit.",
        415: "The body is not JSON.",
        422: "A field breaks the contract; `errors` names each one and its limit.",
        503: "The model is loading or the state store is unreachable; retry after `Retry-After`.",
    }.items()
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "No such collection."}
}
READ_ONLY: dict[int | str, dict[str, Any]] = {
    409: {
        "model": Problem,
        "content": {PROBLEM_JSON: {}},
        "description": "The `reviews` collection is written by events only.",
    }
}

Name = Annotated[str, PathParam(pattern=COLLECTION_PATTERN, description="The collection.")]
DocId = Annotated[str, PathParam(pattern=DOCUMENT_ID_PATTERN, description="The document id.")]

app = FastAPI(
    title="search",
    version="0.1.0",
    description=(
        "Sentence embeddings (all-MiniLM-L6-v2) and semantic search over collections kept "
        "in the state store. Served by a Rust binary (axum, candle) beside its Dapr sidecar."
    ),
)


def _served_by_rust() -> NoReturn:
    raise NotImplementedError("served by the Rust binary in apps/search/")


@app.post("/v1/embeddings", response_model=EmbeddingsResult, responses=ERRORS)
async def embeddings(request: EmbeddingsRequest) -> Any:
    """One unit vector (384 numbers) per text, in order."""
    _served_by_rust()


@app.get("/v1/collections/{name}", response_model=CollectionInfo, responses={**ERRORS, **NOT_FOUND})
async def get_collection(name: Name) -> Any:
    """How many documents a collection holds."""
    _served_by_rust()


@app.delete(
    "/v1/collections/{name}",
    status_code=204,
    responses={**ERRORS, **NOT_FOUND, **READ_ONLY},
)
async def delete_collection(name: Name) -> None:
    """Remove a collection and all its documents."""
    _served_by_rust()


@app.post(
    "/v1/collections/{name}/documents",
    response_model=DocumentsIndexed,
    responses={
        201: {"model": DocumentsIndexed, "description": "Indexed into a new collection."},
        **ERRORS,
        **READ_ONLY,
    },
)
async def index_documents(name: Name, request: DocumentsIn) -> Any:
    """Index documents (the same id again replaces it); the collection is made if new."""
    _served_by_rust()


@app.delete(
    "/v1/collections/{name}/documents/{id}",
    status_code=204,
    responses={**ERRORS, **NOT_FOUND, **READ_ONLY},
)
async def delete_document(name: Name, id: DocId) -> None:
    """Remove one document."""
    _served_by_rust()


@app.post(
    "/v1/collections/{name}/query",
    response_model=QueryResult,
    responses={**ERRORS, **NOT_FOUND},
)
async def query(name: Name, request: QueryRequest) -> Any:
    """The `k` documents nearest to a text, best first, optionally filtered by metadata."""
    _served_by_rust()


@app.get(
    "/v1/collections/{name}/documents/{id}/similar",
    response_model=SimilarResult,
    responses={**ERRORS, **NOT_FOUND},
)
async def similar(
    name: Name,
    id: DocId,
    k: Annotated[int, QueryParam(ge=1, le=MAX_K)] = 5,
    min_score: Annotated[float | None, QueryParam(ge=-1, le=1)] = None,
) -> Any:
    """The documents nearest to one document of the collection (not itself)."""
    _served_by_rust()


@app.get("/dapr/subscribe", include_in_schema=False)
async def dapr_subscribe() -> list[dict[str, Any]]:
    """What the Rust service answers daprd (`src/events.rs`; a test compares the two), for
    the deployment renderer, which reads each app's subscriptions from its code."""
    return [
        {
            "pubsubname": PUBSUB,
            "topic": REVIEWS_SUBMITTED,
            "routes": {"default": "/events/reviews-submitted"},
            "deadLetterTopic": dead_letter(REVIEWS_SUBMITTED),
            "bulkSubscribe": {"enabled": True, "maxMessagesCount": 32, "maxAwaitDurationMs": 20},
        }
    ]


@app.get("/healthz", tags=["health"], summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    _served_by_rust()


@app.get(
    "/readyz",
    tags=["health"],
    summary="Readiness: model loaded, index loaded and sidecar reachable",
    responses={503: {"description": "Not ready; the body says what is missing."}},
)
async def readyz() -> dict[str, Any]:
    _served_by_rust()


@app.get(
    "/info",
    tags=["health"],
    summary="What this service is: version, models, routes, topics, sidecar",
    response_model=ServiceInfo,
)
async def info() -> Any:
    _served_by_rust()
