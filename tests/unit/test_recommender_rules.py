"""Association rules: hand-checked baskets and arules' published output on Groceries."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from apps.recommender.rules import AssociationRules, MiningLimits, frequent_itemsets, min_count

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


# -- bounded mining ----------------------------------------------------------------------------
#: Two users who share 120 items (every one of the 2^120 subsets is frequent at any
#: support they reach), beside ordinary baskets: 8 of the 10 with x and y also hold z.
SHARED = [f"shared-{i}" for i in range(120)]
PATHOLOGICAL = [
    [*SHARED, "a"],
    [*SHARED, "b"],
    *[["x", "y", "z"]] * 8,
    *[["x", "y"]] * 2,
    *[["w"]] * 5,
]


def test_mining_two_users_sharing_a_hundred_items_ends_cut_short() -> None:
    started = time.perf_counter()
    rules = AssociationRules.mine(PATHOLOGICAL, min_support=0.001, min_confidence=0.5)
    took = time.perf_counter() - started
    assert took < 20, f"the mining took {took:.1f} s"
    assert rules.cut_short == f"item set cap of {MiningLimits().max_itemsets} reached"
    assert len(rules) <= MiningLimits().max_rules
    # Shorter first: every pair rule is there, the ordinary ones included.
    assert rules.find(["x"], "z") is not None
    assert rules.find(["shared-0"], "shared-119") is not None
    assert [c.item for c in rules.complete_basket(["x", "y"], 3)] == ["z"]
    # The flag survives a snapshot.
    assert AssociationRules.from_bytes(rules.to_bytes()).cut_short == rules.cut_short


def test_mining_memory_is_bounded_by_the_caps() -> None:
    limits = MiningLimits(max_itemsets=5_000, max_rules=5_000)
    tracemalloc.start()
    try:
        rules = AssociationRules.mine(
            PATHOLOGICAL, min_support=0.001, min_confidence=0.5, limits=limits
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rules.cut_short is not None and len(rules) <= 5_000
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_mining_stops_at_its_time_budget() -> None:
    ticks = iter(range(1_000_000))  # one second per look at the clock
    encoded = [frozenset(range(40)), frozenset(range(40))]
    found = frequent_itemsets(
        encoded, 40, 2, 10, MiningLimits(time_budget_s=5), clock=lambda: float(next(ticks))
    )
    assert found.cut_short == "time budget of 5 s spent"
    # It stopped among the pairs (the clock is read once per join): the singles are
    # complete, and a few joins' worth of pairs are there.
    assert found.complete_len == 1
    assert sum(len(s) == 1 for s in found.counts) == 40
    assert 0 < sum(len(s) == 2 for s in found.counts) < 40 * 39 // 2


def test_mining_within_its_limits_is_complete() -> None:
    rules = AssociationRules.mine(BASKETS, min_support=0.4, min_confidence=0.6)
    assert rules.cut_short is None
    found = frequent_itemsets([frozenset({0, 1}), frozenset({0, 1, 2})], 3, 1, 10)
    assert (found.cut_short, found.complete_len) == (None, 10)
    assert len(found.counts) == 1 + 7  # the empty set and every non-empty subset of {0, 1, 2}
