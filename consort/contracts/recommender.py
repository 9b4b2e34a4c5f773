"""The recommender's contract: interactions in, recommendations, similar items and basket
completions out, and the `interactions.recorded` event between the gateway and the service.

    POST /v1/interactions -> interactions.recorded -> recommender (learns; idempotent by id)
    GET  /v1/recommendations/{user}, GET /v1/items/{item}/similar, POST /v1/baskets/complete

User and item ids are opaque strings of 1 to `MAX_ID_CHARS` characters without control
characters (slashes are allowed: `whipped/sour cream` is a Groceries item).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

#: Longest user or item id.
MAX_ID_CHARS = 200
#: Event ids a client may choose: letters, digits, `-`, `_`, `.`, `:`, 1 to 128 characters.
EVENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
#: Most interactions in one `POST /v1/interactions`.
MAX_INTERACTIONS = 1000
#: Most items `k` may ask for.
K_MAX = 100
#: Items returned when `k` is not given.
K_DEFAULT = 10
#: Most items in a basket to complete.
MAX_BASKET = 100
#: Most requests in one batch call to the recommender.
MAX_RECOMMEND_BATCH = 64
#: Largest weight one interaction may carry.
MAX_WEIGHT = 1_000_000.0


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


#: A user or item id.
Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(_no_control_characters),
]
#: How many items to return.
K = Annotated[int, Field(ge=1, le=K_MAX, description=f"How many items, 1 to {K_MAX}.")]


class InteractionKind(StrEnum):
    """What a user did with an item. Each kind has a default weight (view 1, add-to-cart 3,
    purchase 5; `RECOMMENDER_WEIGHT_*`) used when the interaction carries none."""

    VIEW = "view"
    ADD_TO_CART = "add-to-cart"
    PURCHASE = "purchase"


#: How much one interaction counts (NaN and infinity fail the bounds).
Weight = Annotated[float, Field(gt=0, le=MAX_WEIGHT)]
WEIGHT_DESCRIPTION = f"How much it counts, above 0 and at most {MAX_WEIGHT:g}; absent: the kind's."


# -- the event -----------------------------------------------------------------------------
class InteractionRecorded(BaseModel):
    """Data of `interactions.recorded`: one thing a user did with an item.

    The CloudEvent id is the idempotency key: the recommender applies an id once, however
    often it is delivered (also across restarts).
    """

    model_config = ConfigDict(extra="ignore")

    user: Id
    item: Id
    kind: InteractionKind
    weight: Weight | None = Field(default=None, description=WEIGHT_DESCRIPTION)
    time: datetime = Field(description="When it happened (with a time zone).")

    @field_validator("time")
    @classmethod
    def _aware(cls, time: datetime) -> datetime:
        if time.tzinfo is None:
            raise ValueError("must carry a time zone")
        return time


# -- POST /v1/interactions -----------------------------------------------------------------
class InteractionIn(BaseModel):
    """One interaction as a client sends it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        pattern=EVENT_ID_PATTERN,
        description=(
            "Your id for the interaction, unique across producers (makes resending "
            "idempotent). Absent: derived from the content when `time` is given, else random."
        ),
    )
    user: Id
    item: Id
    kind: InteractionKind = InteractionKind.VIEW
    weight: Weight | None = Field(default=None, description=WEIGHT_DESCRIPTION)
    time: datetime | None = Field(
        default=None, description="When it happened (with a time zone); absent: now."
    )

    @field_validator("time")
    @classmethod
    def _aware(cls, time: datetime | None) -> datetime | None:
        if time is not None and time.tzinfo is None:
            raise ValueError("must carry a time zone")
        return time


class InteractionsSubmission(BaseModel):
    """One or more interactions (a batch of one is one)."""

    model_config = ConfigDict(extra="forbid")

    interactions: list[InteractionIn] = Field(min_length=1, max_length=MAX_INTERACTIONS)


class InteractionsAccepted(BaseModel):
    """The interactions were published: the recommender learns them within moments."""

    ids: list[str] = Field(description="The event id of each interaction, in order.")


# -- recommendations -----------------------------------------------------------------------
class Reason(StrEnum):
    """Why an item was recommended."""

    POPULAR = "popular"
    ITEM_KNN = "item-knn"
    ALS = "als"
    HYBRID = "hybrid"


class RecommendationRequest(BaseModel):
    """What the gateway asks the recommender for one user."""

    model_config = ConfigDict(extra="forbid")

    user: Id
    k: K = K_DEFAULT
    include_seen: bool = False


