"""Aspect sentiment: nlp spans joined with the clauses sentiment scored (pure function)."""

from __future__ import annotations

from apps.sentiment.analyzer import SentimentAnalyzer, Span, split_clauses
from consort.contracts.analysis import aspect_sentiments
from consort.contracts.common import ModelInfo
from consort.contracts.nlp import Entity, NlpResult, NounChunk
from consort.contracts.nlp import Span as TextSpan

TEXT = "The battery is awful but the screen is gorgeous. Apple shipped it fast."


def nlp_of(text: str) -> NlpResult:
    def chunk(phrase: str, root: str) -> NounChunk:
        start = text.index(phrase)
        return NounChunk(text=phrase, start=start, end=start + len(phrase), root=root)

    start = text.index("Apple")
    return NlpResult(
        sentences=[TextSpan(text=text, start=0, end=len(text))],
        entities=[Entity(text="Apple", start=start, end=start + 5, label="ORG")],
        noun_chunks=[
            chunk("The battery", "battery"),
            chunk("the screen", "screen"),
            chunk("Apple", "apple"),
            chunk("it", "it"),
        ],
        keyphrases=[],
        model=ModelInfo(name="test", version="0"),
    )


def test_aspects_of_one_sentence_can_disagree() -> None:
    sentiment = SentimentAnalyzer().analyze(TEXT)
    aspects = {a.aspect: a for a in aspect_sentiments(nlp_of(TEXT), sentiment)}
    assert aspects["battery"].label == "negative"
    assert aspects["screen"].label == "positive"
    assert list(aspects) == ["battery", "screen", "Apple"]  # order of first mention
    assert "it" not in aspects  # pronouns are not aspects
    assert "apple" not in aspects  # the chunk is counted as its entity


def test_mentions_average_their_clauses() -> None:
    text = "The screen is gorgeous. The screen scratches and it is terrible."
    first = text.index("The screen")
    second = text.index("The screen", first + 1)
    nlp = NlpResult(
        sentences=[],
        entities=[],
        noun_chunks=[
            NounChunk(text="The screen", start=first, end=first + 10, root="screen"),
            NounChunk(text="The screen", start=second, end=second + 10, root="screen"),
        ],
        keyphrases=[],
        model=ModelInfo(name="test", version="0"),
    )
    sentiment = SentimentAnalyzer().analyze(text)
    (screen,) = aspect_sentiments(nlp, sentiment)
    scores = [s.compound for s in sentiment.clauses]
    assert screen.compound == round((scores[0] + scores[1]) / 2, 4)
    assert len(screen.mentions) == 2


def test_clauses_split_before_contrast() -> None:
    text = "Good battery, but the screen is dim; shipping was fast although late."
    spans = split_clauses(text, Span(0, len(text)))
    assert [text[s.start : s.end] for s in spans] == [
        "Good battery",
        "but the screen is dim",
        "shipping was fast",
        "although late.",
    ]
