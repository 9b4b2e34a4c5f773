"""Actor interfaces: the methods callers may invoke, by the names daprd routes them to.

Callers reach an actor through their sidecar (`Sidecar.invoke_actor(type, id, method)`);
the messages are the models below, as JSON.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from dapr.actor import ActorInterface, actormethod
from pydantic import BaseModel, ConfigDict, Field

from consort.contracts.anomaly import MAX_POINTS, PointScore, SeriesConfig

METRIC_SERIES_ACTOR = "MetricSeriesActor"


class TimedValue(BaseModel):
    """A point as the actor takes it: seconds since the epoch and a finite value."""

    model_config = ConfigDict(extra="forbid")

    t: float
    v: float


class ObserveCommand(BaseModel):
    """Points for one series, oldest first, and the series' config if it is new."""

    model_config = ConfigDict(extra="forbid")

    points: list[TimedValue] = Field(min_length=1, max_length=MAX_POINTS)
    config: SeriesConfig | None = None
    reset: bool = Field(default=False, description="Start over with `config`.")


class ObserveResult(BaseModel):
    """The verdict on each point; `conflict` says why none was taken."""

    scores: list[PointScore] = Field(default_factory=list)
    conflict: str | None = None


class MetricSeriesActorInterface(ActorInterface):
    """One metric series: its window, its model, and the scores of its points."""

    @abstractmethod
    @actormethod(name="Observe")
    async def observe(self, command: dict[str, Any]) -> dict[str, Any]:
        """Score and keep points (an `ObserveCommand`); returns an `ObserveResult`."""

    @abstractmethod
    @actormethod(name="Snapshot")
    async def snapshot(self) -> dict[str, Any] | None:
        """The series' `SeriesSnapshot`, or None when it has no points."""

    @abstractmethod
    @actormethod(name="Refit")
    async def refit(self) -> bool:
        """Fit the model to the window now; False while the window is too short."""

    @abstractmethod
    @actormethod(name="Forget")
    async def forget(self) -> bool:
        """Delete the series (state and reminder); False when it had none."""
