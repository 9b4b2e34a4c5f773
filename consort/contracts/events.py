"""Event payloads and topic names. Events travel as CloudEvents on the `pubsub` component.

Topics are named `<subject>.<past verb>`; poison messages go to `<topic>.dead-letter`.
Each event's CloudEvent `id` is the idempotency key consumers use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from consort.contracts.anomaly import (
    ANOMALIES_DETECTED,
    METRICS_OBSERVED,
    AnomaliesDetected,
    MetricsObserved,
)
from consort.contracts.cases import (
    CASES_CLOSED,
    CASES_ESCALATED,
    CASES_OPENED,
    CaseClosed,
    CaseEscalated,
    CaseOpened,
)
from consort.contracts.common import ModelInfo
from consort.contracts.recommender import InteractionRecorded
from consort.contracts.reviews import (
    ReviewEntitiesExtracted,
    ReviewSentimentScored,
    ReviewSubmitted,
)
from consort.contracts.search import ReviewDuplicateSuspected
from consort.contracts.sentiment import SentimentLabel
from consort.contracts.vision import ImagesAnalyzed
from consort.contracts.workflows import FORECASTS_PUBLISHED, SeriesOutlook

PUBSUB = "pubsub"
TEXTS_ANALYZED = "texts.analyzed"
REVIEWS_SUBMITTED = "reviews.submitted"
REVIEWS_ENTITIES_EXTRACTED = "reviews.entities-extracted"
REVIEWS_SENTIMENT_SCORED = "reviews.sentiment-scored"
IMAGES_ANALYZED = "images.analyzed"
INTERACTIONS_RECORDED = "interactions.recorded"
REVIEWS_DUPLICATE_SUSPECTED = "reviews.duplicate-suspected"


def dead_letter(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return f"{topic}.dead-letter"


class TextsAnalyzed(BaseModel):
    """Data of a `texts.analyzed` event: one text was scored (the text itself is not sent)."""

    model_config = ConfigDict(extra="ignore")

    text_sha256: str = Field(min_length=64, max_length=64)
    chars: int = Field(ge=1)
    label: SentimentLabel
    compound: float = Field(ge=-1, le=1)
    cached: bool
    model: ModelInfo
    analyzed_at: datetime


@dataclass(frozen=True)
class Topic:
    """A topic's contract: its payload model and version, who publishes and who consumes.

    The CloudEvent `type` is `consort.<topic>.v<version>`; a breaking change to the payload
    ships as a new version (a new type, consumed side by side), never in place.
    """

    name: str
    payload: type[BaseModel]
    version: int
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    description: str

    @property
    def event_type(self) -> str:
        return f"consort.{self.name}.v{self.version}"


#: Every topic of the system. Producers and consumers use these names and models.
TOPICS: tuple[Topic, ...] = (
    Topic(
        name=TEXTS_ANALYZED,
        payload=TextsAnalyzed,
        version=1,
        publishers=("sentiment",),
        subscribers=("gateway",),
        description="A text was scored for sentiment (its hash, label and score; not the text).",
    ),
    Topic(
        name=REVIEWS_SUBMITTED,
        payload=ReviewSubmitted,
        version=1,
        publishers=("gateway",),
        subscribers=("nlp", "sentiment", "search"),
        description="A review was accepted for analysis.",
    ),
    Topic(
        name=REVIEWS_ENTITIES_EXTRACTED,
        payload=ReviewEntitiesExtracted,
        version=1,
        publishers=("nlp",),
        subscribers=("gateway",),
        description="The nlp result of one review (sentences, entities, noun chunks, keyphrases).",
    ),
    Topic(
        name=REVIEWS_SENTIMENT_SCORED,
        payload=ReviewSentimentScored,
        version=1,
        publishers=("sentiment",),
        subscribers=("gateway",),
        description="The sentiment of one review (document, sentences, clauses).",
    ),
    Topic(
        name=IMAGES_ANALYZED,
        payload=ImagesAnalyzed,
        version=1,
        publishers=("vision",),
        subscribers=(),
        description="An image was analyzed (its hash, size, what was found; not the image).",
    ),
    Topic(
        name=METRICS_OBSERVED,
        payload=MetricsObserved,
        version=1,
        publishers=("gateway",),
        subscribers=("anomaly",),
        description="Points of one metric series (from the gateway or any producer), to be scored.",
    ),
    Topic(
        name=ANOMALIES_DETECTED,
        payload=AnomaliesDetected,
        version=1,
        publishers=("anomaly",),
        subscribers=("gateway", "orchestrator"),
        description="A point of a series was anomalous: its score, expected value and range.",
    ),
    Topic(
        name=CASES_OPENED,
        payload=CaseOpened,
        version=1,
        publishers=("orchestrator",),
        subscribers=(),
        description="A complaint opened a case that waits for a person's decision.",
    ),
    Topic(
        name=CASES_ESCALATED,
        payload=CaseEscalated,
        version=1,
        publishers=("orchestrator",),
        subscribers=(),
        description="Nobody decided on a case in time: it was escalated.",
    ),
    Topic(
        name=CASES_CLOSED,
        payload=CaseClosed,
        version=1,
        publishers=("orchestrator",),
        subscribers=(),
        description="A case was closed: approved, dismissed, expired, or failed.",
    ),
    Topic(
        name=FORECASTS_PUBLISHED,
        payload=SeriesOutlook,
        version=1,
        publishers=("orchestrator",),
        subscribers=(),
        description="A tracked series' forecast beside its recent anomaly scores, with alerts.",
    ),
    Topic(
        name=INTERACTIONS_RECORDED,
        payload=InteractionRecorded,
        version=1,
        publishers=("gateway",),
        subscribers=("recommender",),
        description="A user viewed, added to a cart or bought an item (the recommender learns).",
    ),
    Topic(
        name=REVIEWS_DUPLICATE_SUSPECTED,
        payload=ReviewDuplicateSuspected,
        version=1,
        publishers=("search",),
        subscribers=(),
        description="A new review is nearly the same in meaning as an earlier one (cosine "
        "at or above the search service's threshold).",
    ),
)


def topic(name: str) -> Topic:
    """The contract of topic `name`."""
    for t in TOPICS:
        if t.name == name:
            return t
    raise KeyError(name)
