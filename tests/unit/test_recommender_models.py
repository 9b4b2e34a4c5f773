"""The recommender's domain code: store, item-to-item, ALS, the serving policy (no sidecar)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from apps.recommender.als import AlsModel, AlsParameters, train_als
from apps.recommender.interactions import Interaction, InteractionKind, InteractionStore
from apps.recommender.itemknn import ItemKnn
from apps.recommender.recommend import ModelRegistry, Reason, Recommender
from apps.recommender.settings import RecommenderSettings

pytestmark = pytest.mark.unit

WHEN = datetime(2025, 1, 1, tzinfo=UTC)
SMALL_ALS = AlsParameters(factors=8, iterations=10, regularization=0.1, alpha=10.0)


def event(n: int | str, user: str, item: str, kind: str = "view", weight: float | None = None):
    return Interaction(str(n), user, item, InteractionKind(kind), WHEN, weight)


def random_events(count: int, seed: int = 7) -> list[Interaction]:
    rng = np.random.default_rng(seed)
    kinds = list(InteractionKind)
    return [
        event(
            n,
            f"u{rng.integers(30)}",
            f"i{rng.integers(25)}",
            kinds[rng.integers(3)],
            None if n % 4 else float(rng.integers(1, 4)),
        )
        for n in range(count)
    ]


def test_an_event_id_seen_twice_counts_once() -> None:
    store = InteractionStore()
    first = event("e1", "ann", "tea", "purchase")
    assert store.record(first) is not None
    assert store.record(first) is None
    assert store.record(event("e1", "ann", "tea", "view")) is None  # same id, other body
    assert store.seen("ann") == {"tea": 5.0}
    assert store.events == 1
    assert store.popularity() == {"tea": 1}


def test_kind_weights_and_own_weights_add_up() -> None:
    store = InteractionStore()
    store.record(event(1, "ann", "tea", "view"))
    store.record(event(2, "ann", "tea", "add-to-cart"))
    store.record(event(3, "ann", "tea", "purchase", weight=0.5))
    assert store.seen("ann") == {"tea": 1 + 3 + 0.5}
    with pytest.raises(ValueError):
        store.record(event(4, "ann", "tea", weight=0))
    assert not store.has_applied("4")


def test_store_snapshot_keeps_weights_and_idempotency() -> None:
    store = InteractionStore()
    for e in random_events(200):
        store.record(e)
    data = store.to_bytes()
    restored = InteractionStore.from_bytes(data)
    assert restored.to_bytes() == data
    assert restored.record(event(5, "u1", "i1")) is None
    assert (restored.to_matrix().weights != store.to_matrix().weights).nnz == 0


def test_incremental_item_similarity_equals_a_recomputation() -> None:
    store = InteractionStore()
    live = ItemKnn(neighbourhood=50)
    events = random_events(400)
    for e in events[:200]:
        change = store.record(e)
        if change:
            live.apply(change, store.seen(e.user))
    live.similar("i3", 5)  # build neighbour lists, so the next events must invalidate them
    for e in events[200:]:
        change = store.record(e)
        if change:
            live.apply(change, store.seen(e.user))
    fresh = ItemKnn.from_matrix(store.to_matrix(), neighbourhood=50)
    weights = store.to_matrix().weights.toarray().astype(np.float64)
    items = store.to_matrix().items
    gram = weights.T @ weights
    for a, x in enumerate(items):
        for b, y in enumerate(items):
            assert live.dot(x, y) == pytest.approx(gram[a, b], abs=1e-9)
        live_list = live.neighbours(x)
        fresh_list = fresh.neighbours(x)
        assert [i for i, _ in live_list] == [i for i, _ in fresh_list]
        np.testing.assert_allclose([s for _, s in live_list], [s for _, s in fresh_list])


def test_item_to_item_recommends_co_visited_items_with_reasons() -> None:
    store = InteractionStore()
    knn = ItemKnn()
    for n, (user, item) in enumerate(
        [("a", "tea"), ("a", "milk"), ("b", "tea"), ("b", "milk"), ("c", "tea"), ("d", "jam")]
    ):
        knn.apply(store.record(event(n, user, item)) or pytest.fail(), store.seen(user))
    assert knn.similar("tea", 3)[0][0] == "milk"
    (top,) = knn.recommend({"tea": 1.0}, 5)
    assert (top.item, top.because) == ("milk", ("tea",))
    assert [s.item for s in knn.recommend({"tea": 1.0}, 5, exclude_seen=False)] == ["milk"]


def test_a_new_user_gets_popular_items() -> None:
    recommender = Recommender()
    for n, (user, item) in enumerate([("a", "tea"), ("b", "tea"), ("b", "jam"), ("c", "milk")]):
        recommender.learn(event(n, user, item))
    recs = recommender.recommend("nobody", 2)
    assert [(r.item, r.reason) for r in recs] == [("tea", Reason.POPULAR), ("jam", Reason.POPULAR)]


def test_seen_items_are_excluded_unless_asked() -> None:
    recommender = Recommender()
    for e in random_events(300):
        recommender.learn(e)
    recommender.registry.install(als=train_als(recommender.store.to_matrix(), SMALL_ALS, version=1))
    seen = set(recommender.store.seen("u3"))
    for policy in ("als", "item-knn", "hybrid"):
        recommender.policy = policy
        recs = recommender.recommend("u3", 10)
        assert len(recs) == 10 and not seen & {r.item for r in recs}
    recommender.policy = "als"
    with_seen = recommender.recommend("u3", 25, exclude_seen=False)
    assert seen <= {r.item for r in with_seen}


def test_als_snapshot_round_trip_gives_identical_recommendations() -> None:
    store = InteractionStore()
    for e in random_events(400):
        store.record(e)
    model = train_als(store.to_matrix(), SMALL_ALS, version=3)
    data = model.to_bytes()
    assert data == train_als(store.to_matrix(), SMALL_ALS, version=3).to_bytes()  # deterministic
    loaded = AlsModel.from_bytes(data)
    assert loaded.version == 3 and loaded.parameters == SMALL_ALS
    assert loaded.to_bytes() == data
    for user in ("u1", "u2", "u17"):
        assert loaded.recommend(user, store.seen(user), 10) == model.recommend(
            user, store.seen(user), 10
        )
    bm25 = AlsParameters(factors=8, iterations=5, regularization=0.5, weighting="bm25")
    model = train_als(store.to_matrix(), bm25, version=4)
    assert AlsModel.from_bytes(model.to_bytes()).recommend("new", {"i1": 2.0}, 5) == (
        model.recommend("new", {"i1": 2.0}, 5)
    )


def test_als_folds_in_a_user_it_was_not_trained_on() -> None:
    store = InteractionStore()
    for e in random_events(400):
        store.record(e)
    model = train_als(store.to_matrix(), SMALL_ALS, version=1)
    recs = model.recommend("stranger", {"i1": 1.0, "i2": 3.0}, 5)
    assert len(recs) == 5 and all(r.item not in {"i1", "i2"} for r in recs)
    assert all(set(r.because) <= {"i1", "i2"} for r in recs)
    assert model.recommend("stranger", {"unknown": 1.0}, 5) == []


def test_registry_swaps_the_whole_set_and_counts_versions() -> None:
    recommender = Recommender()
    for e in random_events(300):
        recommender.learn(e)
    before = recommender.registry.current
    als = train_als(recommender.snapshot().matrix, SMALL_ALS, version=recommender.next_version())
    after = recommender.registry.install(als=als)
    assert (before.version, before.als) == (0, None)
    assert after.version == 1 and after.als is als and recommender.registry.current is after
    assert ModelRegistry(after).current.als is als


def test_settings_map_kinds_to_weights() -> None:
    settings = RecommenderSettings()
    assert settings.app_id == "recommender"
    assert settings.kind_weights == {
        InteractionKind.VIEW: 1.0,
        InteractionKind.ADD_TO_CART: 3.0,
        InteractionKind.PURCHASE: 5.0,
    }
    assert settings.als_parameters == AlsParameters()
