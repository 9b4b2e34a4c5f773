"""The anomaly service's contract: points in, scores out, and the `anomalies.detected` event.

Timestamps are instants (RFC 3339 with a zone); the detector works in seconds since the
epoch and places each point in its season by `step_s`, the spacing of the series.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from statistics import NormalDist

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from consort.contracts.common import ModelInfo, Problem

#: The event published for every point scored as anomalous.
ANOMALIES_DETECTED = "anomalies.detected"
#: Most points in one ingestion request or event.
MAX_POINTS = 10_000
#: Most values in one offline series (`POST /v1/anomalies/detect`): streamed in linear time.
MAX_DETECT_POINTS = 10_000
#: Anomaly score (in [0, 1]) at or above which a point is anomalous, by default: a
#: two-sided Gaussian tail of 1e-4 for the robust z (|z| >= 3.89).
DEFAULT_SCORE_THRESHOLD = 0.9999
#: Steps after an anomalous point within which the next anomalous point belongs to the
#: same anomaly (one event), by default.
DEFAULT_COOLDOWN_STEPS = 10
#: Longest seasonal period, in steps.
MAX_PERIOD = 1_000
#: Most points a series keeps in its window (the actor's state).
MAX_WINDOW = 5_000
#: A series id: it names the series' actor and sits in URLs, so no slashes or spaces.
SERIES_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
#: The event producers send points in (consumed by the anomaly service).
METRICS_OBSERVED = "metrics.observed"
#: Most series in one batch of `POST /v1/metrics/points`.
MAX_BATCH_SERIES = 1_000


class Detector(StrEnum):
    """The families of detectors a series can be scored with (docs/services/anomaly.md).

    stl: robust STL season and robust exponential smoothing, the error's robust z.
    diff: the robust z of the change from the previous point (a detector of sudden change).
    spectral-residual: the spectral residual saliency of the newest point (Ren et al.,
    KDD 2019) over a sliding window, its robust z. ensemble: diff and spectral-residual,
    the larger |z|.
    """

    STL = "stl"
    DIFF = "diff"
    SPECTRAL_RESIDUAL = "spectral-residual"
    ENSEMBLE = "ensemble"


#: The detector of a series that names none, chosen on the AIOps KPIs' train halves
#: (bench/results/anomaly-kpi-choices.json, docs/services/anomaly.md#detectors): the
#: change detector, within 0.04 of the best pooled delay-F1 with a third of the false
#: alerts at the default threshold, and the cheapest.
DEFAULT_DETECTOR = Detector.DIFF


def z_at(score_threshold: float) -> float:
    """The |robust z| whose anomaly score is `score_threshold` (0.9999: 3.89)."""
    return NormalDist().inv_cdf(0.5 + score_threshold / 2)


class MetricPoint(BaseModel):
    """One observation of a series."""

    model_config = ConfigDict(extra="forbid")

    timestamp: AwareDatetime
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value


class SeriesConfig(BaseModel):
    """How a series is modelled; set once when its first points arrive (defaults apply)."""

    model_config = ConfigDict(extra="forbid")

    detector: Detector = Field(
        default=DEFAULT_DETECTOR, description="How the series is scored (see `Detector`)."
    )
    period: int = Field(
        default=1,
        ge=0,
        le=MAX_PERIOD,
        description="Season length in steps; 0: learnt from the points seen (at every fit).",
    )
    step_s: float = Field(default=60.0, gt=0, description="Spacing of the points, in seconds.")
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="|robust z| above this: anomalous (instead of `score_threshold`).",
    )
    score_threshold: float = Field(
        default=DEFAULT_SCORE_THRESHOLD,
        gt=0,
        lt=1,
        description="Anomaly score at or above this: anomalous (unless `threshold` is set).",
    )
    cooldown_steps: int = Field(
        default=DEFAULT_COOLDOWN_STEPS,
        ge=0,
        le=MAX_WINDOW,
        description=(
            "An anomalous point within this many steps of the last one extends its anomaly "
            "(no new event); 0: only consecutive points do."
        ),
    )

    @property
    def z_threshold(self) -> float:
        """The |robust z| where the decision falls: `threshold`, or the score threshold's."""
        return z_at(self.score_threshold) if self.threshold is None else self.threshold


