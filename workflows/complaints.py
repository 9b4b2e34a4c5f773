"""What makes a review a complaint that needs a person: it is negative, and it names a
product or a defect. Pure: the workflow decides with it on its activities' results.

Products are the review's own `product` field and the entities nlp tags PRODUCT or ORG
(brands). Defects are words of damage or failure, matched on nlp's lemmas so that
"cracked", "cracks" and "crack" are one, and a few phrases lemmas miss ("stopped working").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from consort.contracts.analysis import aspect_sentiments
from consort.contracts.cases import Priority
from consort.contracts.nlp import NlpResult
from consort.contracts.sentiment import SentimentLabel, SentimentResult

#: Lemmas (lower case) that name damage or failure.
DEFECT_LEMMAS = frozenset(
    """
    break broken crack cracked leak leaky defect defective faulty fault malfunction
    malfunctioning damage damaged dent dented scratch scratched rust rusty shatter shattered
    overheat overheating burn burnt smoke spark fail failure flaw flawed bug buggy crash
    freeze frozen drain dead die jam jammed peel tear torn rip ripped loose wobble wobbly
    squeak squeaky rattle corrode corroded corrosion mould mold stain stained missing
    """.split()
)
#: Failures said in phrases, with the defect each names.
DEFECT_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:stopped|stops|quit|quits) working\b"), "stopped working"),
    (
        re.compile(
            r"\b(?:does ?n[o']t|did ?n[o']t|wo ?n[o']t|will not|would ?n[o']t|can ?n[o']t|cannot)"
            r" (?:work|turn on|power on|charge|start)\b"
        ),
        "does not work",
    ),
    (re.compile(r"\bfell apart\b"), "fell apart"),
    (re.compile(r"\bdead on arrival\b"), "dead on arrival"),
)
#: Entity labels that name a product or its maker.
PRODUCT_LABELS = frozenset({"PRODUCT", "ORG"})
#: At or below this compound a complaint is high priority.
HIGH_PRIORITY_AT = -0.6


@dataclass(frozen=True)
class Assessment:
    """What a review says, as far as triage is concerned."""

    label: SentimentLabel
    compound: float
    products: list[str]
    defects: list[str]
    negative_aspects: list[str]

    @property
    def is_complaint(self) -> bool:
        return self.label is SentimentLabel.NEGATIVE and bool(self.products or self.defects)

    @property
    def priority(self) -> Priority:
        if self.compound <= HIGH_PRIORITY_AT or len(self.defects) >= 2:
            return Priority.HIGH
        return Priority.NORMAL


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.casefold(), item)
    return list(seen.values())


def assess(
    text: str, product: str | None, nlp: NlpResult, sentiment: SentimentResult
) -> Assessment:
    """Assess one review from its nlp result (with tokens) and its sentiment.

    Args:
        text: the review.
        product: the product the reviewer named, if any.
        nlp: nlp's analysis of `text`, tokens included (their lemmas find defects).
        sentiment: the sentiment of `text`.
    """
    products = _unique(
        ([product.strip()] if product and product.strip() else [])
        + [e.text for e in nlp.entities if e.label in PRODUCT_LABELS]
    )
    lemmas = [t.lemma.lower() for t in nlp.tokens or []]
    defects = [lemma for lemma in lemmas if lemma in DEFECT_LEMMAS]
    lowered = text.lower().replace("’", "'")
    defects += [name for pattern, name in DEFECT_PHRASES if pattern.search(lowered)]
    negative = [
        a.aspect
        for a in aspect_sentiments(nlp, sentiment)
        if a.label is SentimentLabel.NEGATIVE and a.aspect.casefold() not in DEFECT_LEMMAS
    ]
    return Assessment(
        label=sentiment.label,
        compound=sentiment.compound,
        products=products,
        defects=_unique(defects),
        negative_aspects=_unique(negative),
    )
