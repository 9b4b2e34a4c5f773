"""One training run, as a worker process performs it: from a copy of the interaction store
to the new models and the bytes of the snapshot that will persist them.

Plain domain code: no web framework, no Dapr. The service runs `train` in a separate
process rather than a thread: ALS, rule mining and the encodings hold the GIL for much of
their time, and in a thread they would slow the requests being served (and be slowed by
them) on the same interpreter. What crosses the process boundary is plain data: the store
going in, bytes coming out (`AlsModel.from_bytes` and `AssociationRules.from_bytes` bring
the models back).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import time
from dataclasses import dataclass

from apps.recommender.als import AlsParameters
from apps.recommender.interactions import InteractionStore
from apps.recommender.recommend import TrainingSnapshot, train_models

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Worker initializer: end this process when the service that started it ends, even
    by SIGKILL (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run gives back.

    Attributes:
        version: the version the new models serve under.
        events, users, items: what they were trained on.
        rules_count: how many association rules were mined.
        store: the store's `to_bytes()` (its part of the snapshot).
        als: the new ALS model's `to_bytes()`, or None when there were too few users.
        rules: the new rule set's `to_bytes()`.
        seconds: the time the run took in its process.
    """

    version: int
    events: int
    users: int
    items: int
    rules_count: int
    store: bytes
    als: bytes | None
    rules: bytes
    seconds: float


def train(
    store: InteractionStore,
    *,
    version: int,
    als_parameters: AlsParameters,
    min_support: float,
    min_confidence: float,
    max_len: int,
    min_users: int,
) -> TrainingResult:
    """Train ALS and mine the rules of `store` (a copy nobody else changes).

    Args:
        store: the interactions to learn from.
        version: the version the new models carry.
        als_parameters: ALS hyperparameters.
        min_support, min_confidence, max_len: the rule thresholds.
        min_users: fewest users for ALS to train (below: rules only).
    """
    started = time.perf_counter()
    snapshot = TrainingSnapshot.of(store)
    als, rules = train_models(
        snapshot,
        version=version,
        als_parameters=als_parameters,
        min_support=min_support,
        min_confidence=min_confidence,
        max_len=max_len,
        min_users=min_users,
    )
    return TrainingResult(
        version=version,
        events=snapshot.events,
        users=len(snapshot.matrix.users),
        items=len(snapshot.matrix.items),
        rules_count=len(rules),
        store=store.to_bytes(),
        als=als.to_bytes() if als is not None else None,
        rules=rules.to_bytes(),
        seconds=time.perf_counter() - started,
    )
