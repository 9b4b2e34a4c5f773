"""The recommender as it runs, apart from its transport: the models it serves, its place in
the journal, its snapshots and its trainer.

- At start-up it loads the latest snapshot and replays the journal after it: it serves
  the persisted version at once, without retraining.
- A delivery's new interactions (by CloudEvent id) go to the journal in the state store,
  then into the interaction store and the item-to-item model.
- ALS and the association rules are retrained every `retrain_interval_s` when something
  new was learnt, or when asked: in a worker process, beside the serving models, which
  are then swapped for the new ones atomically under the next version, and saved. ALS is
  trained first and installed whatever the mining does: a mining cut short at its limits
  installs its partial rules, a mining that fails leaves the serving rules. The last
  retraining's report (ok, cut short or failed, why, how long, what it refreshed) is part
  of the model status.

No web framework here: `main` maps `NotReady` to a 503 problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any, TypeVar

from pydantic import ValidationError

from apps.recommender.als import AlsModel
from apps.recommender.interactions import Interaction, InteractionKind, InteractionStore
from apps.recommender.persistence import Manifest, ModelStore, journal_key, manifest_key
from apps.recommender.recommend import ModelSet, Recommender
from apps.recommender.rules import AssociationRules
from apps.recommender.settings import RecommenderSettings
from apps.recommender.snapshot import Snapshot
from apps.recommender.training import TrainingResult, die_with_parent, train
from consort.contracts.common import ModelInfo
from consort.contracts.recommender import (
    AlsInfo,
    InteractionRecorded,
    ModelStatus,
    Reason,
    RecommendationRequest,
    Recommendations,
    RecommendedItem,
    RetrainAccepted,
    SnapshotInfo,
    TrainedPart,
    TrainingOutcome,
    TrainingReport,
)
from consort.kit.dapr import Sidecar, SidecarError
from consort.kit.events import CloudEvent, Delivery
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("recommender")
tracer = get_tracer("recommender")
T = TypeVar("T")
IMPLICIT = ModelInfo(name="implicit", version=package_version("implicit"))


class NotReady(RuntimeError):
    """The models are not serving yet (the snapshot loads, or failed to load)."""


class Service:
    """The recommender as it runs: its models, its place in the journal, its training.

    Args:
        settings: the service's settings.
        sidecar: the sidecar (a callable: the kit makes it at start-up).
        announced: the models the app reports (the kit's `extra_models`), kept to the
            serving set.
    """

    def __init__(
        self,
        settings: RecommenderSettings,
        sidecar: Callable[[], Sidecar],
        announced: list[ModelInfo],
    ) -> None:
        self.settings = settings
        # Where snapshots and the journal live.
        self.store = ModelStore(
            sidecar,
            settings.statestore_name,
            chunk_bytes=settings.snapshot_chunk_bytes,
            kept=settings.snapshots_kept,
        )
        self.sidecar = sidecar
        self.announced = announced
        self.recommender: Recommender | None = None
        self.failure: str | None = None
        self.loaded = asyncio.Event()
        # Held while a delivery journals and applies its interactions, and while a training
        # copies the store: a copy never falls between an entry's write and its apply.
        self.learning = asyncio.Lock()
        self.journal_start = 0
        self.journal_next = 0
        self.restored = False
        self.trained_events = 0
        self.trained_at: datetime | None = None
        self.last_training_s: float | None = None
        self.last_training: TrainingReport | None = None
        self.snapshot: SnapshotInfo | None = None
        # One trainer runs retrainings one after another; asking while one is under way
        # queues one more (with data as of the ask), however often it is asked.
        self.wanted = asyncio.Event()
        self.running = False
        self.installing = False
        self.workers: ProcessPoolExecutor | None = None

    # -- start-up --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the latest snapshot and replay the journal after it; then serve."""
        try:
            while not await self.sidecar().is_healthy():
                await asyncio.sleep(0.2)
            started = time.perf_counter()
            recommender, journal_from = await self._restore()
            entries, journal_next = await self._retrying(lambda: self.store.replay(journal_from))
            replayed = await asyncio.to_thread(_learn_all, recommender, entries)
        except Exception as exc:  # reported by /readyz: waiting will not mend it
            log.exception("the model snapshot failed to load")
            self.failure = f"the model snapshot failed to load: {type(exc).__name__}: {exc}"
            return
        self.recommender = recommender
        self.journal_start, self.journal_next = journal_from, journal_next
        self.announce(recommender.registry.current)
        self.loaded.set()
        log.info(
            "serving model version %d (%s) in %.2f s; %d interactions replayed from %d "
            "journal entries",
            recommender.registry.current.version,
            "from the snapshot" if self.restored else "no snapshot yet",
            time.perf_counter() - started,
            replayed,
            len(entries),
        )

    async def _restore(self) -> tuple[Recommender, int]:
        """The recommender of the latest snapshot (or a new one), and where its journal
        starts."""
        loaded = await self._retrying(self.store.load)
        if loaded is None:
            fresh = Recommender(
                InteractionStore(self.settings.kind_weights),
                policy=self.settings.policy,
                neighbourhood=self.settings.knn_neighbourhood,
            )
            return fresh, 0
        manifest, snapshot = loaded
        recommender = await asyncio.to_thread(
            snapshot.restore,
            kind_weights=self.settings.kind_weights,
            policy=self.settings.policy,
            neighbourhood=self.settings.knn_neighbourhood,
        )
        self.restored = True
        self.trained_events = recommender.store.events
        self.trained_at = manifest.saved_at
        self.snapshot = _snapshot_info(manifest)
        return recommender, manifest.journal_from

    @staticmethod
    async def _retrying(call: Any, attempts: int = 30) -> Any:
        """`call()`, again after a second while the state store is unreachable."""
        for attempt in range(attempts):
            try:
                return await call()
            except SidecarError as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("state store not reachable yet: %s", exc)
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def readiness(self) -> str | None:
        """Why the service is not ready, or None."""
        if self.failure:
            return self.failure
        return None if self.loaded.is_set() else "the model snapshot is loading"

    def serving(self) -> Recommender:
        """The recommender; `NotReady` while the snapshot loads (or when it failed)."""
        if self.recommender is None:
            raise NotReady(self.failure or "the model snapshot is still loading; retry shortly")
        return self.recommender

    # -- learning --------------------------------------------------------------------------
    async def learn(self, interactions: list[Interaction]) -> Delivery:
        """Journal and apply the interactions not applied before (by event id)."""
        recommender = self.serving()
        async with self.learning:
            fresh: dict[str, Interaction] = {}
            for interaction in interactions:
                event_id = interaction.event_id
                if recommender.store.has_applied(event_id) or event_id in fresh:
                    log.info("%s already applied", event_id)
                else:
                    fresh[event_id] = interaction
            if not fresh:
                return Delivery.SUCCESS
            try:
                await self.store.append(self.journal_next, list(fresh.values()))
            except SidecarError as exc:
                # Nothing was applied: the redelivery applies it (the entry, if it was
                # written after all, is overwritten by the next delivery's).
                log.warning(
                    "%d interactions not journaled, will be redelivered: %s", len(fresh), exc
                )
                return Delivery.RETRY
            self.journal_next += 1
            for interaction in fresh.values():
                recommender.learn(interaction)
        return Delivery.SUCCESS

    async def deliver(self, interactions: list[Interaction]) -> Delivery:
        """Learn a delivery's interactions, once the snapshot has loaded: daprd delivers
        as soon as the app is alive, maybe before. Not loaded within `event_wait_s`: retry."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), self.settings.event_wait_s)
        if not self.loaded.is_set():
            return Delivery.RETRY
        return await self.learn(interactions)

    # -- training --------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """A retraining is under way or asked for."""
        return self.running or self.wanted.is_set()

    def trigger(self) -> RetrainAccepted:
        """Retrain now, or right after the retraining under way (which may have copied the
        interactions before this call)."""
        serving = self.serving().registry.current.version
        queued = self.running
        self.wanted.set()
        return RetrainAccepted(
            serving_version=serving,
            # Under way and not installed yet: that one is serving + 1, ours the next.
            next_version=serving + (2 if self.installing else 1),
            started=not queued,
        )

    async def trainer(self) -> None:
        """Run the retrainings asked for, one at a time."""
        await self.loaded.wait()
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            self.running = True
            started_at, started = datetime.now(UTC), time.perf_counter()
            try:
                await self.retrain(started_at, started)
            except Exception as exc:  # the serving models stay; the next ask tries again
                log.exception("retraining failed; the serving models stay")
                self.last_training = TrainingReport(
                    outcome=TrainingOutcome.FAILED,
                    reason=f"retraining failed: {type(exc).__name__}: {exc}",
                    started_at=started_at,
                    duration_s=round(time.perf_counter() - started, 3),
                    refreshed=[],
                )
            finally:
                self.running = self.installing = False

    async def retrain(
        self, started_at: datetime | None = None, started: float | None = None
    ) -> ModelSet:
        """Train ALS and mine the rules beside the serving models (in a worker process),
        swap them in, save the snapshot.

        Args:
            started_at: when the retraining began (default: now), for its report.
            started: `time.perf_counter()` then (default: now).
        """
        started_at = started_at or datetime.now(UTC)
        started = started if started is not None else time.perf_counter()
        recommender = self.serving()
        self.installing = True
        async with self.learning:
            frozen = recommender.store.copy()
            journal_from = self.journal_next
        version = recommender.next_version()
        with tracer.start_as_current_span("model.train", attributes={"version": version}):
            result = await self._in_worker(
                train,
                frozen,
                version=version,
                als_parameters=self.settings.als_parameters,
                min_support=self.settings.rules_min_support,
                min_confidence=self.settings.rules_min_confidence,
                max_len=self.settings.rules_max_len,
                min_users=self.settings.als_min_users,
                limits=self.settings.mining_limits,
            )
            als, rules = await asyncio.to_thread(_decode, result)
        installed = recommender.registry.install(als=als, rules=rules)
        self.installing = False
        self.trained_events = result.events
        self.trained_at = datetime.now(UTC)
        self.last_training_s = round(time.perf_counter() - started, 3)
        self.last_training = training_report(
            result, installed.version, started_at, self.last_training_s
        )
        self.announce(installed)
        log.info(
            "model version %d serving (%d events, %d users, %d items, %d rules) after %.2f s "
            "(%.2f s training): %s%s",
            installed.version,
            result.events,
            result.users,
            result.items,
            result.rules_count,
            self.last_training_s,
            result.seconds,
            self.last_training.outcome.value,
            f" ({self.last_training.reason})" if self.last_training.reason else "",
        )
        await self._persist(await asyncio.to_thread(_snapshot_of, result, installed), journal_from)
        return installed

    async def _in_worker(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)` in the training process (started on first use, and
        again if it died)."""
        if self.workers is None:
            self.workers = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.workers, functools.partial(function, *args, **kwargs)
            )
        except BrokenProcessPool:
            self.workers.shutdown(wait=False, cancel_futures=True)
            self.workers = None
            raise

    async def _persist(self, snapshot: Snapshot, journal_from: int) -> None:
        data = await asyncio.to_thread(snapshot.to_bytes)
        try:
            manifest = await self.store.save(snapshot.version, data, journal_from)
        except SidecarError as exc:  # the journal still holds everything: nothing is lost
            log.error("snapshot of version %d not saved: %s", snapshot.version, exc)
            return
        self.snapshot = _snapshot_info(manifest)
        log.info(
            "snapshot of version %d saved: %d bytes in %d chunks",
            manifest.version,
            manifest.bytes,
            manifest.chunks,
        )
        try:
            await self.store.truncate(self.journal_start, journal_from)
            self.journal_start = journal_from
        except SidecarError as exc:  # left-over entries are never replayed again
            log.warning("journal entries before %s not deleted: %s", journal_key(journal_from), exc)

    async def schedule(self) -> None:
        """Retrain every `retrain_interval_s` when something new was learnt."""
        await self.loaded.wait()
        while True:
            await asyncio.sleep(self.settings.retrain_interval_s)
            recommender = self.serving()
            if recommender.store.events != self.trained_events and not self.training:
                self.wanted.set()

    def announce(self, models: ModelSet) -> None:
        """Report `models` as the ones serving (in `/healthz` and the metrics)."""
        self.announced[:] = [
            ModelInfo(name="recommender-models", version=str(models.version)),
            IMPLICIT,
        ]

    def close(self) -> None:
        """Stop the training process (a training under way is abandoned)."""
        if self.workers is not None:
            self.workers.shutdown(wait=False, cancel_futures=True)

    def status(self) -> ModelStatus:
        """The serving version, what it learnt from, the training state, the last snapshot
        and the last retraining's report."""
        recommender = self.serving()
        models = recommender.registry.current
        als = models.als
        return ModelStatus(
            version=models.version,
            trained_at=self.trained_at,
            training=self.training,
            events=recommender.store.events,
            events_since_training=recommender.store.events - self.trained_events,
            users=recommender.store.user_count(),
            items=recommender.store.item_count(),
            als=AlsInfo(
                factors=als.parameters.factors,
                regularization=als.parameters.regularization,
                alpha=als.parameters.alpha,
                iterations=als.parameters.iterations,
                users=len(als.users),
                items=len(als.items),
            )
            if als is not None
            else None,
            rules=len(models.rules) if models.rules is not None else None,
            last_training_s=self.last_training_s,
            restored=self.restored,
            snapshot=self.snapshot,
            retrain_interval_s=self.settings.retrain_interval_s,
            last_training=self.last_training,
        )


