"""Review routes: submit reviews for analysis over events, read each one's analysis.

`POST /v1/reviews` stores each review as pending and publishes `reviews.submitted`; nlp
and sentiment answer with events, which `apps.gateway.events` joins into the review.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam

from apps.gateway.calls import SidecarDep, settings
from apps.gateway.edge import requires
from apps.gateway.read_models import REVIEW_KEY, REVIEW_TTL_S
from consort.contracts.common import Problem
from consort.contracts.events import REVIEWS_SUBMITTED
from consort.contracts.reviews import (
    REVIEW_ID_PATTERN,
    ReviewAnalysis,
    ReviewsAccepted,
    ReviewsSubmission,
    ReviewStatus,
    ReviewSubmitted,
)
from consort.kit.errors import ProblemError, unavailable

router = APIRouter(prefix="/reviews", tags=["reviews"], dependencies=[requires("text")])


@router.post(
    "",
    status_code=202,
    response_model=ReviewsAccepted,
    responses={202: {"description": "Accepted: poll `GET /v1/reviews/{id}` for each id."}},
)
async def submit_reviews(submission: ReviewsSubmission, sc: SidecarDep) -> ReviewsAccepted:
    """Accept up to 100 reviews for analysis by nlp and sentiment, over events.

    Answers at once with the review ids. A review submitted again with the same `id` is
    not analyzed twice once complete; while pending, it is queued again.
    """
    now = datetime.now(UTC)
    reviews = {r.id or uuid.uuid4().hex: r for r in submission.reviews}
    keys = {REVIEW_KEY.format(id=i): i for i in reviews}
    stored = {
        keys[item.key]: ReviewAnalysis.model_validate(item.value)
        for item in await sc.get_bulk_state(settings.statestore_name, list(keys))
    }
    fresh = {i: r for i, r in reviews.items() if i not in stored}
    if fresh:
        await sc.save_states(
            settings.statestore_name,
            {
                REVIEW_KEY.format(id=i): ReviewAnalysis(
                    id=i, status=ReviewStatus.PENDING, product=r.product, submitted_at=now
                ).model_dump(mode="json")
                for i, r in fresh.items()
            },
            ttl_s=REVIEW_TTL_S,
        )
    # Also those stored but still pending: a submission whose publish failed (or whose
    # gateway crashed) before. Publishing again is safe: the event id is the same, and
    # the join ignores what it already has.
    to_queue = {
        i: r for i, r in reviews.items() if i in fresh or stored[i].status is ReviewStatus.PENDING
    }
    outcomes = await asyncio.gather(
        *(
            sc.publish_event(
                settings.pubsub_name,
                REVIEWS_SUBMITTED,
                ReviewSubmitted(
                    review_id=i,
                    text=r.text,
                    product=r.product,
                    submitted_at=stored[i].submitted_at if i in stored else now,
                ),
                event_id=f"{i}:submitted",
                source=settings.app_id,
            )
            for i, r in to_queue.items()
        ),
        return_exceptions=True,
    )
    failed = [i for i, o in zip(to_queue, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise unavailable(
            "Reviews not queued",
            f"{len(failed)} of {len(to_queue)} reviews could not be queued; submit them again "
            f"with these ids (resubmission is idempotent): {', '.join(failed)}",
            slug="reviews-not-queued",
            retry_after_s=2,
        )
    return ReviewsAccepted(ids=list(reviews))


@router.get(
    "/{review_id}",
    response_model=ReviewAnalysis,
    responses={404: {"model": Problem, "description": "No review with this id."}},
)
async def get_review(
    review_id: Annotated[str, PathParam(pattern=REVIEW_ID_PATTERN)], sc: SidecarDep
) -> ReviewAnalysis:
    """A review's analysis: `pending` until nlp and sentiment both reported, then `complete`."""
    item = await sc.get_state(settings.statestore_name, REVIEW_KEY.format(id=review_id))
    if item is None:
        raise ProblemError(404, "Review not found", f"No review has the id {review_id!r}.")
    return ReviewAnalysis.model_validate(item.value)
