"""`MetricSeriesActor`: one metric series, scored online, in its own actor.

One actor per series id. Dapr's turn-based concurrency means one call at a time per series,
so the detector (apps/anomaly/detector.py, plain domain code) needs no locks, and series
are scored in parallel with each other. The actor's state is one key, `series`: the
series' config, the detector's whole state (its bounded window, model and recent errors),
and when the model was last fit. It is written after every call that changes it, so a
restarted app, or another host after a rebalance, resumes exactly where this one stopped.

Memory stays bounded with many series: the window is bounded (`DetectorConfig.window`), and
daprd deactivates actors idle for the configured idle timeout; a deactivated series costs
nothing in the app until its next point.

Refits. The detector refits by itself every `refit_points` points; a reminder also refits
series whose points trickle in, every refit interval while new points arrive. A series with
nothing new at a reminder unregisters it (and registers it again with its next points), so
quiet series are not woken for nothing; a series still warming up has no model to refit,
and no reminder.

Anomalies. Consecutive anomalous points (gaps up to the series' cool-down allowed) are one
anomaly, published once, at its first point, as `anomalies.detected` with the event id
`<series>:<timestamp of its start>`, before the state is saved: a call that fails after
publishing is retried by its caller, and the point is scored again and published under the
same id, which consumers treat as the same event. At least once, never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dapr.actor import Actor, ActorId, Remindable
from dapr.actor.runtime.context import ActorRuntimeContext
from pydantic import BaseModel, Field

from actors.interfaces import MetricSeriesActorInterface, ObserveCommand, ObserveResult
from apps.anomaly.detector import (
    AnomalyDetector,
    DetectorConfig,
    DetectorState,
    model_info,
    observe_state,
    refit_state,
)
from consort.contracts.anomaly import (
    ANOMALIES_DETECTED,
    AnomaliesDetected,
    MetricPoint,
    PointScore,
    ScoreStatus,
    SeriesConfig,
    SeriesSnapshot,
)
from consort.kit.dapr import Sidecar

log = logging.getLogger("anomaly.actor")

STATE_KEY = "series"
REFIT_REMINDER = "refit"


def detector_config(config: SeriesConfig) -> DetectorConfig:
    return DetectorConfig(
        detector=config.detector,
        period=config.period,
        step=config.step_s,
        threshold=config.threshold,
        score_threshold=config.score_threshold,
        cooldown=config.cooldown_steps,
    )


def instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class SeriesRecord(BaseModel):
    """The actor's state."""

    config: SeriesConfig
    detector: DetectorState
    fitted_at: datetime | None = None
    refits: int = Field(default=0, description="Fits since the series began.")
    reminder: bool = Field(default=False, description="Whether the refit reminder is set.")


@dataclass(frozen=True)
class SeriesServices:
    """What the actor needs from its host app."""

    sidecar: Sidecar
    pubsub: str
    source: str
    default_config: SeriesConfig
    refit_interval: timedelta
    #: Runs a function in a worker process and returns its result: fits hold the GIL for
    #: tens of milliseconds to seconds, and in the app's process they would stall its
    #: event loop, its health checks (daprd then takes the actors away) and other series.
    offload: Callable[..., Awaitable[Any]]


