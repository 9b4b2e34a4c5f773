"""How well sentiment scores agree with human ratings: Pearson r, class rules and F1.

Plain functions over lists, no dependencies, so the evaluation's arithmetic is unit-tested
apart from the system that produces the scores.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

POSITIVE = "positive"
NEUTRAL = "neutral"
NEGATIVE = "negative"
CLASSES = (POSITIVE, NEUTRAL, NEGATIVE)

#: The paper's thresholds on VADER's compound score (-1..1).
COMPOUND_THRESHOLD = 0.05
#: Human ratings are on -4..+4; the paper applies its ±0.05 to scores normalised to -1..1,
#: which on the rating scale is ±0.2.
RATING_SCALE = 4.0
RATING_THRESHOLD = COMPOUND_THRESHOLD * RATING_SCALE


def pearson_r(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's product-moment correlation of two equally long series.

    Args:
        xs: the first series, at least two values, not all equal.
        ys: the second series, as long as `xs`, not all equal.
    """
    if len(xs) != len(ys):
        raise ValueError(f"series differ in length: {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        raise ValueError("Pearson's r needs at least two pairs")
    mean_x = math.fsum(xs) / len(xs)
    mean_y = math.fsum(ys) / len(ys)
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    syy = math.fsum((y - mean_y) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        raise ValueError("Pearson's r is undefined for a constant series")
    return sxy / math.sqrt(sxx * syy)


def predicted_class(compound: float) -> str:
    """VADER's class of a compound score: positive at >= 0.05, negative at <= -0.05."""
    if compound >= COMPOUND_THRESHOLD:
        return POSITIVE
    if compound <= -COMPOUND_THRESHOLD:
        return NEGATIVE
    return NEUTRAL


def gold_class_by_sign(mean_rating: float) -> str:
    """The class of a mean human rating by its sign; neutral only at exactly 0.

    This reading reproduces the F1 figures of the paper's Table 4 (see bench/eval_sentiment).
    """
    if mean_rating > 0:
        return POSITIVE
    if mean_rating < 0:
        return NEGATIVE
    return NEUTRAL


def gold_class_banded(mean_rating: float, threshold: float = RATING_THRESHOLD) -> str:
    """The class of a mean human rating (-4..+4) with a neutral band.

    Args:
        mean_rating: the mean of the raters' scores.
        threshold: positive at >= threshold, negative at <= -threshold. The default is
            the paper's ±0.05 on the normalised scale (rating / 4), the rule it states
            for every score it classifies.
    """
    if mean_rating >= threshold:
        return POSITIVE
    if mean_rating <= -threshold:
        return NEGATIVE
    return NEUTRAL


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and how many gold items it has."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class F1Scores:
    """F1 of a multi-class labelling, averaged three ways, with the per-class figures.

    macro: the plain mean over classes. weighted: the mean weighted by each class's gold
    support (scikit-learn's `average="weighted"`). accuracy: the share of items labelled
    right, which for single-label data is micro-averaged F1.
    """

    macro: float
    weighted: float
    accuracy: float
    per_class: dict[str, ClassScores]

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        return {
            "macro": round(self.macro, digits),
            "weighted": round(self.weighted, digits),
            "accuracy": round(self.accuracy, digits),
            "per_class": {
                name: {
                    k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(s).items()
                }
                for name, s in self.per_class.items()
            },
        }


def f1_scores(
    gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str] = CLASSES
) -> F1Scores:
    """Per-class and averaged F1 of `predicted` against `gold`.

    A class that has neither gold nor predicted items is left out of the averages; one
    with no predicted items has precision 0 (and one with no gold items recall 0), as
    scikit-learn scores them.

    Args:
        gold: the true class of each item.
        predicted: the predicted class of each item, in the same order.
        classes: the classes to score.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"labellings differ in length: {len(gold)} and {len(predicted)}")
    if not gold:
        raise ValueError("F1 needs at least one item")
    pairs = Counter(zip(gold, predicted, strict=True))
    gold_counts = Counter(gold)
    predicted_counts = Counter(predicted)
    per_class: dict[str, ClassScores] = {}
    for name in classes:
        support, labelled = gold_counts[name], predicted_counts[name]
        if support == 0 and labelled == 0:
            continue
        hits = pairs[(name, name)]
        precision = hits / labelled if labelled else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        per_class[name] = ClassScores(precision, recall, f1, support)
    scored = sum(s.support for s in per_class.values())
    return F1Scores(
        macro=math.fsum(s.f1 for s in per_class.values()) / len(per_class),
        weighted=math.fsum(s.f1 * s.support for s in per_class.values()) / scored
        if scored
        else 0.0,
        accuracy=sum(pairs[(name, name)] for name in per_class) / len(gold),
        per_class=per_class,
    )
