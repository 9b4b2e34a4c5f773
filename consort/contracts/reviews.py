"""The review pipeline's contract: submissions, the events between services, the analysis.

    POST /v1/reviews -> reviews.submitted -> nlp      -> reviews.entities-extracted -\\
                                          -> sentiment -> reviews.sentiment-scored  --> review:<id>

Each result event's id is `<review id>:<stage>`, the same on every redelivery, so the join
(and any other consumer) sees a repeated result as the same event.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from consort.contracts.analysis import AspectSentiment
from consort.contracts.nlp import NlpResult
from consort.contracts.sentiment import SentimentResult, Text

#: Most reviews in one submission.
MAX_REVIEWS = 100
#: Review ids: what a client may choose (letters, digits, `-`, `_`, `.`), 1 to 64 characters.
REVIEW_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ReviewIn(BaseModel):
    """One review as a client submits it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        pattern=REVIEW_ID_PATTERN,
        description="Your id for the review (makes resubmission idempotent); else one is made.",
    )
    text: Text
    product: str | None = Field(default=None, max_length=200)


class ReviewsSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviews: list[ReviewIn] = Field(min_length=1, max_length=MAX_REVIEWS)


class ReviewsAccepted(BaseModel):
    """The reviews were accepted: their analysis follows at `GET /v1/reviews/{id}`."""

    ids: list[str]


class ReviewStatus(StrEnum):
    PENDING = "pending"
    COMPLETE = "complete"


class ReviewAnalysis(BaseModel):
    """A review and, once both services reported, its joined analysis."""

    id: str
    status: ReviewStatus
    product: str | None = None
    submitted_at: datetime
    completed_at: datetime | None = None
    entities: NlpResult | None = None
    sentiment: SentimentResult | None = None
    aspects: list[AspectSentiment] | None = None


# -- events ----------------------------------------------------------------------------------
class ReviewSubmitted(BaseModel):
    """Data of `reviews.submitted`."""

    review_id: str = Field(pattern=REVIEW_ID_PATTERN)
    text: Text
    product: str | None = None
    submitted_at: datetime


class ReviewEntitiesExtracted(BaseModel):
    """Data of `reviews.entities-extracted`: the nlp result of one review."""

    review_id: str = Field(pattern=REVIEW_ID_PATTERN)
    nlp: NlpResult


class ReviewSentimentScored(BaseModel):
    """Data of `reviews.sentiment-scored`: the sentiment of one review."""

    review_id: str = Field(pattern=REVIEW_ID_PATTERN)
    sentiment: SentimentResult
