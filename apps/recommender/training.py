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
import logging
import signal
import time
from dataclasses import dataclass

from apps.recommender.als import AlsParameters
from apps.recommender.interactions import InteractionStore
from apps.recommender.recommend import TrainingSnapshot, train_als_of
from apps.recommender.rules import AssociationRules, MiningLimits

log = logging.getLogger("recommender.training")

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
        store: the store's `to_bytes()` (its part of the snapshot).
        als: the new ALS model's `to_bytes()`, or None when there were too few users.
        rules: the new rule set's `to_bytes()`, or None when the mining failed (the
            serving rules stay).
        rules_count: how many association rules were mined.
        rules_cut_short: why the mining stopped at a limit (its rules are partial), or None.
        rules_failed: why the mining failed, or None.
        seconds: the time the run took in its process.
    """

    version: int
    events: int
    users: int
    items: int
    store: bytes
    als: bytes | None
    rules: bytes | None
    rules_count: int
    rules_cut_short: str | None
    rules_failed: str | None
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
    limits: MiningLimits | None = None,
) -> TrainingResult:
    """Train ALS, then mine the rules of `store` (a copy nobody else changes).

    ALS comes first and is given back whatever the mining does: the mining stops at
    `limits` with partial rules, and if it fails all the same, the result carries no
    rules and says why.

    Args:
        store: the interactions to learn from.
        version: the version the new models carry.
        als_parameters: ALS hyperparameters.
        min_support, min_confidence, max_len: the rule thresholds.
        min_users: fewest users for ALS to train (below: rules only).
        limits: the bounds of the mining (defaults: `MiningLimits()`).
    """
    started = time.perf_counter()
    snapshot = TrainingSnapshot.of(store)
    als = train_als_of(
        snapshot, version=version, als_parameters=als_parameters, min_users=min_users
    )
    als_bytes = als.to_bytes() if als is not None else None
    rules: AssociationRules | None = None
    failed: str | None = None
    try:
        rules = AssociationRules.mine(
            snapshot.baskets,
            min_support=min_support,
            min_confidence=min_confidence,
            max_len=max_len,
            version=version,
            limits=limits,
        )
    except Exception as exc:  # MemoryError too: ALS is trained, and still serves
        log.exception("association rule mining failed")
        failed = f"{type(exc).__name__}: {exc}"
    return TrainingResult(
        version=version,
        events=snapshot.events,
        users=len(snapshot.matrix.users),
        items=len(snapshot.matrix.items),
        store=store.to_bytes(),
        als=als_bytes,
        rules=rules.to_bytes() if rules is not None else None,
        rules_count=len(rules) if rules is not None else 0,
        rules_cut_short=rules.cut_short if rules is not None else None,
        rules_failed=failed,
        seconds=time.perf_counter() - started,
    )
