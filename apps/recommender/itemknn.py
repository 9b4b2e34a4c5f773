"""Item-to-item cosine similarity, kept up to date one interaction at a time.

Plain domain code: no web framework, no Dapr. Two items are similar when the same users
interacted with both: the cosine of their columns of the user-item weight matrix R,

    sim(i, j) = (R[:, i] . R[:, j]) / (|R[:, i]| |R[:, j]|).

The model keeps the dot products of co-occurring items and every item's squared norm.
When user u's weight on item i goes from `before` to `after` (d = after - before), only
dot(i, j) for the other items j of u changes, by d * R[u, j], and |R[:, i]|^2 changes by
after^2 - before^2: an update costs O(items of u), the same sums a from-scratch
computation (R^T R) would give. Neighbour lists (the `neighbourhood` most similar items of
an item) are recomputed lazily: an update marks the changed item and its co-occurring
items stale, and the next query that needs one of them rebuilds that list.

A user's recommendations score each candidate j by sum over seen items i of
R[u, i] * sim(i, j), over the seen items' neighbour lists; the seen items that contribute
most are the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from apps.recommender.interactions import InteractionMatrix, WeightChange
from apps.recommender.ranking import ScoredItem

#: How many seen items a recommendation names as its reasons, at most.
MAX_REASONS = 3


class ItemKnn:
    """Incremental item-item cosine similarity.

    Args:
        neighbourhood: how many neighbours of an item are kept for scoring and `similar`.
    """

    def __init__(self, neighbourhood: int = 100) -> None:
        if neighbourhood < 1:
            raise ValueError("neighbourhood must be at least 1")
        self.neighbourhood = neighbourhood
        self._dots: dict[str, dict[str, float]] = {}
        self._norms2: dict[str, float] = {}
        self._neighbours: dict[str, list[tuple[str, float]]] = {}
        self._stale: set[str] = set()

    @classmethod
    def from_matrix(cls, matrix: InteractionMatrix, neighbourhood: int = 100) -> ItemKnn:
        """The model of a whole weight matrix at once (R^T R), e.g. after a restart."""
        model = cls(neighbourhood)
        weights = matrix.weights.astype("float64")
        gram = (weights.T @ weights).tocoo()
        for i, j, value in zip(gram.row, gram.col, gram.data, strict=True):
            a, b = matrix.items[i], matrix.items[j]
            if i == j:
                model._norms2[a] = float(value)
            elif value != 0:
                model._dots.setdefault(a, {})[b] = float(value)
        for item in matrix.items:
            model._norms2.setdefault(item, 0.0)
        model._stale.update(model._norms2)
        return model

    def apply(self, change: WeightChange, seen: Mapping[str, float]) -> None:
        """Take in one weight change.

        Args:
            change: what the store's `record` returned.
            seen: the user's weights after the change (the store's `seen(user)`).
        """
        item, delta = change.item, change.after - change.before
        if delta == 0:
            return
        row = self._dots.setdefault(item, {})
        for other, weight in seen.items():
            if other == item:
                continue
            row[other] = row.get(other, 0.0) + delta * weight
            back = self._dots.setdefault(other, {})
            back[item] = back.get(item, 0.0) + delta * weight
        self._norms2[item] = self._norms2.get(item, 0.0) + change.after**2 - change.before**2
        # Item's norm changed, so its similarity to every co-occurring item changed.
        self._stale.add(item)
        self._stale.update(row)

    def items(self) -> int:
        """How many items the model knows."""
        return len(self._norms2)

    def knows(self, item: str) -> bool:
        return item in self._norms2

    def dot(self, a: str, b: str) -> float:
        """The dot product of two items' columns (for checks against a recomputation)."""
        if a == b:
            return self._norms2.get(a, 0.0)
        return self._dots.get(a, {}).get(b, 0.0)

    def similarity(self, a: str, b: str) -> float:
        """The cosine similarity of two items (0 when either has no interactions)."""
        norms = self._norms2.get(a, 0.0) * self._norms2.get(b, 0.0)
        return self.dot(a, b) / math.sqrt(norms) if norms > 0 else 0.0

    def neighbours(self, item: str) -> list[tuple[str, float]]:
        """The `neighbourhood` items most similar to `item` with their similarity, best
        first (ties by item id); rebuilt here if an interaction made it stale."""
        if item in self._stale or item not in self._neighbours:
            norm_a = math.sqrt(self._norms2.get(item, 0.0))
            ranked: list[tuple[str, float]] = []
            if norm_a > 0:
                for other, dot in self._dots.get(item, {}).items():
                    norm_b = self._norms2.get(other, 0.0)
                    if dot > 0 and norm_b > 0:
                        ranked.append((other, dot / (norm_a * math.sqrt(norm_b))))
            ranked.sort(key=lambda pair: (-pair[1], pair[0]))
            self._neighbours[item] = ranked[: self.neighbourhood]
            self._stale.discard(item)
        return self._neighbours[item]

    def similar(self, item: str, k: int) -> list[tuple[str, float]]:
        """Up to `k` items most similar to `item` (empty for an unknown item)."""
        return self.neighbours(item)[:k] if item in self._norms2 else []

    def recommend(
        self, seen: Mapping[str, float], k: int, exclude_seen: bool = True
    ) -> list[ScoredItem]:
        """Up to `k` items for a user who interacted with `seen`, best first.

        Args:
            seen: the user's items and weights (the store's `seen(user)`).
            k: most items returned.
            exclude_seen: leave out the items in `seen`.
        """
        scores: dict[str, float] = {}
        contributions: dict[str, list[tuple[float, str]]] = {}
        for source, weight in seen.items():
            if source not in self._norms2:
                continue
            for other, similarity in self.neighbours(source):
                if exclude_seen and other in seen:
                    continue
                part = weight * similarity
                scores[other] = scores.get(other, 0.0) + part
                contributions.setdefault(other, []).append((part, source))
        ranked = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
        result = []
        for item, score in ranked:
            parts = sorted(contributions[item], key=lambda pair: (-pair[0], pair[1]))
            because = tuple(source for _, source in parts[:MAX_REASONS])
            result.append(ScoredItem(item, score, because))
        return result
