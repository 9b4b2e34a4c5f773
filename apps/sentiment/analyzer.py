"""Sentence and document sentiment with VADER (Hutto and Gilbert, ICWSM 2014).

Plain domain code: no web framework, no Dapr. The lexicon ships inside the
`vaderSentiment` package, so nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.metadata import version
from typing import TypeVar

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from consort.contracts.common import ModelInfo
from consort.contracts.sentiment import (
    ClauseSentiment,
    PolarityScores,
    SentenceSentiment,
    SentimentResult,
    label_of,
)

S = TypeVar("S", bound=SentenceSentiment)

# A sentence ends at . ! or ? (runs of them, and closing quotes or brackets after them)
# followed by white space, or at a line break. Good enough for reviews and posts; the nlp
# service owns linguistic sentence segmentation.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s)|\n+""")


def text_sha256(text: str) -> str:
    """SHA-256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Span:
    """A sentence as character offsets into its text."""

    start: int
    end: int


# Where one clause ends and a contrasting one begins: VADER itself treats "but" as a
# pivot, and reviews set aspects against each other with these words.
_CONTRAST = re.compile(
    r"(?:,\s*|\s+)(?=(?:but|although|though|yet|whereas|while)\b)|;\s*", re.IGNORECASE
)


def split_clauses(text: str, sentence: Span) -> list[Span]:
    """Clause spans of one sentence of `text`, split before contrastive markers."""
    pieces: list[Span] = []
    start = sentence.start
    body = text[sentence.start : sentence.end]
    for match in _CONTRAST.finditer(body):
        pieces.append(Span(start, sentence.start + match.start()))
        start = sentence.start + match.end()
    pieces.append(Span(start, sentence.end))
    return [p for p in pieces if text[p.start : p.end].strip()]


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

    def _scored(self, kind: type[S], text: str, span: Span) -> S:
        piece = text[span.start : span.end]
        compound = self._vader.polarity_scores(piece)["compound"]
        return kind(
            text=piece, start=span.start, end=span.end, compound=compound, label=label_of(compound)
        )

    def analyze(self, text: str) -> SentimentResult:
        """Score `text` as a whole and sentence by sentence.

        Args:
            text: the text; its length is limited by the contract, not here.
        """
        doc = self._vader.polarity_scores(text)
        sentences = [self._scored(SentenceSentiment, text, s) for s in split_sentences(text)]
        clauses = []
        for sentence in sentences:
            spans = split_clauses(text, Span(sentence.start, sentence.end))
            if len(spans) == 1:  # the sentence is its only clause: already scored
                clauses.append(ClauseSentiment(**sentence.model_dump()))
            else:
                clauses.extend(self._scored(ClauseSentiment, text, s) for s in spans)
        return SentimentResult(
            text_sha256=text_sha256(text),
            compound=doc["compound"],
            label=label_of(doc["compound"]),
            scores=PolarityScores(positive=doc["pos"], neutral=doc["neu"], negative=doc["neg"]),
            sentences=sentences,
            clauses=clauses,
            model=self.model,
        )
