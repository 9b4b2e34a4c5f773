"""Interactions (user, item, kind, weight, time) and the store of what each user did.

Plain domain code: no web framework, no Dapr. The store keeps one weight per user and
item (the sum of the weights of that pair's interactions) in dictionaries of dictionaries
(a sparse matrix that grows in O(1) per event), the number of distinct users of every item
(its popularity), and every event id it has applied, so an event delivered twice counts
once. The id set is exact and unbounded: about 100 bytes per event id in CPython, so
10 million events hold about 1 GB; a deployment that outgrows that snapshots and compacts
(see `InteractionStore.to_bytes`).

The store is not thread-safe: one thread (the service's event loop) records; a trainer
in another thread works on `to_matrix()`, a copy taken on the recording thread.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import sparse

_FORMAT = "consort.recommender.interactions/1"


class InteractionKind(StrEnum):
    """What a user did with an item."""

    VIEW = "view"
    ADD_TO_CART = "add-to-cart"
    PURCHASE = "purchase"


#: The default weight of each kind (settings can change them).
DEFAULT_KIND_WEIGHTS: Mapping[InteractionKind, float] = {
    InteractionKind.VIEW: 1.0,
    InteractionKind.ADD_TO_CART: 3.0,
    InteractionKind.PURCHASE: 5.0,
}


@dataclass(frozen=True)
class Interaction:
    """One thing a user did with an item.

    Attributes:
        event_id: the idempotency key (the CloudEvent id): applied once, however often
            it is delivered.
        user: who.
        item: what.
        kind: view, add-to-cart or purchase.
        time: when it happened.
        weight: how much it counts; None takes the kind's weight from the store.
    """

    event_id: str
    user: str
    item: str
    kind: InteractionKind
    time: datetime
    weight: float | None = None


@dataclass(frozen=True)
class WeightChange:
    """What one applied interaction changed: the user-item weight before and after."""

    user: str
    item: str
    before: float
    after: float


@dataclass(frozen=True)
class InteractionMatrix:
    """The user-item weights as a CSR matrix (users x items) and the ids of its rows and
    columns, both sorted, so equal stores give equal matrices."""

    weights: sparse.csr_matrix
    users: tuple[str, ...]
    items: tuple[str, ...]

    def user_index(self) -> dict[str, int]:
        return {user: i for i, user in enumerate(self.users)}

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}


class InteractionStore:
    """User-item weights learned from interactions, idempotent by event id.

    Args:
        kind_weights: the weight of each kind, for interactions that carry none.
    """

    def __init__(self, kind_weights: Mapping[InteractionKind, float] | None = None) -> None:
        self.kind_weights: dict[InteractionKind, float] = dict(
            DEFAULT_KIND_WEIGHTS if kind_weights is None else kind_weights
        )
        self._by_user: dict[str, dict[str, float]] = {}
        self._users_of: dict[str, int] = {}
        self._applied: set[str] = set()
        self.latest: datetime | None = None

    @property
    def events(self) -> int:
        """How many distinct events were applied."""
        return len(self._applied)

    def has_applied(self, event_id: str) -> bool:
        return event_id in self._applied

    def weight_of(self, interaction: Interaction) -> float:
        """The weight `interaction` adds: its own, else its kind's."""
        weight = (
            self.kind_weights[interaction.kind]
            if interaction.weight is None
            else interaction.weight
        )
        if not weight > 0 or weight == float("inf"):
            raise ValueError(f"weight must be positive and finite, not {weight!r}")
        return float(weight)

    def record(self, interaction: Interaction) -> WeightChange | None:
        """Apply `interaction` unless its event id was applied before.

        Returns:
            the weight change, or None for a duplicate (nothing changed).

        Raises:
            ValueError: the weight is not positive and finite, or user or item is empty.
        """
        if interaction.event_id in self._applied:
            return None
        if not interaction.user or not interaction.item:
            raise ValueError("user and item must not be empty")
        weight = self.weight_of(interaction)
        self._applied.add(interaction.event_id)
        items = self._by_user.setdefault(interaction.user, {})
        before = items.get(interaction.item, 0.0)
        if before == 0.0:
            self._users_of[interaction.item] = self._users_of.get(interaction.item, 0) + 1
        after = before + weight
        items[interaction.item] = after
        if self.latest is None or interaction.time > self.latest:
            self.latest = interaction.time
        return WeightChange(interaction.user, interaction.item, before, after)

    def knows(self, user: str) -> bool:
        """Whether `user` has any interaction."""
        return user in self._by_user

    def seen(self, user: str) -> Mapping[str, float]:
        """The items `user` interacted with and their weights (empty for a new user)."""
        return self._by_user.get(user, {})

    def users(self) -> Iterator[str]:
        return iter(self._by_user)

    def items(self) -> Iterator[str]:
        return iter(self._users_of)

    def user_count(self) -> int:
        return len(self._by_user)

    def item_count(self) -> int:
        return len(self._users_of)

    def popularity(self) -> Mapping[str, int]:
        """How many distinct users interacted with each item."""
        return self._users_of

    def popular(self, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, int]]:
        """The `k` items with the most distinct users (ties by item id), except `exclude`."""
        skip = set(exclude)
        ranked = sorted(
            ((item, users) for item, users in self._users_of.items() if item not in skip),
            key=lambda pair: (-pair[1], pair[0]),
        )
        return ranked[:k]

    def baskets(self) -> Iterator[frozenset[str]]:
        """Each user's items as one transaction (what association rules are mined from)."""
        for items in self._by_user.values():
            yield frozenset(items)

    def copy(self) -> InteractionStore:
        """An independent copy (cheap next to `to_matrix` or `to_bytes`): take it on the
        recording thread, then serialise or train from it in another."""
        other = InteractionStore(self.kind_weights)
        other._by_user = {user: dict(items) for user, items in self._by_user.items()}
        other._users_of = dict(self._users_of)
        other._applied = set(self._applied)
        other.latest = self.latest
        return other

    def to_matrix(self) -> InteractionMatrix:
        """A copy of the weights as a users x items CSR matrix (float32, sorted ids)."""
        users = tuple(sorted(self._by_user))
        items = tuple(sorted(self._users_of))
        column = {item: j for j, item in enumerate(items)}
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        indices: list[int] = []
        data: list[float] = []
        for i, user in enumerate(users):
            row = sorted((column[item], weight) for item, weight in self._by_user[user].items())
            indices.extend(j for j, _ in row)
            data.extend(w for _, w in row)
            indptr[i + 1] = len(indices)
        index_array: npt.NDArray[np.int32] = np.asarray(indices, dtype=np.int32)
        weights = sparse.csr_matrix(
            (np.asarray(data, dtype=np.float32), index_array, indptr),
            shape=(len(users), len(items)),
        )
        return InteractionMatrix(weights, users, items)

    def to_bytes(self) -> bytes:
        """The whole store, applied event ids included, as deterministic bytes
        (zlib-compressed JSON), so a restarted service keeps its idempotency."""
        body = {
            "format": _FORMAT,
            "kind_weights": {str(kind): w for kind, w in self.kind_weights.items()},
            "weights": {user: self._by_user[user] for user in sorted(self._by_user)},
            "applied": sorted(self._applied),
            "latest": self.latest.isoformat() if self.latest else None,
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return zlib.compress(text.encode("utf-8"), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> InteractionStore:
        """A store from `to_bytes()` output."""
        body = json.loads(zlib.decompress(data))
        if body.get("format") != _FORMAT:
            raise ValueError(f"not an interaction store snapshot ({body.get('format')!r})")
        store = cls({InteractionKind(k): float(w) for k, w in body["kind_weights"].items()})
        for user, items in body["weights"].items():
            store._by_user[user] = {item: float(w) for item, w in items.items()}
            for item in items:
                store._users_of[item] = store._users_of.get(item, 0) + 1
        store._applied = set(body["applied"])
        store.latest = datetime.fromisoformat(body["latest"]) if body["latest"] else None
        return store