class PointsIn(BaseModel):
    """Points of one series, in any order (they are scored oldest first); see
    `ScoreStatus` for late and repeated ones."""

    model_config = ConfigDict(extra="forbid")

    points: list[MetricPoint] = Field(min_length=1, max_length=MAX_POINTS)
    config: SeriesConfig | None = Field(
        default=None,
        description=(
            "How the series is modelled. Taken when the series is new (defaults otherwise); "
            "another config for an existing series is a 409 unless `reset` is true."
        ),
    )
    reset: bool = Field(
        default=False,
        description=(
            "Start the series over with `config` (its points, model and anomalies are "
            "forgotten): how a series' config is changed."
        ),
    )


class SeriesPoints(BaseModel):
    """Points of one series within a batch (`PointsIn`'s fields, and the series)."""

    model_config = ConfigDict(extra="forbid")

    series: str = Field(pattern=SERIES_ID_PATTERN, description="The series id.")
    points: list[MetricPoint] = Field(min_length=1, max_length=MAX_POINTS)
    config: SeriesConfig | None = Field(
        default=None, description="As in `PointsIn`: taken when the series is new."
    )


class BatchPointsIn(BaseModel):
    """Points of many series in one request: each series goes to its own actor, all of
    them in parallel. At most `MAX_POINTS` points in all, each series once."""

    model_config = ConfigDict(extra="forbid")

    series: list[SeriesPoints] = Field(min_length=1, max_length=MAX_BATCH_SERIES)

    @field_validator("series")
    @classmethod
    def _within_limits(cls, value: list[SeriesPoints]) -> list[SeriesPoints]:
        total = sum(len(s.points) for s in value)
        if total > MAX_POINTS:
            raise ValueError(f"at most {MAX_POINTS} points in one batch, got {total}")
        ids = [s.series for s in value]
        if len(set(ids)) != len(ids):
            raise ValueError("each series at most once in a batch (merge its points)")
        return value


class DetectRequest(BaseModel):
    """A whole series to score at once (offline mode), oldest first. It is streamed through
    the online detector: each value is scored from the values before it only."""

    model_config = ConfigDict(extra="forbid")

    detector: Detector | None = Field(
        default=None, description="How the series is scored; omitted: the service's default."
    )
    period: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PERIOD,
        description=(
            "Seasonal period in steps; 1: none; omitted: learnt from the values already seen "
            "(as online), never from later ones."
        ),
    )
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="|robust z| above which a point is anomalous (instead of the score).",
    )
    score_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Anomaly score at or above which a point is anomalous; omitted: 0.9999.",
    )
    values: list[float] = Field(
        min_length=3,
        max_length=MAX_DETECT_POINTS,
        description="At least 3 values, and 2 * period + 1 with a seasonal period.",
    )
    timestamps: list[float] | None = Field(
        default=None,
        description=(
            "Seconds since the epoch, one per value, non-decreasing: gaps are respected and "
            "the spacing learnt, as online. Omitted: the values are one step apart."
        ),
    )

    @field_validator("values")
    @classmethod
    def _finite_and_long_enough(cls, values: list[float], info: ValidationInfo) -> list[float]:
        for index, value in enumerate(values):
            if not math.isfinite(value):
                raise ValueError(f"values[{index}] is not a finite number")
        period = info.data.get("period")
        if period is not None and period > 1 and len(values) < 2 * period + 1:
            raise ValueError(
                f"{len(values)} values are too few for period {period}: "
                f"give at least 2 * period + 1 = {2 * period + 1}"
            )
        return values

    @field_validator("timestamps")
    @classmethod
    def _one_per_value_in_order(
        cls, timestamps: list[float] | None, info: ValidationInfo
    ) -> list[float] | None:
        if timestamps is None:
            return None
        values = info.data.get("values")
        if values is not None and len(timestamps) != len(values):
            raise ValueError(
                f"{len(timestamps)} timestamps for {len(values)} values: give one each"
            )
        previous = -math.inf
        for index, timestamp in enumerate(timestamps):
            if not math.isfinite(timestamp):
                raise ValueError(f"timestamps[{index}] is not a finite number")
            if timestamp < previous:
                raise ValueError(f"timestamps[{index}] is older than timestamps[{index - 1}]")
            previous = timestamp
        return timestamps


class ScoreStatus(StrEnum):
    """What the detector did with a point.

    scored: compared with the model. warming_up: kept, but too few points to score yet.
    duplicate: the same timestamp and value again; nothing changed, the first score is
    returned. late: older than the newest point, or the same timestamp with another value;
    rejected, nothing changed.
    """

    SCORED = "scored"
    WARMING_UP = "warming_up"
    DUPLICATE = "duplicate"
    LATE = "late"


