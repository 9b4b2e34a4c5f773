"""Search routes: embeddings, collections of documents, semantic queries, similar reviews.

The search service is the Rust app `search`; these routes validate with its contract
(`consort.contracts.search`) and forward through the sidecar like every other service.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.responses import JSONResponse

from apps.gateway.calls import SidecarDep, forward, settings
from apps.gateway.edge import requires
from consort.contracts.common import Problem
from consort.contracts.reviews import REVIEW_ID_PATTERN
from consort.contracts.search import (
    COLLECTION_PATTERN,
    DOCUMENT_ID_PATTERN,
    MAX_K,
    REVIEWS_COLLECTION,
    CollectionInfo,
    DocumentsIn,
    DocumentsIndexed,
    EmbeddingsRequest,
    EmbeddingsResult,
    QueryRequest,
    QueryResult,
    SimilarResult,
)

router = APIRouter(tags=["search"], dependencies=[requires("text")])

Name = Annotated[str, PathParam(pattern=COLLECTION_PATTERN, description="The collection.")]
DocId = Annotated[str, PathParam(pattern=DOCUMENT_ID_PATTERN, description="The document id.")]
K = Annotated[int, QueryParam(ge=1, le=MAX_K, description="How many matches, at most.")]
MinScore = Annotated[
    float | None, QueryParam(ge=-1, le=1, description="Only matches with at least this cosine.")
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such collection (or document)."}
}
READ_ONLY: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The `reviews` collection is written by events only."}
}


async def _call(sc: SidecarDep, method: str, **request: Any) -> Response:
    reply = await forward(
        sc, settings.search_app_id, method, timeout_s=settings.search_timeout_s, **request
    )
    if reply.status == 204:
        return Response(status_code=204)
    return JSONResponse(reply.json(), status_code=reply.status)


@router.post("/embeddings", response_model=EmbeddingsResult)
async def embeddings(request: EmbeddingsRequest, sc: SidecarDep) -> Any:
    """One unit vector per text (all-MiniLM-L6-v2, 384 numbers), in order.

    The cosine similarity of two texts is the dot product of their vectors.
    """
    return await _call(sc, "v1/embeddings", json=request.model_dump(mode="json"))


@router.get("/search/collections/{name}", response_model=CollectionInfo, responses=NOT_FOUND)
async def get_collection(name: Name, sc: SidecarDep) -> Any:
    """How many documents a collection holds."""
    return await _call(sc, f"v1/collections/{name}", http_method="GET")


@router.delete(
    "/search/collections/{name}",
    status_code=204,
    responses={**NOT_FOUND, **READ_ONLY},
)
async def delete_collection(name: Name, sc: SidecarDep) -> Response:
    """Remove a collection and all its documents."""
    return await _call(sc, f"v1/collections/{name}", http_method="DELETE")


@router.post(
    "/search/collections/{name}/documents",
    response_model=DocumentsIndexed,
    responses={
        201: {"model": DocumentsIndexed, "description": "Indexed into a new collection."},
        **READ_ONLY,
    },
)
async def index_documents(name: Name, request: DocumentsIn, sc: SidecarDep) -> Any:
    """Index up to 128 documents (text, your id, metadata); the same id again replaces it.

    The collection is made when it does not exist (201). Documents are kept in the state
    store: they survive a restart of the service.
    """
    return await _call(sc, f"v1/collections/{name}/documents", json=request.model_dump(mode="json"))


@router.delete(
    "/search/collections/{name}/documents/{id}",
    status_code=204,
    responses={**NOT_FOUND, **READ_ONLY},
)
async def delete_document(name: Name, id: DocId, sc: SidecarDep) -> Response:
    """Remove one document from a collection."""
    return await _call(sc, f"v1/collections/{name}/documents/{id}", http_method="DELETE")


@router.post("/search/collections/{name}/query", response_model=QueryResult, responses=NOT_FOUND)
async def query(name: Name, request: QueryRequest, sc: SidecarDep) -> Any:
    """The `k` documents nearest in meaning to a text, best first (cosine similarity).

    `filter` keeps documents whose metadata has each given value; `min_score` drops
    weaker matches.
    """
    return await _call(
        sc,
        f"v1/collections/{name}/query",
        json=request.model_dump(mode="json", exclude_none=True),
    )


@router.get(
    "/reviews/{review_id}/similar",
    response_model=SimilarResult,
    responses={404: {"model": Problem, "description": "No review with this id is indexed yet."}},
)
async def similar_reviews(
    review_id: Annotated[str, PathParam(pattern=REVIEW_ID_PATTERN)],
    sc: SidecarDep,
    k: K = 5,
    min_score: MinScore = None,
) -> Any:
    """Reviews most similar in meaning to one review (complaints about the same thing).

    Every review submitted with `POST /v1/reviews` is indexed by the search service from
    its `reviews.submitted` event, within a second or so.
    """
    params = {"k": str(k)} | ({"min_score": str(min_score)} if min_score is not None else {})
    return await _call(
        sc,
        f"v1/collections/{REVIEWS_COLLECTION}/documents/{review_id}/similar",
        http_method="GET",
        params=params,
    )
