"""Sentence and document sentiment with VADER (Hutto and Gilbert, ICWSM 2014).

Plain domain code: no web framework, no Dapr. The lexicon ships inside the
`vaderSentiment` package, so nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.metadata import version

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from consort.contracts.common import ModelInfo
from consort.contracts.sentiment import (
    PolarityScores,
    SentenceSentiment,
    SentimentLabel,
    SentimentResult,
)

#: The paper's thresholds on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05

# A sentence ends at . ! or ? (runs of them, and closing quotes or brackets after them)
# followed by white space, or at a line break. Good enough for reviews and posts; the nlp
# service owns linguistic sentence segmentation.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s)|\n+""")


def label_of(compound: float) -> SentimentLabel:
    """The class of a compound score at the paper's ±0.05 thresholds."""
    if compound >= POSITIVE_AT:
        return SentimentLabel.POSITIVE
    if compound <= NEGATIVE_AT:
        return SentimentLabel.NEGATIVE
    return SentimentLabel.NEUTRAL


def text_sha256(text: str) -> str:
    """SHA-256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Span:
    """A sentence as character offsets into its text."""

    start: int
    end: int


def split_sentences(text: str) -> list[Span]:
    """Sentence spans of `text`, white space trimmed, empty pieces dropped."""
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append(Span(start, match.end()))
        start = match.end()
    spans.append(Span(start, len(text)))
    trimmed = []
    for span in spans:
        piece = text[span.start : span.end]
        stripped = piece.strip()
        if stripped:
            offset = span.start + (len(piece) - len(piece.lstrip()))
            trimmed.append(Span(offset, offset + len(stripped)))
    return trimmed


class SentimentAnalyzer:
    """VADER, loaded once; `analyze` scores a text and each of its sentences."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self.model = ModelInfo(name="vader", version=version("vaderSentiment"))

    def analyze(self, text: str) -> SentimentResult:
        """Score `text` as a whole and sentence by sentence.

        Args:
            text: the text; its length is limited by the contract, not here.
        """
        doc = self._vader.polarity_scores(text)
        sentences = []
        for span in split_sentences(text):
            piece = text[span.start : span.end]
            compound = self._vader.polarity_scores(piece)["compound"]
            sentences.append(
                SentenceSentiment(
                    text=piece,
                    start=span.start,
                    end=span.end,
                    compound=compound,
                    label=label_of(compound),
                )
            )
        return SentimentResult(
            text_sha256=text_sha256(text),
            compound=doc["compound"],
            label=label_of(doc["compound"]),
            scores=PolarityScores(positive=doc["pos"], neutral=doc["neu"], negative=doc["neg"]),
            sentences=sentences,
            model=self.model,
        )
