"""VADER sentiment, as the sentiment service computes it (no sidecar)."""

from __future__ import annotations

import pytest

from apps.sentiment.analyzer import SentimentAnalyzer, Span, split_sentences, text_sha256
from consort.contracts.sentiment import SentimentLabel, label_of


@pytest.fixture(scope="module")
def analyzer() -> SentimentAnalyzer:
    return SentimentAnalyzer()


@pytest.mark.parametrize(
    ("compound", "label"),
    [
        (0.05, SentimentLabel.POSITIVE),
        (0.0499, SentimentLabel.NEUTRAL),
        (0.0, SentimentLabel.NEUTRAL),
        (-0.0499, SentimentLabel.NEUTRAL),
        (-0.05, SentimentLabel.NEGATIVE),
    ],
)
def test_labels_use_the_papers_thresholds(compound: float, label: SentimentLabel) -> None:
    assert label_of(compound) == label


def test_scores_match_vader_reference_examples(analyzer: SentimentAnalyzer) -> None:
    # Values printed by vaderSentiment 3.3.2's own README examples.
    assert analyzer.analyze("VADER is smart, handsome, and funny.").compound == 0.8316
    assert analyzer.analyze("VADER is not smart, handsome, nor funny.").compound == -0.7424
    assert analyzer.analyze("The book was kind of good.").compound == 0.3832


def test_sentences_are_scored_separately(analyzer: SentimentAnalyzer) -> None:
    text = "The battery is awful. But the screen is gorgeous!"
    result = analyzer.analyze(text)
    assert [s.label for s in result.sentences] == [
        SentimentLabel.NEGATIVE,
        SentimentLabel.POSITIVE,
    ]
    for sentence in result.sentences:
        assert text[sentence.start : sentence.end] == sentence.text


def test_result_names_model_and_text_hash(analyzer: SentimentAnalyzer) -> None:
    result = analyzer.analyze("fine")
    assert (result.model.name, result.model.version) == ("vader", "3.3.2")
    assert result.text_sha256 == text_sha256("fine")
    assert result.cached is False
    total = result.scores.positive + result.scores.neutral + result.scores.negative
    assert total == pytest.approx(1.0, abs=0.002)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("No end mark", ["No end mark"]),
        ("  padded.  \n\n next line ", ["padded.", "next line"]),
        ('He said "wow!" Then left.', ['He said "wow!"', "Then left."]),
        ("Version 3.3.2 is out. Yes", ["Version 3.3.2 is out.", "Yes"]),
        ("Wait... what?!", ["Wait...", "what?!"]),
    ],
)
def test_split_sentences(text: str, pieces: list[str]) -> None:
    spans = split_sentences(text)
    assert [text[s.start : s.end] for s in spans] == pieces


def test_split_sentences_of_blank_text_is_empty() -> None:
    assert split_sentences("   ") == []
    assert split_sentences("a") == [Span(0, 1)]
