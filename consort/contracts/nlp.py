"""The nlp service's contract: linguistic analysis of texts (spaCy)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from consort.contracts.common import ModelInfo

#: Longest text accepted, in characters.
MAX_NLP_TEXT_CHARS = 10_000
#: Most texts in one batch request.
MAX_NLP_BATCH_TEXTS = 32

NlpText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NLP_TEXT_CHARS, pattern=r"\S")
]


class NlpRequest(BaseModel):
    """One text to analyze."""

    model_config = ConfigDict(extra="forbid")

    text: NlpText = Field(description=f"The text, 1 to {MAX_NLP_TEXT_CHARS} characters.")
    tokens: bool = Field(default=False, description="Also return every token (lemma, POS).")


class NlpBatchRequest(BaseModel):
    """Several texts to analyze in one call."""

    model_config = ConfigDict(extra="forbid")

    texts: list[NlpText] = Field(
        min_length=1,
        max_length=MAX_NLP_BATCH_TEXTS,
        description=f"1 to {MAX_NLP_BATCH_TEXTS} texts, each 1 to {MAX_NLP_TEXT_CHARS} characters.",
    )
    tokens: bool = Field(default=False, description="Also return every token (lemma, POS).")


class Span(BaseModel):
    """A piece of the text by character offsets (`text[start:end]`)."""

    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class Token(Span):
    lemma: str
    pos: str = Field(description="Universal part-of-speech tag (NOUN, VERB, ...).")


class Entity(Span):
    label: str = Field(description="Entity type (PERSON, ORG, GPE, PRODUCT, DATE, ...).")


class NounChunk(Span):
    root: str = Field(description="Lemma of the chunk's head noun, lower case.")


class Keyphrase(BaseModel):
    """A salient phrase of the text, ranked by `score` (higher first)."""

    text: str = Field(description="The phrase, normalised (lemmas, lower case).")
    score: float
    count: int = Field(ge=1, description="How often it occurs in the text.")


class NlpResult(BaseModel):
    """The linguistic analysis of one text."""

    sentences: list[Span]
    entities: list[Entity]
    noun_chunks: list[NounChunk]
    keyphrases: list[Keyphrase]
    tokens: list[Token] | None = Field(default=None, description="Only when asked for.")
    model: ModelInfo


class NlpBatchResult(BaseModel):
    """Results in the order of the request's texts."""

    results: list[NlpResult]
    model: ModelInfo
