"""The recommender service's own pieces without a sidecar: whole-recommender snapshots,
their chunks, training below the ALS threshold, the contract's limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from apps.recommender.als import AlsModel, AlsParameters
from apps.recommender.interactions import Interaction, InteractionKind, InteractionStore
from apps.recommender.recommend import Recommender, TrainingSnapshot, train_models
from apps.recommender.rules import AssociationRules, MiningLimits
from apps.recommender.service import training_report
from apps.recommender.snapshot import Snapshot, split
from apps.recommender.training import train
from consort.contracts.recommender import (
    InteractionIn,
    InteractionRecorded,
    InteractionsSubmission,
    RecommendationRequest,
    TrainedPart,
    TrainingOutcome,
)

pytestmark = pytest.mark.unit

WHEN = datetime(2025, 1, 1, tzinfo=UTC)
SMALL_ALS = AlsParameters(factors=4, iterations=5, regularization=0.1, alpha=10.0)


def learnt(pairs: list[tuple[str, str]]) -> Recommender:
    recommender = Recommender()
    for n, (user, item) in enumerate(pairs):
        recommender.learn(Interaction(f"e{n}", user, item, InteractionKind.PURCHASE, WHEN))
    return recommender


BASKETS = [("a", "tea"), ("a", "milk"), ("b", "tea"), ("b", "milk"), ("c", "tea"), ("d", "jam")]


def trained(recommender: Recommender) -> None:
    als, rules = train_models(
        recommender.snapshot(), version=recommender.next_version(), als_parameters=SMALL_ALS
    )
    recommender.registry.install(als=als, rules=rules)


def test_a_snapshot_restores_the_same_recommender() -> None:
    recommender = learnt(BASKETS)
    trained(recommender)
    models = recommender.registry.current
    data = Snapshot.of(recommender.store.to_bytes(), models).to_bytes()
    assert Snapshot.of(recommender.store.to_bytes(), models).to_bytes() == data  # deterministic

    restored = Snapshot.from_bytes(data).restore(neighbourhood=100)
    assert restored.registry.current.version == models.version == 1
    for user in ("a", "c", "d", "nobody"):
        assert restored.recommend(user, 3) == recommender.recommend(user, 3)
    assert restored.similar("tea", 3) == recommender.similar("tea", 3)
    assert restored.complete_basket(["tea"], 3) == recommender.complete_basket(["tea"], 3)
    # The applied event ids came along: a redelivered event still counts once.
    assert not restored.learn(Interaction("e0", "a", "tea", InteractionKind.PURCHASE, WHEN))
    assert restored.store.seen("a") == {"tea": 5.0, "milk": 5.0}


def test_a_snapshot_before_any_training_holds_the_interactions_only() -> None:
    recommender = learnt(BASKETS)
    snapshot = Snapshot.from_bytes(
        Snapshot.of(recommender.store.to_bytes(), recommender.registry.current).to_bytes()
    )
    assert (snapshot.version, snapshot.als, snapshot.rules) == (0, None, None)
    restored = snapshot.restore()
    assert restored.recommend("c", 2) == recommender.recommend("c", 2)


def test_kind_weights_come_from_the_settings_after_a_restore() -> None:
    recommender = learnt(BASKETS)
    data = Snapshot.of(recommender.store.to_bytes(), recommender.registry.current).to_bytes()
    weights = {
        InteractionKind.VIEW: 2.0,
        InteractionKind.ADD_TO_CART: 4.0,
        InteractionKind.PURCHASE: 8.0,
    }
    restored = Snapshot.from_bytes(data).restore(kind_weights=weights)
    restored.learn(Interaction("new", "e", "tea", InteractionKind.VIEW, WHEN))
    assert restored.store.seen("e") == {"tea": 2.0}
    assert restored.store.seen("a") == {"tea": 5.0, "milk": 5.0}  # learnt weights stay


def test_other_bytes_are_not_a_snapshot() -> None:
    with pytest.raises(Exception):  # noqa: B017 - zipfile's or ours, either refuses
        Snapshot.from_bytes(b"not a zip")


def test_split_cuts_into_bounded_chunks_that_join_back() -> None:
    data = bytes(range(256)) * 41
    chunks = split(data, 1000)
    assert [len(c) for c in chunks] == [1000] * 10 + [496]
    assert b"".join(chunks) == data
    assert split(b"", 10) == [b""]
    with pytest.raises(ValueError):
        split(data, 0)


def test_a_store_copy_is_independent() -> None:
    store = InteractionStore()
    store.record(Interaction("1", "a", "tea", InteractionKind.VIEW, WHEN))
    copy = store.copy()
    store.record(Interaction("2", "a", "milk", InteractionKind.VIEW, WHEN))
    assert copy.seen("a") == {"tea": 1.0} and copy.events == 1
    assert copy.to_bytes() != store.to_bytes()
    assert TrainingSnapshot.of(copy).events == 1


def test_below_the_fewest_users_only_the_rules_train() -> None:
    recommender = learnt(BASKETS)
    als, rules = train_models(
        recommender.snapshot(), version=1, als_parameters=SMALL_ALS, min_users=5
    )
    assert als is None
    assert len(rules) > 0
    als, _ = train_models(recommender.snapshot(), version=1, als_parameters=SMALL_ALS, min_users=4)
    assert als is not None


# -- the contract ------------------------------------------------------------------------------
def problems(model: Any, body: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(map(str, e["loc"])): e["type"] for e in caught.value.errors()}


def test_interaction_limits() -> None:
    ok = {"user": "u", "item": "whipped/sour cream"}
    assert InteractionIn.model_validate(ok).kind == "view"
    assert problems(InteractionIn, {**ok, "user": "x" * 201}) == {"user": "string_too_long"}
    assert problems(InteractionIn, {**ok, "item": "a\nb"}) == {"item": "value_error"}
    assert problems(InteractionIn, {**ok, "weight": 0}) == {"weight": "greater_than"}
    assert problems(InteractionIn, {**ok, "weight": float("inf")}) == {"weight": "less_than_equal"}
    assert problems(InteractionIn, {**ok, "id": "has space"}) == {"id": "string_pattern_mismatch"}
    assert problems(InteractionIn, {**ok, "time": "2025-01-01T00:00:00"}) == {"time": "value_error"}
    assert problems(InteractionsSubmission, {"interactions": [ok] * 1001}) == {
        "interactions": "too_long"
    }
    assert problems(RecommendationRequest, {"user": "u", "k": 101}) == {"k": "less_than_equal"}


def test_the_event_needs_a_time_with_a_zone() -> None:
    body = {"user": "u", "item": "i", "kind": "purchase", "time": "2025-01-01T00:00:00Z"}
    assert InteractionRecorded.model_validate(body).weight is None
    assert problems(InteractionRecorded, {**body, "time": "2025-01-01T00:00:00"}) == {
        "time": "value_error"
    }
    assert "time" in problems(InteractionRecorded, {k: v for k, v in body.items() if k != "time"})


def test_a_training_run_gives_back_the_models_as_bytes() -> None:
    recommender = learnt(BASKETS)
    result = train(
        recommender.store.copy(),
        version=3,
        als_parameters=SMALL_ALS,
        min_support=0.001,
        min_confidence=0.5,
        max_len=10,
        min_users=2,
    )
    assert (result.version, result.events, result.users, result.items) == (3, 6, 4, 3)
    assert result.store == recommender.store.to_bytes()
    assert result.als is not None
    als, rules = AlsModel.from_bytes(result.als), AssociationRules.from_bytes(result.rules)
    expected_als, expected_rules = train_models(
        recommender.snapshot(), version=3, als_parameters=SMALL_ALS, min_users=2
    )
    assert expected_als is not None
    assert als.to_bytes() == expected_als.to_bytes()
    assert rules.rules == expected_rules.rules
    assert result.rules_count == len(expected_rules)


# -- bounded training --------------------------------------------------------------------------
def pathological() -> Recommender:
    """Two users who share 120 items, beside six ordinary ones."""
    pairs = [(user, f"shared-{i}") for user in ("p", "q") for i in range(120)]
    return learnt(pairs + BASKETS + [("e", "tea"), ("e", "jam")])


def bounded_train(store: InteractionStore, limits: MiningLimits | None = None) -> Any:
    return train(
        store,
        version=2,
        als_parameters=SMALL_ALS,
        min_support=0.001,
        min_confidence=0.5,
        max_len=10,
        min_users=2,
        limits=limits or MiningLimits(max_itemsets=20_000, max_rules=20_000),
    )


def test_training_on_a_pathological_catalogue_gives_als_and_partial_rules() -> None:
    result = bounded_train(pathological().store.copy())
    assert result.als is not None and AlsModel.from_bytes(result.als).version == 2
    assert result.rules is not None and result.rules_failed is None
    assert result.rules_cut_short == "item set cap of 20000 reached"
    assert 0 < result.rules_count <= 20_000
    report = training_report(result, 2, WHEN, 1.5)
    assert report.outcome == TrainingOutcome.CUT_SHORT
    assert report.reason is not None and "item set cap of 20000 reached" in report.reason
    assert report.refreshed == [TrainedPart.ALS, TrainedPart.RULES]
    assert (report.version, report.duration_s, report.rules_mined) == (2, 1.5, result.rules_count)


def test_a_failed_mining_still_gives_als(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> AssociationRules:
        raise MemoryError("no room for the item sets")

    monkeypatch.setattr(AssociationRules, "mine", fail)
    result = bounded_train(learnt(BASKETS).store.copy())
    assert result.als is not None
    assert (result.rules, result.rules_count) == (None, 0)
    assert result.rules_failed == "MemoryError: no room for the item sets"
    report = training_report(result, 2, WHEN, 0.5)
    assert report.outcome == TrainingOutcome.FAILED
    assert report.refreshed == [TrainedPart.ALS] and report.rules_mined is None
    assert report.reason is not None and "the earlier rules serve" in report.reason


def test_a_complete_training_reports_ok() -> None:
    result = bounded_train(learnt(BASKETS).store.copy())
    report = training_report(result, 2, WHEN, 0.5)
    assert (report.outcome, report.reason) == (TrainingOutcome.OK, None)
    assert report.refreshed == [TrainedPart.ALS, TrainedPart.RULES]
