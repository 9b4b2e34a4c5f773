"""Event payloads and topic names. Events travel as CloudEvents on the `pubsub` component.

Topics are named `<subject>.<past verb>`; poison messages go to `<topic>.dead-letter`.
Each event's CloudEvent `id` is the idempotency key consumers use.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from consort.contracts.common import ModelInfo
from consort.contracts.sentiment import SentimentLabel

PUBSUB = "pubsub"
TEXTS_ANALYZED = "texts.analyzed"


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
