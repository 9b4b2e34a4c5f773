"""The evaluation's arithmetic (bench/quality.py) on small examples worked out by hand."""

from __future__ import annotations

import pytest

from bench.quality import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    f1_scores,
    gold_class_banded,
    gold_class_by_sign,
    pearson_r,
    predicted_class,
)


@pytest.mark.parametrize(
    ("xs", "ys", "r"),
    [
        ([1, 2, 3], [2, 4, 6], 1.0),
        ([1, 2, 3], [3, 2, 1], -1.0),
        # deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): 4 / sqrt(5 * 5)
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),
        # r ignores scale and offset: ratings on -4..4 against scores on -1..1
        ([-4, 0, 2, 4], [-1.0, 0.0, 0.5, 1.0], 1.0),
    ],
)
def test_pearson_r(xs: list[float], ys: list[float], r: float) -> None:
    assert pearson_r(xs, ys) == pytest.approx(r)


@pytest.mark.parametrize(
    ("xs", "ys"),
    [([1, 2], [1, 2, 3]), ([1], [1]), ([1, 1, 1], [1, 2, 3])],
)
def test_pearson_r_refuses_what_it_cannot_compute(xs: list[float], ys: list[float]) -> None:
    with pytest.raises(ValueError):
        pearson_r(xs, ys)


@pytest.mark.parametrize(
    ("compound", "label"),
    [(0.05, POSITIVE), (0.0499, NEUTRAL), (0.0, NEUTRAL), (-0.0499, NEUTRAL), (-0.05, NEGATIVE)],
)
def test_predicted_class_uses_the_papers_thresholds(compound: float, label: str) -> None:
    assert predicted_class(compound) == label


@pytest.mark.parametrize(
    ("mean", "label"),
    [(0.05, POSITIVE), (0.0, NEUTRAL), (-0.05, NEGATIVE), (3.2, POSITIVE), (-1.0, NEGATIVE)],
)
def test_gold_class_by_sign(mean: float, label: str) -> None:
    assert gold_class_by_sign(mean) == label


@pytest.mark.parametrize(
    ("mean", "label"),
    # ±0.05 on ratings normalised to -1..1 is ±0.2 on the -4..4 scale; 0.2 and 0.15 are
    # written as the data files write them.
    [(0.2, POSITIVE), (0.15, NEUTRAL), (0.0, NEUTRAL), (-0.15, NEUTRAL), (-0.2, NEGATIVE)],
)
def test_gold_class_banded_is_the_papers_rule_on_the_rating_scale(mean: float, label: str) -> None:
    assert gold_class_banded(mean) == label


def test_gold_class_banded_takes_another_band() -> None:
    assert gold_class_banded(0.4, threshold=0.5) == NEUTRAL
    assert gold_class_banded(0.5, threshold=0.5) == POSITIVE


def test_f1_scores_on_a_worked_example() -> None:
    gold = [POSITIVE, POSITIVE, POSITIVE, NEUTRAL, NEUTRAL, NEGATIVE]
    predicted = [POSITIVE, POSITIVE, NEUTRAL, NEUTRAL, NEGATIVE, NEGATIVE]
    scores = f1_scores(gold, predicted)
    # positive: 2 of 2 predicted right, 2 of 3 found: P 1, R 2/3, F1 0.8
    # neutral:  1 of 2 right, 1 of 2 found:              P 1/2, R 1/2, F1 0.5
    # negative: 1 of 2 right, 1 of 1 found:              P 1/2, R 1, F1 2/3
    assert scores.per_class[POSITIVE].precision == pytest.approx(1.0)
    assert scores.per_class[POSITIVE].recall == pytest.approx(2 / 3)
    assert scores.per_class[POSITIVE].f1 == pytest.approx(0.8)
    assert scores.per_class[NEUTRAL].f1 == pytest.approx(0.5)
    assert scores.per_class[NEGATIVE].f1 == pytest.approx(2 / 3)
    assert [scores.per_class[c].support for c in (POSITIVE, NEUTRAL, NEGATIVE)] == [3, 2, 1]
    assert scores.macro == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores.weighted == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    assert scores.accuracy == pytest.approx(4 / 6)


def test_f1_scores_count_a_class_never_predicted_as_zero() -> None:
    scores = f1_scores([POSITIVE, POSITIVE, NEUTRAL], [POSITIVE, POSITIVE, POSITIVE])
    # positive: P 2/3, R 1, F1 0.8; neutral: nothing predicted, F1 0
    assert scores.per_class[NEUTRAL].f1 == 0.0
    assert scores.macro == pytest.approx(0.4)
    assert scores.weighted == pytest.approx(0.8 * 2 / 3)
    assert scores.accuracy == pytest.approx(2 / 3)


def test_f1_scores_leave_out_a_class_neither_side_has() -> None:
    scores = f1_scores([POSITIVE, NEGATIVE], [POSITIVE, NEGATIVE])
    assert set(scores.per_class) == {POSITIVE, NEGATIVE}
    assert scores.macro == scores.weighted == scores.accuracy == 1.0


def test_f1_scores_as_dict_rounds_and_names_every_figure() -> None:
    figures = f1_scores([POSITIVE, NEUTRAL, NEUTRAL], [POSITIVE, NEUTRAL, POSITIVE]).as_dict()
    assert figures["macro"] == round((2 / 3 + 2 / 3) / 2, 4)
    assert figures["accuracy"] == round(2 / 3, 4)
    assert figures["per_class"][NEUTRAL] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
    }


def test_f1_scores_refuse_unequal_or_empty_labellings() -> None:
    with pytest.raises(ValueError):
        f1_scores([POSITIVE], [POSITIVE, NEGATIVE])
    with pytest.raises(ValueError):
        f1_scores([], [])
