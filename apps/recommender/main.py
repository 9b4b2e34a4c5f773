"""The recommender service: transport only. The models live in `recommend` (with `als`,
`itemknn`, `rules`), their encoding in `snapshot`, their keys in the state store in
`persistence`.

- It learns from `interactions.recorded` events, in bulk. The new interactions of a
  delivery (by CloudEvent id: an id seen before counts once) go to the journal in the
  state store, then into the interaction store and the item-to-item model, and only then
  is the delivery acknowledged. Malformed events are dropped to the dead-letter topic.
- It serves recommendations, similar items and basket completions to the gateway.
- ALS and the association rules are retrained every RECOMMENDER_RETRAIN_INTERVAL_S when
  something new was learnt, or on `POST /v1/model/retrain`: in a worker thread, beside
  the serving models, which are then swapped for the new ones atomically under the next
  version. The snapshot (interactions with their event ids, ALS, rules, version) is then
  saved to the state store.
- At start-up it loads the latest snapshot and replays the journal after it: it serves
  the persisted version at once, without retraining.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Annotated, Any, TypeVar

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from threadpoolctl import threadpool_limits

from apps.recommender.als import AlsModel
from apps.recommender.interactions import Interaction, InteractionKind, InteractionStore
from apps.recommender.persistence import ModelStore, journal_key, manifest_key
from apps.recommender.recommend import ModelSet, Recommender
from apps.recommender.rules import AssociationRules
from apps.recommender.settings import RecommenderSettings
from apps.recommender.snapshot import Snapshot
from apps.recommender.training import die_with_parent, train
from consort.contracts.common import ModelInfo
from consort.contracts.events import INTERACTIONS_RECORDED, PUBSUB
from consort.contracts.recommender import (
    AlsInfo,
    BasketCompletion,
    BasketRequest,
    BasketSuggestion,
    InteractionRecorded,
    ModelStatus,
    Reason,
    RecommendationRequest,
    Recommendations,
    RecommendedItem,
    RetrainAccepted,
    SimilarItem,
    SimilarItems,
    SimilarRequest,
    SnapshotInfo,
    UserInteractions,
    UserItem,
    UserRequest,
)
from consort.kit.dapr import SidecarError
from consort.kit.errors import ProblemError, invalid_field, unavailable
from consort.kit.events import (
    Bulk,
    CloudEvent,
    Delivery,
    Subscription,
    declare_subscriptions,
    deliveries,
    delivery_response,
)
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("recommender")
tracer = get_tracer("recommender")
settings = RecommenderSettings()
kit = ServiceKit(settings, version="1.0.0")
store = ModelStore(
    lambda: kit.sidecar,
    settings.statestore_name,
    chunk_bytes=settings.snapshot_chunk_bytes,
    kept=settings.snapshots_kept,
)
T = TypeVar("T")
IMPLICIT = ModelInfo(name="implicit", version=package_version("implicit"))


class Service:
    """The recommender as it runs: its models, its place in the journal, its training."""

    def __init__(self) -> None:
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
            while not await kit.sidecar.is_healthy():
                await asyncio.sleep(0.2)
            started = time.perf_counter()
            loaded = await self._retrying(store.load)
            if loaded is None:
                recommender = Recommender(
                    InteractionStore(settings.kind_weights),
                    policy=settings.policy,
                    neighbourhood=settings.knn_neighbourhood,
                )
                journal_from = 0
            else:
                manifest, snapshot = loaded
                recommender = await asyncio.to_thread(
                    snapshot.restore,
                    kind_weights=settings.kind_weights,
                    policy=settings.policy,
                    neighbourhood=settings.knn_neighbourhood,
                )
                journal_from = manifest.journal_from
                self.restored = True
                self.trained_events = recommender.store.events
                self.trained_at = manifest.saved_at
                self.snapshot = SnapshotInfo(
                    version=manifest.version,
                    key=manifest_key(manifest.version),
                    bytes=manifest.bytes,
                    chunks=manifest.chunks,
                    saved_at=manifest.saved_at,
                )
            entries, journal_next = await self._retrying(lambda: store.replay(journal_from))
            replayed = await asyncio.to_thread(_learn_all, recommender, entries)
        except Exception as exc:  # reported by /readyz: waiting will not mend it
            log.exception("the model snapshot failed to load")
            self.failure = f"the model snapshot failed to load: {type(exc).__name__}: {exc}"
            return
        self.recommender = recommender
        self.journal_start, self.journal_next = journal_from, journal_next
        self._announce(recommender.registry.current)
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
        if self.failure:
            return self.failure
        return None if self.loaded.is_set() else "the model snapshot is loading"

    def serving(self) -> Recommender:
        """The recommender, or a 503 problem while the snapshot loads."""
        if self.recommender is None:
            raise unavailable(
                "Model not ready",
                self.failure or "the model snapshot is still loading; retry shortly",
                slug="model-not-ready",
                retry_after_s=1,
            )
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
                await store.append(self.journal_next, list(fresh.values()))
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

    # -- training --------------------------------------------------------------------------
    @property
    def training(self) -> bool:
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
            try:
                await self.retrain()
            except Exception:  # the serving models stay; the next ask tries again
                log.exception("retraining failed; the serving models stay")
            finally:
                self.running = self.installing = False

    async def retrain(self) -> ModelSet:
        """Train ALS and mine the rules beside the serving models (in a worker process),
        swap them in, save the snapshot."""
        recommender = self.serving()
        started = time.perf_counter()
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
                als_parameters=settings.als_parameters,
                min_support=settings.rules_min_support,
                min_confidence=settings.rules_min_confidence,
                max_len=settings.rules_max_len,
                min_users=settings.als_min_users,
            )
            als, rules = await asyncio.to_thread(
                lambda: (
                    AlsModel.from_bytes(result.als) if result.als is not None else None,
                    AssociationRules.from_bytes(result.rules),
                )
            )
        installed = recommender.registry.install(als=als, rules=rules)
        self.installing = False
        self.trained_events = result.events
        self.trained_at = datetime.now(UTC)
        self.last_training_s = round(time.perf_counter() - started, 3)
        self._announce(installed)
        log.info(
            "model version %d serving (%d events, %d users, %d items, %d rules) after %.2f s "
            "(%.2f s training)",
            installed.version,
            result.events,
            result.users,
            result.items,
            result.rules_count,
            self.last_training_s,
            result.seconds,
        )
        snapshot = Snapshot(
            version=installed.version,
            interactions=result.store,
            # Too few users for ALS this time: the serving ALS (if any) stays, and is saved.
            als=result.als
            if result.als is not None or installed.als is None
            else await asyncio.to_thread(installed.als.to_bytes),
            rules=result.rules,
        )
        await self._persist(snapshot, journal_from)
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
            manifest = await store.save(snapshot.version, data, journal_from)
        except SidecarError as exc:  # the journal still holds everything: nothing is lost
            log.error("snapshot of version %d not saved: %s", snapshot.version, exc)
            return
        self.snapshot = SnapshotInfo(
            version=manifest.version,
            key=manifest_key(manifest.version),
            bytes=manifest.bytes,
            chunks=manifest.chunks,
            saved_at=manifest.saved_at,
        )
        log.info(
            "snapshot of version %d saved: %d bytes in %d chunks",
            manifest.version,
            manifest.bytes,
            manifest.chunks,
        )
        try:
            await store.truncate(self.journal_start, journal_from)
            self.journal_start = journal_from
        except SidecarError as exc:  # left-over entries are never replayed again
            log.warning("journal entries before %s not deleted: %s", journal_key(journal_from), exc)

    async def schedule(self) -> None:
        """Retrain every `retrain_interval_s` when something new was learnt."""
        await self.loaded.wait()
        while True:
            await asyncio.sleep(settings.retrain_interval_s)
            recommender = self.serving()
            if recommender.store.events != self.trained_events and not self.training:
                self.wanted.set()

    def _announce(self, models: ModelSet) -> None:
        kit.extra_models[:] = [
            ModelInfo(name="recommender-models", version=str(models.version)),
            IMPLICIT,
        ]

    def status(self) -> ModelStatus:
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
            retrain_interval_s=settings.retrain_interval_s,
        )


def _learn_all(recommender: Recommender, entries: list[list[Interaction]]) -> int:
    applied = 0
    for entry in entries:
        for interaction in entry:
            applied += recommender.learn(interaction)
    return applied


service: Service | None = None


def running() -> Service:
    if service is None:
        raise ProblemError(
            503, "Model not ready", "the service is starting", slug="model-not-ready"
        )
    return service


async def _readiness() -> str | None:
    return await service.readiness() if service else "the service is starting"


kit.add_readiness_check("recommender", _readiness)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global service
    # One BLAS thread: a request's algebra is small (64 x 64), and OpenBLAS's idle threads
    # spinning beside the event loop and the training process cost more than they give.
    threadpool_limits(limits=1, user_api="blas")
    service = Service()
    tasks = [
        asyncio.create_task(service.start()),
        asyncio.create_task(service.schedule()),
        asyncio.create_task(service.trainer()),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if service.workers is not None:
            service.workers.shutdown(wait=False, cancel_futures=True)


app = create_app(
    kit,
    title="Consort recommender",
    description=(
        "Recommendations (ALS, item-to-item, popular), similar items and basket completion "
        "(association rules), learnt from `interactions.recorded` events."
    ),
    lifespan=lifespan,
)


def _within_k_max(k: int) -> None:
    if k > settings.k_max:
        raise invalid_field(
            "k",
            f"must be at most {settings.k_max}",
            detail=f"k must be at most {settings.k_max}",
            limit=settings.k_max,
        )


@app.post("/v1/recommend", response_model=Recommendations, tags=["recommender"])
async def recommend(request: RecommendationRequest) -> Recommendations:
    """Up to `k` items for a user, best first; an unknown user gets popular items."""
    _within_k_max(request.k)
    recommender = running().serving()
    version = recommender.registry.current.version
    with kit.metrics.inferring(f"recommender@{version}"):
        items = recommender.recommend(request.user, request.k, not request.include_seen)
    return Recommendations(
        user=request.user,
        items=[
            RecommendedItem(
                item=r.item, score=r.score, reason=Reason(r.reason.value), because=list(r.because)
            )
            for r in items
        ],
        cold_start=not recommender.store.knows(request.user),
        model_version=version,
    )


@app.post(
    "/v1/similar",
    response_model=SimilarItems,
    tags=["recommender"],
    responses={404: {"description": "No interaction with this item was learnt."}},
)
async def similar(request: SimilarRequest) -> SimilarItems:
    """Up to `k` items most similar to an item (item-to-item cosine)."""
    _within_k_max(request.k)
    recommender = running().serving()
    if not recommender.knn.knows(request.item):
        raise ProblemError(
            404,
            "Item not found",
            f"No interaction with item {request.item!r} was learnt.",
            slug="item-not-found",
        )
    return SimilarItems(
        item=request.item,
        items=[
            SimilarItem(item=i, similarity=s)
            for i, s in recommender.similar(request.item, request.k)
        ],
        model_version=recommender.registry.current.version,
    )


@app.post("/v1/baskets/complete", response_model=BasketCompletion, tags=["recommender"])
async def complete_basket(request: BasketRequest) -> BasketCompletion:
    """Up to `k` items completing a basket, each with its best association rule."""
    _within_k_max(request.k)
    models = running().serving().registry.current
    suggestions = models.rules.complete_basket(request.items, request.k) if models.rules else []
    return BasketCompletion(
        items=request.items,
        suggestions=[
            BasketSuggestion(
                item=s.item,
                because=list(s.because),
                support=s.support,
                confidence=s.confidence,
                lift=s.lift,
            )
            for s in suggestions
        ],
        rules=len(models.rules) if models.rules is not None else 0,
        model_version=models.version,
    )


@app.post("/v1/users/interactions", response_model=UserInteractions, tags=["recommender"])
async def user_interactions(request: UserRequest) -> UserInteractions:
    """What was learnt of a user: items and summed weights (empty for an unknown user)."""
    seen = running().serving().store.seen(request.user)
    return UserInteractions(
        user=request.user,
        items=[UserItem(item=i, weight=w) for i, w in sorted(seen.items())],
    )


@app.get("/v1/model", response_model=ModelStatus, tags=["operations"])
async def model_status() -> ModelStatus:
    """The serving version, what it learnt from, the training state, the last snapshot."""
    return running().status()


@app.post("/v1/model/retrain", status_code=202, response_model=RetrainAccepted, tags=["operations"])
async def retrain() -> RetrainAccepted:
    """Retrain ALS and the rules now (or right after the retraining under way);
    `GET /v1/model` shows the new version once it serves."""
    return running().trigger()


# -- events --------------------------------------------------------------------------------
# A short wait: daprd's bulk subscriber for Redis holds at most the component's
# `concurrency` (16) messages in flight, so a batch never reaches 100 and would otherwise
# always wait the whole window; ingestion runs at about 16 events per (wait + handling).
declare_subscriptions(
    app,
    [
        Subscription(
            PUBSUB,
            INTERACTIONS_RECORDED,
            "/events/interactions-recorded",
            bulk=Bulk(max_await_ms=settings.events_max_await_ms),
        )
    ],
)


@app.post("/events/interactions-recorded", include_in_schema=False)
async def on_interactions_recorded(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Learn interactions; malformed ones are dropped to the dead-letter topic."""
    statuses: dict[str | None, Delivery] = {}
    valid: dict[str | None, Interaction] = {}
    for entry_id, raw in deliveries(body):
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
    if valid:
        outcome = Delivery.RETRY
        current = service
        if current is not None:
            # daprd delivers as soon as the app is alive, maybe before the snapshot loaded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.loaded.wait(), settings.event_wait_s)
            if current.loaded.is_set():
                outcome = await current.learn(list(valid.values()))
        statuses.update(dict.fromkeys(valid, outcome))
    return delivery_response(statuses)