def recommendations(
    recommender: Recommender, requests: list[RecommendationRequest]
) -> list[Recommendations]:
    """Each request's answer from the serving models, in order."""
    version = recommender.registry.current.version
    return [
        Recommendations(
            user=request.user,
            items=[
                RecommendedItem(
                    item=r.item,
                    score=r.score,
                    reason=Reason(r.reason.value),
                    because=list(r.because),
                )
                for r in recommender.recommend(request.user, request.k, not request.include_seen)
            ],
            cold_start=not recommender.store.knows(request.user),
            model_version=version,
        )
        for request in requests
    ]


def training_report(
    result: TrainingResult, version: int, started_at: datetime, duration_s: float
) -> TrainingReport:
    """The report of a training run whose models now serve under `version`.

    Args:
        result: what the training process gave back.
        version: the version installed.
        started_at: when the retraining began.
        duration_s: how long it took, installation included.
    """
    refreshed = [TrainedPart.ALS] if result.als is not None else []
    if result.rules is not None:
        refreshed.append(TrainedPart.RULES)
    outcome, reason = TrainingOutcome.OK, None
    if result.rules_failed is not None:
        outcome = TrainingOutcome.FAILED
        reason = f"rule mining failed ({result.rules_failed}); the earlier rules serve"
    elif result.rules_cut_short is not None:
        outcome = TrainingOutcome.CUT_SHORT
        reason = f"rule mining cut short: {result.rules_cut_short}; its partial rules serve"
    return TrainingReport(
        outcome=outcome,
        reason=reason,
        version=version,
        started_at=started_at,
        duration_s=duration_s,
        refreshed=refreshed,
        rules_mined=result.rules_count if result.rules is not None else None,
    )