class PointScore(BaseModel):
    """The verdict on one point."""

    timestamp: float = Field(description="Seconds since the epoch (or the step index offline).")
    value: float
    status: ScoreStatus
    expected: float | None = None
    lower: float | None = Field(default=None, description="Lower end of the normal range.")
    upper: float | None = Field(default=None, description="Upper end of the normal range.")
    score: float | None = Field(
        default=None, description="Robust z: (residual - median) / (1.4826 MAD) of recent ones."
    )
    anomaly_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "1 - the two-sided Gaussian tail probability of the robust z (its scale floored "
            "by the series' quantum and level): 0.9999 is |z| = 3.89."
        ),
    )
    is_anomaly: bool = False
    anomaly_start: float | None = Field(
        default=None,
        description=(
            "For an anomalous point: the timestamp where its anomaly began (this point's own "
            "when it opens one, and then `anomalies.detected` fires)."
        ),
    )


class AnomalyEvent(BaseModel):
    """One anomaly: consecutive anomalous points (gaps up to the cool-down allowed)."""

    start: float = Field(description="Timestamp of its first anomalous point.")
    end: float = Field(description="Timestamp of its last anomalous point.")
    peak: float = Field(description="Timestamp of its highest |robust z|.")
    peak_score: float = Field(description="The robust z there.")
    peak_anomaly_score: float = Field(ge=0, le=1, description="The anomaly score there.")
    points: int = Field(ge=1, description="Anomalous points in it.")


class ScoresOut(BaseModel):
    """Scores in the order of the points sent."""

    series: str
    scores: list[PointScore]
    model: ModelInfo


class SeriesOutcome(BaseModel):
    """One series of a batch: its scores, or the problem that kept it from being scored
    (a config conflict, or its actor unreachable); the other series are unaffected."""

    series: str
    scores: list[PointScore] | None = None
    problem: Problem | None = None


class BatchScoresOut(BaseModel):
    """The outcome of each series of a batch, in the order sent."""

    results: list[SeriesOutcome]
    model: ModelInfo = Field(description="The default model (a series' own config may differ).")
    points: int = Field(ge=0, description="Points scored in all.")


class AnomaliesDetected(BaseModel):
    """Data of an `anomalies.detected` event: one point of one series was anomalous.

    The CloudEvent id is `<series>:<timestamp>`, the same on every redelivery.
    """

    model_config = ConfigDict(extra="ignore")

    series: str = Field(min_length=1, max_length=200)
    timestamp: datetime
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    threshold: float = Field(description="The |robust z| at the edge of the normal range.")
    anomaly_score: float | None = Field(default=None, description="In [0, 1], as `PointScore`.")
    anomaly_start: datetime | None = Field(
        default=None, description="Where the anomaly began: one event per anomaly, at its start."
    )
    model: ModelInfo
    detected_at: datetime


class SeriesSnapshot(BaseModel):
    """What one series' actor holds: its recent window of points and their scores.

    Served by the anomaly app at `GET /v1/metrics/{series}` (the orchestrator reads it to
    forecast a series and compare the forecast with its recent anomaly scores).
    """

    series: str
    config: SeriesConfig
    points: list[MetricPoint] = Field(description="The window, oldest first.")
    scores: list[PointScore] = Field(description="Scores of the window's points, oldest first.")
    anomalies: int = Field(description="Anomalous points in the window.")
    observed: int = Field(description="Points accepted since the series began.")
    fitted_at: datetime | None = Field(default=None, description="When the model was last fit.")
    model: ModelInfo


class DetectResult(BaseModel):
    """Scores of a whole series (offline mode), in the order of its values."""

    period: int = Field(
        description="The seasonal period in use at the last value (learnt when not given)."
    )
    threshold: float = Field(description="The |robust z| at the edge of the normal range.")
    score_threshold: float | None = Field(
        default=None, description="The anomaly score at or above which a point is anomalous."
    )
    scores: list[PointScore] = Field(
        description="One per value; `timestamp` is the one given, or the value's index."
    )
    anomalies: list[int] = Field(description="Indices of the anomalous values.")
    events: list[AnomalyEvent] = Field(
        default_factory=list, description="The anomalies, each once, oldest first."
    )
    model: ModelInfo


class MetricsObserved(BaseModel):
    """Data of a `metrics.observed` event: points of one series from any producer.

    Consumers score them through the series' actor; a redelivered event's points are
    duplicates there and change nothing.
    """

    model_config = ConfigDict(extra="forbid")

    series: str = Field(pattern=SERIES_ID_PATTERN)
    points: list[MetricPoint] = Field(min_length=1, max_length=MAX_POINTS)
    config: SeriesConfig | None = None