class RecommendationBatchRequest(BaseModel):
    """Several users' requests in one call (the gateway's coalesced concurrent requests)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendationRequest] = Field(
        min_length=1,
        max_length=MAX_RECOMMEND_BATCH,
        description=f"1 to {MAX_RECOMMEND_BATCH} requests, each answered as by /v1/recommend.",
    )


class RecommendedItem(BaseModel):
    """One recommended item and why it was chosen."""

    item: str
    score: float = Field(description="Higher is better; comparable within one response only.")
    reason: Reason = Field(
        description="`als` (matrix factorisation), `item-knn` (items like the user's), "
        "`hybrid` (both), `popular` (cold start, or filling a short list)."
    )
    because: list[str] = Field(
        default_factory=list,
        description="The user's items that led to this one, strongest first.",
    )


class Recommendations(BaseModel):
    """Items for one user, best first."""

    user: str
    items: list[RecommendedItem]
    cold_start: bool = Field(description="The user has no interactions: popular items.")
    model_version: int = Field(description="The serving model set (0: none trained yet).")


class RecommendationBatchResult(BaseModel):
    """The answers to a batch of requests, in the order given."""

    results: list[Recommendations]


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: Id
    k: K = K_DEFAULT


class SimilarItem(BaseModel):
    item: str
    similarity: float = Field(description="Cosine similarity of the items' user columns, 0..1.")
    reason: Reason = Reason.ITEM_KNN


class SimilarItems(BaseModel):
    """Items most similar to one item (item-to-item cosine, updated with every event)."""

    item: str
    items: list[SimilarItem]
    model_version: int


class BasketRequest(BaseModel):
    """A partial basket to complete from association rules."""

    model_config = ConfigDict(extra="forbid")

    items: list[Id] = Field(min_length=1, max_length=MAX_BASKET)
    k: K = K_DEFAULT


class BasketSuggestion(BaseModel):
    """An item that completes the basket, and the best rule `because => {item}`."""

    item: str
    because: list[str] = Field(description="The rule's antecedent: basket items leading here.")
    support: float = Field(description="Share of baskets holding the rule's items.")
    confidence: float = Field(description="Share of baskets with `because` that hold `item`.")
    lift: float = Field(description="Confidence over the item's own support (> 1: related).")


class BasketCompletion(BaseModel):
    items: list[str]
    suggestions: list[BasketSuggestion]
    rules: int = Field(description="Rules in the serving set (0 before the first training).")
    model_version: int


class UserItem(BaseModel):
    item: str
    weight: float = Field(description="The sum of the weights of the user's interactions.")


class UserInteractions(BaseModel):
    """What the recommender has learnt of one user: items and summed weights."""

    user: str
    items: list[UserItem]


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: Id


# -- operations ----------------------------------------------------------------------------
class SnapshotInfo(BaseModel):
    """A model snapshot in the state store."""

    version: int
    key: str = Field(description="`model:recommender:<version>`: the manifest of its chunks.")
    bytes: int
    chunks: int
    saved_at: datetime


class AlsInfo(BaseModel):
    factors: int
    regularization: float
    alpha: float
    iterations: int
    users: int
    items: int


class TrainingOutcome(StrEnum):
    """How a retraining ended."""

    OK = "ok"
    CUT_SHORT = "cut-short"
    FAILED = "failed"


class TrainedPart(StrEnum):
    """A part of the serving models a retraining refreshes."""

    ALS = "als"
    RULES = "rules"


class TrainingReport(BaseModel):
    """How the last retraining went: what it refreshed, and why not everything."""

    outcome: TrainingOutcome = Field(
        description="ok; cut-short: the rule mining reached a limit, and its partial rules "
        "serve; failed: a part (or the whole run) failed, and what it would have refreshed "
        "stays as it was."
    )
    reason: str | None = Field(
        default=None, description="Why the outcome is not ok (the limit or the error)."
    )
    version: int | None = Field(
        default=None, description="The version it installed (None: nothing installed)."
    )
    started_at: datetime
    duration_s: float
    refreshed: list[TrainedPart] = Field(
        description="The parts now serving from this run; the others are the earlier ones."
    )
    rules_mined: int | None = Field(
        default=None, description="Association rules the run mined (None: none mined)."
    )


class ModelStatus(BaseModel):
    """The recommender's serving models and what they learnt from."""

    version: int = Field(description="The serving model set (0: none trained yet).")
    trained_at: datetime | None
    training: bool = Field(description="A training is under way beside the serving models.")
    events: int = Field(description="Distinct interaction events applied.")
    events_since_training: int = Field(
        description="Events applied since the serving models were trained (the item-to-item "
        "model has them already; ALS and the rules get them at the next training)."
    )
    users: int
    items: int
    als: AlsInfo | None
    rules: int | None = Field(description="Association rules in the serving set.")
    last_training_s: float | None
    restored: bool = Field(description="The models were loaded from a snapshot at start-up.")
    snapshot: SnapshotInfo | None = Field(description="The latest snapshot persisted.")
    retrain_interval_s: float
    last_training: TrainingReport | None = Field(
        default=None, description="The last retraining since start-up (None: none yet)."
    )


class RetrainAccepted(BaseModel):
    """A retraining was asked for: it starts now, or right after the one under way."""

    serving_version: int
    next_version: int = Field(
        description="The version of the first models trained on what was learnt by now."
    )
    started: bool = Field(description="False: it runs after the retraining under way.")
