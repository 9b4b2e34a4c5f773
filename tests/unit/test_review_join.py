"""The review read model's join (pure): results in either order, redeliveries, completion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apps.gateway.review_join import joined
from apps.sentiment.analyzer import SentimentAnalyzer
from consort.contracts.reviews import (
    ReviewAnalysis,
    ReviewEntitiesExtracted,
    ReviewSentimentScored,
    ReviewStatus,
)
from tests.unit.test_aspects import TEXT, nlp_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENTITIES = ReviewEntitiesExtracted(review_id="r1", nlp=nlp_of(TEXT))
SENTIMENT = ReviewSentimentScored(review_id="r1", sentiment=SentimentAnalyzer().analyze(TEXT))


def pending() -> ReviewAnalysis:
    return ReviewAnalysis(id="r1", status=ReviewStatus.PENDING, product="p", submitted_at=T0)


def test_both_results_complete_the_review_in_either_order() -> None:
    later = T0 + timedelta(seconds=3)
    for first, second in ((ENTITIES, SENTIMENT), (SENTIMENT, ENTITIES)):
        half = joined(pending(), first, T0 + timedelta(seconds=1))
        assert half is not None and half.status is ReviewStatus.PENDING
        assert half.aspects is None
        done = joined(half, second, later)
        assert done is not None
        assert done.status is ReviewStatus.COMPLETE and done.completed_at == later
        assert [a.aspect for a in done.aspects or []] == ["battery", "screen", "Apple"]
        assert done.product == "p" and done.submitted_at == T0


def test_a_redelivered_result_changes_nothing() -> None:
    half = joined(pending(), ENTITIES, T0)
    assert half is not None
    assert joined(half, ENTITIES, T0 + timedelta(seconds=9)) is None
    done = joined(half, SENTIMENT, T0)
    assert done is not None
    assert joined(done, SENTIMENT, T0) is None and joined(done, ENTITIES, T0) is None


def test_a_review_of_another_producer_starts_pending_now() -> None:
    review = joined(None, SENTIMENT, T0)
    assert review is not None
    assert (review.id, review.status, review.submitted_at) == ("r1", ReviewStatus.PENDING, T0)


def test_the_stored_review_is_left_alone() -> None:
    stored = pending()
    joined(stored, ENTITIES, T0)
    assert stored.entities is None
