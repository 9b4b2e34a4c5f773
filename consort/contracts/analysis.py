"""A text analyzed by nlp and sentiment together, and the aspect sentiment read from both.

Aspects come from the nlp result (noun chunks headed by a noun, and named entities of the
kinds a review talks about); each mention takes the sentiment of the clause it stands in,
as the sentiment service scored it. Both services run in parallel; this join is a pure
function of their results, so the gateway and the review read model compute it alike.
"""

from __future__ import annotations

from statistics import fmean

from pydantic import BaseModel, Field

from consort.contracts.nlp import NlpResult, Span
from consort.contracts.sentiment import SentimentLabel, SentimentResult, label_of

#: Entity kinds that name something a text can like or dislike.
ASPECT_ENTITY_LABELS = frozenset({"ORG", "PRODUCT", "PERSON", "GPE", "FAC", "WORK_OF_ART", "EVENT"})
#: Heads of noun chunks that are not aspects: pronouns and empty nouns.
_NOT_ASPECTS = frozenset(
    "i me my mine you your he him his she her it its we us our they them their this that "
    "these those one who what which thing something anything everything nothing lot bit "
    "way time".split()
)


class AspectSentiment(BaseModel):
    """The sentiment towards one aspect, over all its mentions."""

    aspect: str = Field(description="The aspect, normalised: the head noun's lemma or the entity.")
    compound: float = Field(ge=-1, le=1, description="Mean compound of the mentions' clauses.")
    label: SentimentLabel
    mentions: list[Span]


class TextAnalysis(BaseModel):
    """nlp and sentiment of one text, with aspect sentiment."""

    nlp: NlpResult
    sentiment: SentimentResult
    aspects: list[AspectSentiment]


def aspect_sentiments(nlp: NlpResult, sentiment: SentimentResult) -> list[AspectSentiment]:
    """Aspects of a text with the sentiment of the clauses they are mentioned in.

    Args:
        nlp: the nlp service's result for the text.
        sentiment: the sentiment service's result for the same text.

    Returns:
        One entry per aspect, in order of first mention.
    """
    clauses = sentiment.clauses or sentiment.sentences
    mentions: dict[str, list[tuple[Span, float]]] = {}

    def add(key: str, span: Span) -> None:
        clause = next((c for c in clauses if c.start <= span.start and span.end <= c.end), None)
        if clause is None:  # spans a clause boundary: take the clause it starts in
            clause = next((c for c in clauses if c.start <= span.start < c.end), None)
        if clause is not None:
            mentions.setdefault(key, []).append((span, clause.compound))

    entity_spans = set()
    for entity in nlp.entities:
        if entity.label in ASPECT_ENTITY_LABELS:
            add(entity.text, Span(text=entity.text, start=entity.start, end=entity.end))
            entity_spans.add((entity.start, entity.end))
    for chunk in nlp.noun_chunks:
        root = chunk.root
        if not root or root.lower() in _NOT_ASPECTS or not any(ch.isalpha() for ch in root):
            continue
        if any(s <= chunk.start and chunk.end <= e for s, e in entity_spans):
            continue  # already counted as its entity
        add(root, Span(text=chunk.text, start=chunk.start, end=chunk.end))
    aspects = []
    for key, found in mentions.items():
        compound = round(fmean(c for _, c in found), 4)
        aspects.append(
            AspectSentiment(
                aspect=key,
                compound=compound,
                label=label_of(compound),
                mentions=[s for s, _ in found],
            )
        )
    return sorted(aspects, key=lambda a: min(m.start for m in a.mentions))
