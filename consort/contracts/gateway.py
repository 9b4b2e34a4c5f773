"""The gateway's own contract: the requests and answers no AI service has.

The other services' models (sentiment, nlp, vision, forecast, anomaly, recommender,
workflows) are the gateway's contract too; it passes them on. These are the ones only the
gateway speaks: a request it fans out, and the read models it keeps from events (text
stats from `texts.analyzed`, recent anomalies from `anomalies.detected`, dead letters).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from consort.contracts.anomaly import AnomaliesDetected
from consort.contracts.sentiment import MAX_TEXT_CHARS, SentimentLabel, Text

# -- text ---------------------------------------------------------------------------------


class AnalyzeRequest(BaseModel):
    """One text for every language service."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description=f"The text, 1 to {MAX_TEXT_CHARS} characters.")
    tokens: bool = Field(default=False, description="Also return every token (lemma, POS).")


class TextStats(BaseModel):
    """How many texts were analyzed, by label and by model."""

    total: int = 0
    cached: int = 0
    by_label: dict[SentimentLabel, int] = Field(
        default_factory=lambda: dict.fromkeys(SentimentLabel, 0)
    )
    by_model: dict[str, int] = Field(default_factory=dict)


# -- metrics and anomalies ----------------------------------------------------------------


class PointsAccepted(BaseModel):
    """Points published for scoring (`wait=false`)."""

    series: str
    points: int
    event_id: str = Field(description="The `metrics.observed` event's id.")


class BatchAccepted(BaseModel):
    """A batch of series published for scoring (`wait=false`): one `metrics.observed`
    event per series, in one bulk publish."""

    series: int
    points: int


class RecentAnomalies(BaseModel):
    """The most recent `anomalies.detected` events, newest first."""

    anomalies: list[AnomaliesDetected]


# -- operations ---------------------------------------------------------------------------


class DeadLetter(BaseModel):
    """An event its consumer could not handle, as the dead-letter topic received it."""

    id: str
    topic: str
    received_at: datetime
    event: dict[str, Any]


# No docstring: the class docstring becomes the schema's description, and the published
# OpenAPI document has none for it (adding one is a contract change, not a refactoring).
class DeadLetters(BaseModel):
    topic: str
    dead_letters: list[DeadLetter]