class MetricSeriesActor(Actor, MetricSeriesActorInterface, Remindable):
    def __init__(self, ctx: ActorRuntimeContext, actor_id: ActorId, services: SeriesServices):
        super().__init__(ctx, actor_id)
        self._services = services

    @property
    def series(self) -> str:
        return self.id.id

    # -- state ----------------------------------------------------------------------------
    async def _load(self) -> SeriesRecord | None:
        # The SDK's state manager caches the value while the actor is active: one read
        # from the store per activation.
        found, raw = await self._state_manager.try_get_state(STATE_KEY)
        return SeriesRecord.model_validate_json(raw) if found and raw else None

    async def _store(self, record: SeriesRecord) -> None:
        # Saved by the SDK when the method returns. As a JSON *string*: a state store may
        # re-encode JSON values (the default profile's re-encodes them with jsoniter's
        # ConfigFastest, which keeps 6 digits after the point: 117.9209411939993 comes back
        # 117.920941, and 1e-9 as 0; docs/profiles.md), and a detector resumed from
        # rounded numbers would not score as it would have. A string comes back as it was.
        await self._state_manager.set_state(STATE_KEY, record.model_dump_json())

    # -- methods --------------------------------------------------------------------------
    async def observe(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = ObserveCommand.model_validate(command)
        record = await self._load()
        reminder = record is not None and record.reminder
        if cmd.reset and record is not None and cmd.config != record.config:
            log.info("series %s starts over with %s", self.series, cmd.config)
            record = None
        if record is None:
            config = cmd.config or self._services.default_config
            record = SeriesRecord(
                config=config,
                detector=DetectorState(config=detector_config(config)),
                reminder=reminder,
            )
        elif cmd.config is not None and cmd.config != record.config:
            return ObserveResult(
                conflict=(
                    f"series {self.series!r} is modelled with {record.config.model_dump()}; "
                    "send it with reset=true (or delete the series) to model it otherwise"
                )
            ).model_dump(mode="json")
        detector = AnomalyDetector(record.detector)
        since_fit = record.detector.since_fit
        points = [(p.t, p.v) for p in sorted(cmd.points, key=lambda p: p.t)]
        if detector.fit_due(len(points)):
            scores, record.detector = await self._services.offload(
                observe_state, record.detector, points
            )
        else:  # scoring alone takes microseconds a point
            scores = detector.observe_many(points)
        accepted = sum(s.status in (ScoreStatus.SCORED, ScoreStatus.WARMING_UP) for s in scores)
        if accepted == 0:
            return ObserveResult(scores=scores).model_dump(mode="json")
        if record.detector.since_fit < since_fit + accepted:  # the detector refit itself
            record.fitted_at = datetime.now(UTC)
            record.refits += 1
        # One event per anomaly, at its first point: the points that extend it (within
        # the cool-down) publish nothing.
        opening = [
            s
            for s in scores
            if s.status is ScoreStatus.SCORED and s.is_anomaly and s.anomaly_start == s.timestamp
        ]
        await self._publish(record, opening)
        if not record.reminder and record.detector.fitted:  # a model to refit
            interval = self._services.refit_interval
            await self.register_reminder(REFIT_REMINDER, b"", interval, interval)
            record.reminder = True
        await self._store(record)
        return ObserveResult(scores=scores).model_dump(mode="json")

    async def _publish(self, record: SeriesRecord, anomalous: list[PointScore]) -> None:
        if not anomalous:
            return
        services = self._services
        model = model_info(record.detector.config)
        now = datetime.now(UTC)
        for score in anomalous:
            assert score.expected is not None and score.lower is not None
            assert score.upper is not None and score.score is not None
            at = instant(score.timestamp)
            event = AnomaliesDetected(
                series=self.series,
                timestamp=at,
                value=score.value,
                expected=score.expected,
                lower=score.lower,
                upper=score.upper,
                score=score.score,
                threshold=record.detector.config.z_threshold,
                anomaly_score=score.anomaly_score,
                anomaly_start=at,
                model=model,
                detected_at=now,
            )
            await services.sidecar.publish_event(
                services.pubsub,
                ANOMALIES_DETECTED,
                event,
                event_id=f"{self.series}:{at.isoformat()}",
                source=services.source,
            )
        log.info("series %s: %d new anomalies published", self.series, len(anomalous))

    async def snapshot(self) -> dict[str, Any] | None:
        record = await self._load()
        if record is None:
            return None
        detector = AnomalyDetector(record.detector)
        scores = detector.window()
        state = record.detector
        return SeriesSnapshot(
            series=self.series,
            config=record.config,
            points=[
                MetricPoint(timestamp=instant(t), value=v)
                for t, v in zip(state.timestamps, state.values, strict=True)
            ],
            scores=scores,
            anomalies=sum(s.is_anomaly for s in scores),
            observed=state.observed,
            fitted_at=record.fitted_at,
            model=detector.model,
        ).model_dump(mode="json")

    async def refit(self) -> bool:
        record = await self._load()
        if record is None:
            return False
        return await self._refit(record)

    async def _refit(self, record: SeriesRecord) -> bool:
        fitted, state = await self._services.offload(refit_state, record.detector)
        if not fitted:
            return False
        record.detector = state
        record.fitted_at = datetime.now(UTC)
        record.refits += 1
        await self._store(record)
        return True

    async def forget(self) -> bool:
        record = await self._load()
        if record is None:
            return False
        if record.reminder:
            await self.unregister_reminder(REFIT_REMINDER)
        await self._state_manager.remove_state(STATE_KEY)
        return True

    async def receive_reminder(
        self,
        name: str,
        state: bytes,
        due_time: timedelta,
        period: timedelta,
        ttl: timedelta | None = None,
    ) -> None:
        if name != REFIT_REMINDER:
            return
        record = await self._load()
        if record is not None and record.detector.since_fit > 0 and await self._refit(record):
            log.info("series %s refit by its reminder (fit %d)", self.series, record.refits)
            return
        # Nothing new since the last fit (or too few points to fit): the series is quiet.
        await self.unregister_reminder(REFIT_REMINDER)
        if record is not None:
            record.reminder = False
            await self._store(record)
