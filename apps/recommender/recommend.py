"""The recommender as a service uses it: learning, serving, cold start and model swaps.

Plain domain code: no web framework, no Dapr. `Recommender` ties the parts together:

- the `InteractionStore` (user-item weights, idempotent by event id) and the `ItemKnn`
  model are updated on every new interaction (`learn`);
- the trained models, ALS and association rules, sit in a `ModelSet` behind a
  `ModelRegistry`. A new model is built beside the serving one (`snapshot()` on the
  serving thread, `train_models(...)` in a worker thread) and swapped in with one
  reference assignment under a lock (`install`): a request sees the old set or the new
  one, never a mix, and keeps the set it started with.

Policy of `recommend(user, k)`:

1. A user with no interactions (cold start) gets the most popular items (most distinct
   users), reason `popular`.
2. `als` (the default): the ALS model ranks, reason `als`; users it was not trained on
   are folded in from their interactions. Before the first model exists, or when it
   knows none of the user's items, item-to-item ranks instead, reason `item-knn`.
   `item-knn` pins item-to-item. `hybrid` merges both lists by reciprocal rank fusion
   (score = sum of 1 / (60 + rank), Cormack et al. 2009), reason `hybrid` for items
   both chose. On MSWeb (bench/eval_recommender.py) ALS alone has the best NDCG@10
   (0.520 against 0.494 for the fusion and 0.469 for item-to-item) at the same hit rate
   as the fusion, hence the default.
3. Lists shorter than k are filled with popular items the user has not seen, reason
   `popular`.

Each personal recommendation names the seen items that led to it (`because`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from apps.recommender.als import AlsModel, AlsParameters, train_als
from apps.recommender.interactions import Interaction, InteractionMatrix, InteractionStore
from apps.recommender.itemknn import ItemKnn
from apps.recommender.ranking import ScoredItem
from apps.recommender.rules import AssociationRules, BasketCompletion, MiningLimits

#: Reciprocal rank fusion's constant (Cormack, Clarke and Buettcher, SIGIR 2009).
RRF_K = 60

Policy = Literal["als", "item-knn", "hybrid"]
DEFAULT_POLICY: Policy = "als"


class Reason(StrEnum):
    """Why an item was recommended."""

    POPULAR = "popular"
    ITEM_KNN = "item-knn"
    ALS = "als"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Recommendation:
    """One item for a user.

    Attributes:
        item: the item id.
        score: higher is better; comparable within one response only.
        reason: which model chose it (`popular` for cold start and fill-up).
        because: the user's items that led to it, strongest first.
    """

    item: str
    score: float
    reason: Reason
    because: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSet:
    """The trained models serving together; replaced whole, never changed in place.

    Attributes:
        version: increases by one with every install.
        als: the factorisation model, or None before the first training.
        rules: the association rules, or None before the first mining.
    """

    version: int = 0
    als: AlsModel | None = None
    rules: AssociationRules | None = None


class ModelRegistry:
    """Holds the serving `ModelSet` and swaps it atomically."""

    def __init__(self, initial: ModelSet | None = None) -> None:
        self._current = initial or ModelSet()
        self._lock = threading.Lock()

    @property
    def current(self) -> ModelSet:
        """The serving set: read it once per request and use that reference throughout."""
        return self._current

    def install(
        self, *, als: AlsModel | None = None, rules: AssociationRules | None = None
    ) -> ModelSet:
        """Serve new models from now on; what is not given stays. Returns the new set."""
        with self._lock:
            current = self._current
            self._current = ModelSet(
                version=current.version + 1,
                als=als if als is not None else current.als,
                rules=rules if rules is not None else current.rules,
            )
            return self._current


@dataclass(frozen=True)
class TrainingSnapshot:
    """What a training run needs, copied from the store on the recording thread."""

    matrix: InteractionMatrix
    baskets: tuple[frozenset[str], ...]
    events: int

    @classmethod
    def of(cls, store: InteractionStore) -> TrainingSnapshot:
        """What training needs from `store` (call it where `store` may not change, e.g. on
        a `store.copy()` in the training thread)."""
        return cls(store.to_matrix(), tuple(store.baskets()), store.events)


def train_als_of(
    snapshot: TrainingSnapshot,
    *,
    version: int,
    als_parameters: AlsParameters | None = None,
    min_users: int = 1,
) -> AlsModel | None:
    """Train ALS on a snapshot; None with fewer than `min_users` users (item-to-item
    serves meanwhile).

    Args:
        snapshot: `Recommender.snapshot()`.
        version: the version the new model carries.
        als_parameters: ALS hyperparameters (defaults: `AlsParameters()`).
        min_users: fewest users with interactions for ALS to train.
    """
    users = len(snapshot.matrix.users)
    if users >= max(min_users, 1) and snapshot.matrix.weights.nnz:
        return train_als(snapshot.matrix, als_parameters, version=version)
    return None


def train_models(
    snapshot: TrainingSnapshot,
    *,
    version: int,
    als_parameters: AlsParameters | None = None,
    min_support: float = 0.001,
    min_confidence: float = 0.5,
    max_len: int = 10,
    min_users: int = 1,
    limits: MiningLimits | None = None,
) -> tuple[AlsModel | None, AssociationRules]:
    """Train ALS and mine the rules of a snapshot (no shared state: run it in a thread).

    Args:
        snapshot: `Recommender.snapshot()`.
        version: the version both new models carry.
        als_parameters: ALS hyperparameters (defaults: `AlsParameters()`).
        min_support, min_confidence, max_len: the rule thresholds.
        min_users: fewest users with interactions for ALS to train; with fewer, ALS is
            None (item-to-item serves) and only the rules are mined.
        limits: the bounds of the mining (defaults: `MiningLimits()`).
    """
    als = train_als_of(
        snapshot, version=version, als_parameters=als_parameters, min_users=min_users
    )
    rules = AssociationRules.mine(
        snapshot.baskets,
        min_support=min_support,
        min_confidence=min_confidence,
        max_len=max_len,
        version=version,
        limits=limits,
    )
    return als, rules


class Recommender:
    """Learns from interactions and serves recommendations, similar items and baskets.

    Not thread-safe for `learn`: call it, `recommend` and `snapshot` from one thread (the
    event loop); only `train_models` belongs in a worker thread.

    Args:
        store: the interactions (a new one, or restored with `from_bytes`).
        knn: the item-to-item model; None builds it from the store.
        registry: the serving models; None starts without trained models.
        policy: `als` (default: item-to-item until ALS can serve), `item-knn` or `hybrid`.
        neighbourhood: neighbours per item when the item-to-item model is built here.
    """

    def __init__(
        self,
        store: InteractionStore | None = None,
        knn: ItemKnn | None = None,
        registry: ModelRegistry | None = None,
        *,
        policy: Policy = DEFAULT_POLICY,
        neighbourhood: int = 100,
    ) -> None:
        self.store = store or InteractionStore()
        self.knn = knn or ItemKnn.from_matrix(self.store.to_matrix(), neighbourhood)
        self.registry = registry or ModelRegistry()
        self.policy = policy

    def learn(self, interaction: Interaction) -> bool:
        """Apply one interaction; False when its event id was applied before."""
        change = self.store.record(interaction)
        if change is None:
            return False
        self.knn.apply(change, self.store.seen(interaction.user))
        return True

    def snapshot(self) -> TrainingSnapshot:
        """A copy of what training needs (cheap; take it on the recording thread)."""
        return TrainingSnapshot.of(self.store)

    def next_version(self) -> int:
        return self.registry.current.version + 1

    def popular(self, k: int, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """The `k` most popular items (distinct users), except `exclude`."""
        return [
            Recommendation(item, float(users), Reason.POPULAR)
            for item, users in self.store.popular(k, exclude)
        ]

    def recommend(self, user: str, k: int, exclude_seen: bool = True) -> list[Recommendation]:
        """Up to `k` items for `user`, best first; an unknown user gets popular items.

        Args:
            user: the user id (unknown users are cold start, not an error).
            k: most items returned (at least 1).
            exclude_seen: leave out items the user already interacted with.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        seen = self.store.seen(user)
        if not seen:
            return self.popular(k)
        models = self.registry.current
        ranked: dict[Reason, list[ScoredItem]] = {}
        if self.policy != "item-knn" and models.als is not None:
            ranked[Reason.ALS] = models.als.recommend(user, seen, k, exclude_seen)
        if self.policy != "als" or not ranked.get(Reason.ALS):
            ranked[Reason.ITEM_KNN] = self.knn.recommend(seen, k, exclude_seen)
        result = _fuse(ranked, k)
        if len(result) < k:
            skip = {r.item for r in result} | (set(seen) if exclude_seen else set())
            result.extend(self.popular(k - len(result), skip))
        return result

    def similar(self, item: str, k: int) -> list[tuple[str, float]]:
        """Up to `k` items most similar to `item` (cosine), empty for an unknown item."""
        if k < 1:
            raise ValueError("k must be at least 1")
        return self.knn.similar(item, k)

    def complete_basket(self, items: Iterable[str], k: int) -> list[BasketCompletion]:
        """Up to `k` items completing a basket from the serving rules (empty before any)."""
        rules = self.registry.current.rules
        return rules.complete_basket(items, k) if rules is not None else []


def _fuse(ranked: dict[Reason, list[ScoredItem]], k: int) -> list[Recommendation]:
    """Reciprocal rank fusion of the models' lists (one list passes through as it is)."""
    lists = {reason: items for reason, items in ranked.items() if items}
    if len(lists) == 1:
        ((reason, items),) = lists.items()
        return [Recommendation(s.item, s.score, reason, s.because) for s in items[:k]]
    scores: dict[str, float] = {}
    sources: dict[str, list[Reason]] = {}
    because: dict[str, list[str]] = {}
    for reason, items in lists.items():
        for rank, scored in enumerate(items, 1):
            scores[scored.item] = scores.get(scored.item, 0.0) + 1.0 / (RRF_K + rank)
            sources.setdefault(scored.item, []).append(reason)
            reasons = because.setdefault(scored.item, [])
            reasons.extend(i for i in scored.because if i not in reasons)
    order = sorted(scores, key=lambda item: (-scores[item], item))[:k]
    return [
        Recommendation(
            item,
            scores[item],
            Reason.HYBRID if len(sources[item]) > 1 else sources[item][0],
            tuple(because[item][:3]),
        )
        for item in order
    ]
