"""The sentiment service's contract: requests, results and limits."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from consort.contracts.common import ModelInfo

#: Longest text accepted, in characters. VADER is a lexicon model; long documents are
#: better sent as several texts in one batch.
MAX_TEXT_CHARS = 5_000
#: Most texts in one batch request.
MAX_BATCH_TEXTS = 64

#: A text: at least one character that is not white space, at most MAX_TEXT_CHARS.
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S"),
]


#: The VADER paper's thresholds on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05


class SentimentLabel(StrEnum):
    """Polarity classes at the VADER paper's thresholds (compound >= 0.05 / <= -0.05)."""

    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


def label_of(compound: float) -> SentimentLabel:
    """The class of a compound score at the paper's ±0.05 thresholds."""
    if compound >= POSITIVE_AT:
        return SentimentLabel.POSITIVE
    if compound <= NEGATIVE_AT:
        return SentimentLabel.NEGATIVE
    return SentimentLabel.NEUTRAL


class SentimentRequest(BaseModel):
    """One text to score."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description=f"The text, 1 to {MAX_TEXT_CHARS} characters.")


class SentimentBatchRequest(BaseModel):
    """Several texts to score in one call."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Text] = Field(
        min_length=1,
        max_length=MAX_BATCH_TEXTS,
        description=f"1 to {MAX_BATCH_TEXTS} texts, each 1 to {MAX_TEXT_CHARS} characters.",
    )


class PolarityScores(BaseModel):
    """VADER's proportions of positive, neutral and negative valence (they sum to 1)."""

    positive: float
    neutral: float
    negative: float


class SentenceSentiment(BaseModel):
    """The score of one sentence, with its character offsets in the text."""

    text: str
    start: int
    end: int
    compound: float = Field(ge=-1, le=1)
    label: SentimentLabel


class ClauseSentiment(SentenceSentiment):
    """The score of one clause: a sentence split before "but", "although", "though",
    "yet", "whereas", "while" and at ";", so that aspects of one sentence can differ."""


class SentimentResult(BaseModel):
    """The sentiment of one text."""

    text_sha256: str = Field(description="SHA-256 of the UTF-8 text: the cache and event key.")
    compound: float = Field(ge=-1, le=1, description="VADER's normalised score, -1 to 1.")
    label: SentimentLabel
    scores: PolarityScores
    sentences: list[SentenceSentiment]
    clauses: list[ClauseSentiment] = Field(
        default_factory=list, description="Per clause: what aspect sentiment is read from."
    )
    model: ModelInfo
    cached: bool = Field(
        default=False, description="True when the result was served from the state store."
    )


class SentimentBatchResult(BaseModel):
    """Results in the order of the request's texts."""

    results: list[SentimentResult]
    model: ModelInfo
