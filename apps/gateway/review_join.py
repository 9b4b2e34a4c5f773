"""The review read model's join: one service's result added to its review (pure)."""

from __future__ import annotations

from datetime import datetime

from consort.contracts.analysis import aspect_sentiments
from consort.contracts.reviews import (
    ReviewAnalysis,
    ReviewEntitiesExtracted,
    ReviewSentimentScored,
    ReviewStatus,
)


def joined(
    review: ReviewAnalysis | None,
    result: ReviewEntitiesExtracted | ReviewSentimentScored,
    now: datetime,
) -> ReviewAnalysis | None:
    """The review with `result` added, complete once both results are in; None when the
    result is there already (a redelivery changes nothing).

    Args:
        review: the stored review; None for one published by another producer than the
            gateway, which starts pending now.
        result: nlp's entities or sentiment's scores for the review.
        now: the time to record as submitted (a new review) or completed.
    """
    review = (
        review.model_copy(deep=True)
        if review is not None
        else ReviewAnalysis(id=result.review_id, status=ReviewStatus.PENDING, submitted_at=now)
    )
    if isinstance(result, ReviewEntitiesExtracted):
        if review.entities is not None:
            return None
        review.entities = result.nlp
    else:
        if review.sentiment is not None:
            return None
        review.sentiment = result.sentiment
    if review.entities is not None and review.sentiment is not None:
        review.status = ReviewStatus.COMPLETE
        review.completed_at = now
        review.aspects = aspect_sentiments(review.entities, review.sentiment)
    return review
