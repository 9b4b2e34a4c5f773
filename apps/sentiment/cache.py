"""The results served lately, kept in process in front of the state store's shared cache.

A result depends only on the text and the model version (both in the key), so a kept one
never goes stale; the store stays the cache replicas share and the one that outlives a
restart. This one saves the round trip to the sidecar and the store for the hottest texts.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class ResultCache(Generic[V]):
    """At most `capacity` values by key, the least recently used leaving first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, V] = OrderedDict()

    def get_many(self, keys: list[str]) -> dict[str, V]:
        found: dict[str, V] = {}
        for key in keys:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
                found[key] = value
        return found

    def put(self, key: str, value: V) -> None:
        if self.capacity <= 0:
            return
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.capacity:
            self._values.popitem(last=False)

    def __len__(self) -> int:
        return len(self._values)