def decode_deliveries(
    entries: Iterable[tuple[str | None, Any]],
) -> tuple[dict[str | None, Delivery], dict[str | None, Interaction]]:
    """The interactions of a delivery's entries (by entry id), and the entries to drop to
    the dead-letter topic (malformed: they would fail the same way every time)."""
    statuses: dict[str | None, Delivery] = {}
    valid: dict[str | None, Interaction] = {}
    for entry_id, raw in entries:
        try:
            event = CloudEvent.model_validate(raw)
            data = InteractionRecorded.model_validate(event.data)
        except ValidationError as exc:
            log.error("poison interactions.recorded event, dropped to dead letter: %s", exc)
            statuses[entry_id] = Delivery.DROP
            continue
        valid[entry_id] = Interaction(
            event_id=event.id,
            user=data.user,
            item=data.item,
            kind=InteractionKind(data.kind.value),
            time=data.time,
            weight=data.weight,
        )
    return statuses, valid


def _decode(result: TrainingResult) -> tuple[AlsModel | None, AssociationRules | None]:
    """The models of a training result (None: that part stays as it serves)."""
    als = AlsModel.from_bytes(result.als) if result.als is not None else None
    rules = AssociationRules.from_bytes(result.rules) if result.rules is not None else None
    return als, rules


def _snapshot_of(result: TrainingResult, installed: ModelSet) -> Snapshot:
    """The snapshot of the models now serving: the new parts as the training gave them,
    the parts it did not refresh (too few users for ALS, a failed mining) as they serve."""
    return Snapshot(
        version=installed.version,
        interactions=result.store,
        als=result.als
        if result.als is not None or installed.als is None
        else installed.als.to_bytes(),
        rules=result.rules
        if result.rules is not None or installed.rules is None
        else installed.rules.to_bytes(),
    )


def _snapshot_info(manifest: Manifest) -> SnapshotInfo:
    return SnapshotInfo(
        version=manifest.version,
        key=manifest_key(manifest.version),
        bytes=manifest.bytes,
        chunks=manifest.chunks,
        saved_at=manifest.saved_at,
    )


def _learn_all(recommender: Recommender, entries: list[list[Interaction]]) -> int:
    applied = 0
    for entry in entries:
        for interaction in entry:
            applied += recommender.learn(interaction)
    return applied
