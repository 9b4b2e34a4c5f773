"""Association rules: hand-checked baskets and arules' published output on Groceries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apps.recommender.rules import AssociationRules, min_count

pytestmark = pytest.mark.unit

GROCERIES = (
    Path(__file__).resolve().parents[3] / "shared" / "datasets" / "groceries" / "groceries.csv"
)

BASKETS = [
    ["bread", "milk"],
    ["bread", "butter", "milk"],
    ["bread", "butter"],
    ["beer", "chips"],
    ["bread", "butter", "milk", "jam"],
]


def test_min_count_rounds_up_like_arules() -> None:
    assert min_count(9835, 0.001) == 10
    assert min_count(5, 0.4) == 2
    assert min_count(10, 0.3) == 3


def test_rules_on_a_tiny_basket_set() -> None:
    # Counts by hand: bread 4, milk 3, butter 3, {bread, milk} 3, {bread, butter} 3,
    # {butter, milk} 2, {bread, butter, milk} 2; beer, chips and jam are below 2.
    rules = AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.6)
    milk_bread = rules.find(["milk"], "bread")
    assert milk_bread is not None
    assert (milk_bread.count, milk_bread.support, milk_bread.confidence) == (3, 0.6, 1.0)
    assert milk_bread.lift == pytest.approx(1.0 / (4 / 5))
    bread_milk = rules.find(["bread"], "milk")
    assert bread_milk is not None and bread_milk.confidence == pytest.approx(0.75)
    three = rules.find(["butter", "milk"], "bread")
    assert three is not None and three.confidence == 1.0
    bread_butter = rules.find(["bread", "butter"], "milk")
    assert bread_butter is not None and bread_butter.confidence == pytest.approx(2 / 3)
    # Empty antecedents: confidence is the item's support (bread 0.8, milk and butter
    # 0.6, the threshold itself); minlen 1 lets them in, like arules.
    assert rules.find([], "bread") is not None and rules.find([], "milk") is not None
    assert rules.find(["beer"], "chips") is None  # support 0.2 < 0.4
    assert rules.lengths() == {1: 3, 2: 6, 3: 3}
    assert len(AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.6, min_len=2)) == 9


def test_confidence_at_the_threshold_is_kept() -> None:
    rules = AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.75)
    assert rules.find(["bread"], "milk") is not None  # exactly 0.75


def test_complete_basket_takes_the_best_rule_per_item() -> None:
    rules = AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.6)
    completions = rules.complete_basket(["butter", "milk", "unknown item"], 5)
    assert [c.item for c in completions] == ["bread"]
    assert completions[0].confidence == 1.0
    # bread => butter and bread => milk tie on every measure: the item id decides.
    assert [c.item for c in rules.complete_basket(["bread"], 5)] == ["butter", "milk"]
    assert rules.complete_basket([], 5)[0].because == ()  # {} => {bread}


def test_snapshot_round_trip() -> None:
    rules = AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.6, version=2)
    loaded = AssociationRules.from_bytes(rules.to_bytes())
    assert loaded.rules == rules.rules and loaded.version == 2
    assert loaded.to_bytes() == rules.to_bytes()


def test_groceries_reproduce_arules_published_rules() -> None:
    with GROCERIES.open(encoding="utf-8") as lines:
        baskets = [line.rstrip("\r\n").split(",") for line in lines if line.strip()]
    started = time.perf_counter()
    rules = AssociationRules.mine(baskets, min_support=0.001, min_confidence=0.5)
    assert time.perf_counter() - started < 10
    assert len(rules) == 5668
    assert rules.lengths() == {2: 11, 3: 1461, 4: 3211, 5: 939, 6: 46}
    honey = rules.find(["honey"], "whole milk")
    assert honey is not None
    assert round(honey.support, 6) == 0.001118
    assert round(honey.confidence, 4) == 0.7333
    assert round(honey.lift, 4) == 2.8700
