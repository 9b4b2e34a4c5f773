"""Online anomaly scoring of one metric series, by one of four detectors.

The detectors (`DetectorConfig.detector`, docs/services/anomaly.md#detectors): `stl`, the
method below; `diff`, the robust z of the change from the previous point; `spectral-
residual`, the spectral residual score of the newest point over a sliding window
(`apps.anomaly.spectral`); `ensemble`, the larger |z| of the last two. Each scores its
statistic by the same robust z, floor, clip, anomaly score and cool-down.

Plain domain code: no web framework, no Dapr. One `AnomalyDetector` per series; its whole
state is a `DetectorState` (a pydantic model of plain lists and numbers), so an actor saves
`detector.state.model_dump(mode="json")` and later resumes with
`AnomalyDetector(DetectorState.model_validate(saved))`: scoring goes on exactly as if it
had never stopped.

The method. The series is kept in a bounded window. A fit (`refit`) takes the window and,
with a seasonal period, robust STL (Cleveland et al. 1990) for its seasonal profile (the
last cycle's seasonal value for each phase). An exponential smoother (statsmodels' ETS:
simple, or damped Holt for a local trend) is fitted to the series adjusted by the
*previous* cycle's seasonal values, as online scoring will adjust it; of the forms with and
without season, with and without trend, the one with the smallest mean absolute one-step
error on the window is kept (so a season whose phase drifts, in a quasi-periodic signal,
is dropped when it hurts). Each new point is expected at `level + phi * slope +
seasonal[phase]`; its error is scored against the errors of recent points by a robust z,
`(e - median) / (1.4826 * MAD)`, so the threshold adapts to how noisy the series has
lately been. The scale has a floor tied to the series: one quantum (the smallest change
seen between successive values) and 1e-4 of the level, so a flat or quantized series
that moves by one step is not a million-sigma event. The anomaly score, in [0, 1], is
1 - the two-sided Gaussian tail probability of z; at or above `score_threshold` (0.9999,
|z| >= 3.89) a point is anomalous. Anomalous points within `cooldown` steps of each other
are one anomaly (`anomaly_start`). Every point then
updates the smoother with its error clipped at two robust deviations (Huber-type robust
smoothing, Gelper, Fried and Croux 2010), so an outlier barely moves the level; errors
enter the recent set clipped at the edge of the normal range, so one burst does not
inflate the scale. The scale is made of online errors (the fit's in-sample errors only
seed it). The detector refits by itself every `refit_every` points (auto: max(100,
period)); an actor reminder may call `refit()` as well. With period 0 the period is
learnt at every fit from the window's autocorrelation (points already seen only), and
with step 0 the spacing is learnt at the first fit (the median gap).

Timestamps are numbers (seconds since the epoch, or step indices offline); `step` is the
spacing of the series in those units. A point's phase in the season is the number of steps
from the first point, modulo the period, so missing points do not shift the season; gaps
are filled by linear interpolation for the fit.

Order and repeats, on purpose:
- A point newer than the newest is scored and kept.
- The same timestamp and value as a point in the window is a duplicate: nothing changes and
  the first verdict is returned (redelivered events and retried requests are harmless).
- A point older than the newest, or the newest timestamp with another value, is late and
  rejected: nothing changes. Inserting it would mean rescoring every point after it, and
  the verdicts already published on those would change under the consumers.
- Timestamps are instants (the contract wants a zone), so the hour repeated when clocks go
  back (daylight saving) is two distinct instants, not a repeat, and is scored in order.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from statsmodels.tsa.seasonal import STL
from statsmodels.tsa.stattools import acf

from apps.anomaly.robust import RunningSpread
from apps.anomaly.smoothing import fit_smoother
from apps.anomaly.spectral import newest_statistic
from consort.contracts.anomaly import (
    DEFAULT_COOLDOWN_STEPS,
    DEFAULT_DETECTOR,
    DEFAULT_SCORE_THRESHOLD,
    MAX_PERIOD,
    MAX_WINDOW,
    AnomalyEvent,
    Detector,
    DetectResult,
    PointScore,
    ScoreStatus,
    z_at,
)
from consort.contracts.common import ModelInfo

#: MAD times this estimates the standard deviation of normal data.
MAD_TO_SIGMA = 1.4826
STATSMODELS_VERSION = version("statsmodels")
NUMPY_VERSION = version("numpy")
#: Robustness passes of STL: three bring most of the gain at a fifth of the default's cost.
STL_ROBUST_PASSES = 3
#: The scale is at least this share of the expected value's magnitude.
LEVEL_FLOOR = 1e-4
#: Errors beyond this many robust deviations move the level as if they were this far out.
HUBER_K = 2.0
#: The window of a series whose period is learnt: long enough to see a period of 240 steps
#: three times over (the autocorrelation looks at lags up to a third of the window).
LEARNING_WINDOW = 720
#: Points seen before the first fit when the period is learnt: enough errors behind the
#: first scale for a smooth season, unseen yet, not to look anomalous.
LEARNING_MIN_POINTS = 30
#: Fewest points between two automatic fits.
REFIT_MIN_POINTS = 100
#: Errors enter the recent set clipped at this |z| (the edge of the default's normal
#: range), whatever the decision threshold: so the scores do not depend on the threshold,
#: and one threshold can be chosen on the scores of another.
CLIP_Z = z_at(DEFAULT_SCORE_THRESHOLD)
#: Points in the spectral residual's sliding window (the newest and those before it).
SR_WINDOW = 64
#: Recent spectral residual statistics needed before its z counts (0 until then): its
#: tails are heavy, and a scale from a few dozen is not to be trusted.
SR_FEWEST = 100
#: A batch of this many points for a detector with a spectral residual is worth a worker.
SR_OFFLOAD_POINTS = 500
#: The families each detector runs (the band of a spectral residual's verdict comes
#: from the change from the previous point: its own score is not in the series' units).
FAMILIES = {
    Detector.STL: ("stl",),
    Detector.DIFF: ("diff",),
    Detector.SPECTRAL_RESIDUAL: ("sr", "diff"),
    # Not STL: by far the costliest (1,400-3,800 points a CPU second against 8,000 here),
    # too slow to score all 29 AIOps KPIs for the choice (docs/services/anomaly.md).
    Detector.ENSEMBLE: ("diff", "sr"),
}


def ensemble_z(members: dict[str, float]) -> float:
    """The ensemble's z: its members' z of largest magnitude (each a robust z, so on one
    scale), with its sign."""
    return max(members.values(), key=abs)


def _stl(y: NDArray[np.float64], period: int) -> Any:
    """Robust STL of `y`, its loess smoothers evaluated every tenth of their window and
    interpolated between (R's `stl` default, Cleveland et al. 1990, section 3.2)."""
    model = STL(y, period=period, robust=True)
    jumps = {
        "seasonal_jump": math.ceil(model.config["seasonal"] / 10),
        "trend_jump": math.ceil(model.config["trend"] / 10),
        "low_pass_jump": math.ceil(model.config["low_pass"] / 10),
    }
    return STL(y, period=period, robust=True, **jumps).fit(outer_iter=STL_ROBUST_PASSES)


class DetectorConfig(BaseModel):
    """How one series is scored. Zero for `window` or `refit_every` picks from the period."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: Detector = Field(default=DEFAULT_DETECTOR, description="The family scoring it.")
    period: int = Field(
        default=1,
        ge=0,
        le=MAX_PERIOD,
        description="Season length in steps; 0: learnt from the points seen (at every fit).",
    )
    step: float = Field(
        default=1.0,
        ge=0,
        description="Spacing of points, in timestamp units; 0: learnt at the first fit.",
    )
    threshold: float | None = Field(
        default=None, gt=0, description="|robust z| above this: anomalous (legacy)."
    )
    score_threshold: float = Field(
        default=DEFAULT_SCORE_THRESHOLD, gt=0, lt=1, description="Anomaly score at or above."
    )
    cooldown: int = Field(
        default=DEFAULT_COOLDOWN_STEPS, ge=0, description="Steps an anomaly stays open."
    )
    window: int = Field(default=0, ge=0, le=MAX_WINDOW, description="Points kept (0: auto).")
    refit_every: int = Field(default=0, ge=0, description="Points between fits (0: auto).")
    residual_window: int = Field(default=200, ge=10, description="Residuals behind the scale.")

    @property
    def z_threshold(self) -> float:
        """The |robust z| at the edge of the normal range (where the decision falls)."""
        return z_at(self.score_threshold) if self.threshold is None else self.threshold

    def anomalous(self, z: float) -> bool:
        if self.threshold is not None:
            return abs(z) > self.threshold
        return anomaly_score(z) >= self.score_threshold

    @property
    def learns_period(self) -> bool:
        return self.period == 0

    @property
    def families(self) -> tuple[str, ...]:
        return FAMILIES[self.detector]

    @property
    def seasonal(self) -> bool:
        """Whether the detector models a season (only STL does; the others need none)."""
        return "stl" in self.families

    def window_points(self, period: int) -> int:
        """Points kept while the period in use is `period`."""
        shortest = LEARNING_WINDOW if self.learns_period else 200
        return self.window or min(MAX_WINDOW, max(shortest, 5 * period))

    def refit_points(self, period: int) -> int:
        return self.refit_every or max(REFIT_MIN_POINTS, period)

    @property
    def min_points(self) -> int:
        """Points needed before the first fit."""
        if self.learns_period or not self.seasonal:
            return LEARNING_MIN_POINTS
        return 2 * self.period + 1 if self.period > 1 else 10


class DetectorState(BaseModel):
    """Everything a detector knows: JSON-serialisable, what an actor keeps in its state."""

    config: DetectorConfig = Field(default_factory=DetectorConfig)
    period: int = Field(default=1, description="The period in use (learnt when config's is 0).")
    step: float = Field(default=0.0, description="The spacing in use (0: not learnt yet).")
    quantum: float = Field(
        default=0.0, description="Smallest change seen between successive values (0: none)."
    )
    anomaly_start: float | None = Field(default=None, description="The last anomaly's start.")
    anomaly_last: float | None = Field(default=None, description="Its last anomalous point.")
    origin: float | None = Field(default=None, description="Timestamp of the first point.")
    # The window, oldest first, and the verdict on each point (None while warming up).
    timestamps: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)
    expected: list[float | None] = Field(default_factory=list)
    half_width: list[float | None] = Field(default_factory=list)
    scores: list[float | None] = Field(default_factory=list)
    # The fitted model.
    fitted: bool = False
    form: str = Field(default="", description="The form chosen at the last fit.")
    level: float = 0.0
    slope: float = 0.0
    alpha: float = Field(default=0.1, description="Smoothing weights and damping, from the fit.")
    beta: float = 0.0
    phi: float = 0.0
    seasonal: list[float] = Field(default_factory=list, description="By phase, period long.")
    residuals: list[float] = Field(default_factory=list, description="Recent, oldest first.")
    # The other families' recent statistics, oldest first (empty when not in use).
    changes: list[float] = Field(default_factory=list, description="Recent changes (diff).")
    saliencies: list[float] = Field(
        default_factory=list, description="Recent raw spectral residual scores."
    )
    since_fit: int = 0
    observed: int = Field(default=0, description="Points accepted since the series began.")


def anomaly_score(z: float) -> float:
    """1 - the two-sided Gaussian tail probability of `z`: in [0, 1], 0.9999 at 3.89."""
    return math.erf(abs(z) / math.sqrt(2.0))


def model_info(config: DetectorConfig, period: int | None = None) -> ModelInfo:
    """The name and version of the method scoring a series with `config` (and, when the
    period is learnt, `period` in use)."""
    if config.detector is Detector.DIFF:
        return ModelInfo(name="diff-robust-z", version=NUMPY_VERSION)
    if config.detector is Detector.SPECTRAL_RESIDUAL:
        return ModelInfo(name="spectral-residual", version=NUMPY_VERSION)
    if config.detector is Detector.ENSEMBLE:
        return ModelInfo(name="ensemble(diff-robust-z,spectral-residual)", version=NUMPY_VERSION)
    in_use = period if period is not None else config.period
    name = "stl-robust-z" if in_use > 1 else "ses-robust-z"
    return ModelInfo(name=name, version=STATSMODELS_VERSION)


class AnomalyDetector:
    """Scores the points of one series as they arrive. Not thread-safe: one caller at a time
    (an actor's turn-based concurrency gives exactly that)."""

    def __init__(self, state: DetectorState | None = None, *, config: DetectorConfig | None = None):
        if state is None:
            config = config or DetectorConfig()
            state = DetectorState(config=config, period=config.period or 1, step=config.step)
        elif config is not None and config != state.config:
            raise ValueError("give a config or a state, not both")
        self.state = state
        self._spread = RunningSpread(state.residuals)
        self._changes = RunningSpread(state.changes)
        self._saliencies = RunningSpread(state.saliencies)
        if state.fitted:
            # A state saved before its detector had these families (the default changed
            # under a stored series): their recent sets come from its window.
            self._seed()

    @property
    def config(self) -> DetectorConfig:
        return self.state.config

    @property
    def model(self) -> ModelInfo:
        return model_info(self.config, self.state.period)

    @property
    def window_points(self) -> int:
        return self.config.window_points(self.state.period)

    def _phase(self, timestamp: float) -> int:
        origin = self.state.origin if self.state.origin is not None else timestamp
        return round((timestamp - origin) / self.state.step) % self.state.period

    def _stored(self, index: int, status: ScoreStatus) -> PointScore:
        s = self.state
        expected, half, score = s.expected[index], s.half_width[index], s.scores[index]
        if expected is None or half is None or score is None:
            return PointScore(timestamp=s.timestamps[index], value=s.values[index], status=status)
        return PointScore(
            timestamp=s.timestamps[index],
            value=s.values[index],
            status=status,
            expected=expected,
            lower=expected - half,
            upper=expected + half,
            score=score,
            anomaly_score=anomaly_score(score),
            is_anomaly=self.config.anomalous(score),
        )

    def observe(self, timestamp: float, value: float) -> PointScore:
        """Score one point and keep it (see the module's notes on late and repeated points).

        Args:
            timestamp: seconds since the epoch (or any unit `config.step` is in).
            value: a finite number.
        """
        if not (math.isfinite(timestamp) and math.isfinite(value)):
            raise ValueError("timestamp and value must be finite numbers")
        s = self.state
        if s.timestamps and timestamp <= s.timestamps[-1]:
            index = bisect.bisect_left(s.timestamps, timestamp)
            if index < len(s.timestamps) and s.timestamps[index] == timestamp:
                if s.values[index] == value:
                    return self._stored(index, ScoreStatus.DUPLICATE)
            return PointScore(timestamp=timestamp, value=value, status=ScoreStatus.LATE)
        if s.origin is None:
            s.origin = timestamp
        verdict = self._score(timestamp, value) if s.fitted else None
        # The series' resolution, from the points before this one when it was scored.
        if s.values and (change := abs(value - s.values[-1])) > 1e-9 * abs(value):
            s.quantum = min(s.quantum, change) if s.quantum > 0 else change
        s.timestamps.append(timestamp)
        s.values.append(value)
        s.expected.append(verdict.expected if verdict else None)
        s.half_width.append(
            (verdict.upper - verdict.expected)
            if verdict and verdict.upper is not None and verdict.expected is not None
            else None
        )
        s.scores.append(verdict.score if verdict else None)
        s.observed += 1
        s.since_fit += 1
        overflow = len(s.timestamps) - self.window_points
        if overflow > 0:
            for column in (s.timestamps, s.values, s.expected, s.half_width, s.scores):
                del column[:overflow]
        due = s.since_fit >= self.config.refit_points(s.period)
        if (not s.fitted and len(s.values) >= self.config.min_points) or (s.fitted and due):
            self.refit()
        if verdict is None:
            return PointScore(timestamp=timestamp, value=value, status=ScoreStatus.WARMING_UP)
        return verdict

    def _robust_z(
        self,
        spread: RunningSpread,
        recent: list[float],
        statistic: float,
        floor: float,
        fewest: int = 0,
    ) -> tuple[float, float, float]:
        """The robust z of `statistic` against the recent ones, their center and the scale;
        the statistic then joins the recent ones, clipped at `CLIP_Z` scales, so one burst
        does not inflate the scale. With fewer than `fewest` recent ones the z is 0."""
        known = len(recent)
        center = spread.median()
        scale = max(MAD_TO_SIGMA * spread.mad(center), floor)
        clipped = min(max(statistic, center - CLIP_Z * scale), center + CLIP_Z * scale)
        recent.append(clipped)
        spread.add(clipped)
        while len(recent) > self.config.residual_window:
            spread.remove(recent.pop(0))
        return (statistic - center) / scale if known >= fewest else 0.0, center, scale

    def _floor(self, expected: float) -> float:
        # One quantum (the smallest change seen between successive values), so a flat or
        # quantized series that moves by one step is not a million-sigma event; and a small
        # share of the level, for a series that never moved yet.
        return max(self.state.quantum, LEVEL_FLOOR * abs(expected), 1e-9)

    def _score_stl(self, timestamp: float, value: float) -> tuple[float, float, float]:
        """The error's z against the season and smoothed level; the expected value, scale."""
        s = self.state
        seasonal = s.seasonal[self._phase(timestamp)] if s.seasonal else 0.0
        expected = s.level + s.phi * s.slope + seasonal
        residual = value - expected
        z, center, scale = self._robust_z(
            self._spread, s.residuals, residual, self._floor(expected)
        )
        # The level moves by a Huber-clipped error (Gelper, Fried and Croux 2010): an outlier
        # moves it no further than a point HUBER_K robust deviations out would.
        step = min(max(residual, center - HUBER_K * scale), center + HUBER_K * scale)
        s.level += s.phi * s.slope + s.alpha * step
        s.slope = s.phi * s.slope + s.beta * step
        return z, expected + center, scale

    def _score_diff(self, value: float) -> tuple[float, float, float]:
        """The change from the previous point's z against recent changes; expected, scale."""
        previous = self.state.values[-1]
        z, center, scale = self._robust_z(
            self._changes, self.state.changes, value - previous, self._floor(previous)
        )
        return z, previous + center, scale

    def _score_sr(self, value: float) -> float:
        """The spectral residual statistic's z against recent ones (`SR_WINDOW` points)."""
        window = [*self.state.values[-(SR_WINDOW - 1) :], value]
        statistic = newest_statistic(window)
        return self._robust_z(
            self._saliencies, self.state.saliencies, statistic, self._floor(value), SR_FEWEST
        )[0]

    def _score(self, timestamp: float, value: float) -> PointScore:
        config = self.config
        members: dict[str, float] = {}
        band: tuple[float, float] | None = None
        if "stl" in config.families:
            members["stl"], expected, scale = self._score_stl(timestamp, value)
            band = (expected, scale)
        if "diff" in config.families:
            members["diff"], expected, scale = self._score_diff(value)
            band = band or (expected, scale)
        if "sr" in config.families:
            members["sr"] = self._score_sr(value)
        assert band is not None
        if config.detector is Detector.ENSEMBLE:
            score = ensemble_z(members)
        else:
            score = members[config.families[0]]
        anomalous = config.anomalous(score)
        expected, half = band[0], config.z_threshold * band[1]
        return PointScore(
            anomaly_start=self._episode(timestamp) if anomalous else None,
            timestamp=timestamp,
            value=value,
            status=ScoreStatus.SCORED,
            expected=expected,
            lower=expected - half,
            upper=expected + half,
            score=score,
            anomaly_score=anomaly_score(score),
            is_anomaly=anomalous,
        )

    def _episode(self, timestamp: float) -> float:
        """The start of the anomaly an anomalous point at `timestamp` belongs to: the last
        one while within the cool-down of its last point, else a new one from here."""
        s = self.state
        reach = self.config.cooldown * (s.step or 1.0)
        if s.anomaly_last is None or s.anomaly_start is None or timestamp - s.anomaly_last > reach:
            s.anomaly_start = timestamp
        s.anomaly_last = timestamp
        return s.anomaly_start

    def _regular(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The window on a regular grid of steps (gaps interpolated), and its step indices."""
        s = self.state
        origin = s.origin if s.origin is not None else 0.0
        steps = np.rint((np.asarray(s.timestamps) - origin) / s.step).astype(np.int64)
        values = np.asarray(s.values, dtype=float)
        grid = np.arange(max(steps[0], steps[-1] - self.window_points + 1), steps[-1] + 1)
        return np.interp(grid, steps, values), grid

    def _learn(self) -> None:
        """The spacing (once: the median gap of the window) and the period (at every fit,
        from the window's autocorrelation) where the config leaves them to be learnt. Only
        points already seen are used, online and offline alike."""
        s = self.state
        if s.step <= 0:
            gaps = np.diff(np.asarray(s.timestamps, dtype=float))
            gaps = gaps[gaps > 0]
            s.step = float(np.median(gaps)) if gaps.size else 1.0
        if self.config.learns_period and self.config.seasonal:
            y, _ = self._regular()
            s.period = estimate_period(y, max_period=min(MAX_PERIOD, len(y) // 3))

    def refit(self) -> bool:
        """Fit the model to the window; what a periodic reminder calls.

        Returns False (and changes nothing) while the window is too short to fit.
        """
        s = self.state
        config = self.config
        if len(s.values) < config.min_points:
            return False
        self._learn()
        if config.seasonal and not self._fit_smoother():
            return False
        self._seed()
        s.fitted = True
        s.since_fit = 0
        return True

    def _fit_smoother(self) -> bool:
        """The STL family's fit: the season's profile, and of the forms with and without
        season, with and without trend, the smoother with the smallest errors."""
        s = self.state
        config = self.config
        period = s.period
        y, grid = self._regular()
        if len(y) < config.min_points:
            # Points closer together than `step` share a step: too few steps to fit yet.
            return False
        best: tuple[float, str, list[float], Any] | None = None
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            seasons: list[tuple[str, NDArray[np.float64], list[float]]] = [("", y, [])]
            if period > 1 and len(y) >= 2 * period + 1:
                result = _stl(y, period)
                seasonal = np.asarray(result.seasonal, dtype=float)
                profile = [0.0] * period
                for position in range(len(y) - period, len(y)):
                    profile[int(grid[position] % period)] = float(seasonal[position])
                # Adjusted by the previous cycle's seasonal values, as online scoring will
                # be: an in-sample seasonal fits its own window too well to be judged on it.
                lagged = y[period:] - seasonal[:-period]
                seasons.insert(0, ("stl+", lagged, profile))
            burn_in = min(10, len(y) // 10)
            for prefix, adjusted, profile in seasons:
                for damped in (False, True):
                    smoother = fit_smoother(adjusted, damped=damped)
                    errors = smoother.resid[burn_in:]
                    spread = float(np.mean(np.abs(errors - np.median(errors))))
                    if math.isfinite(spread) and (best is None or spread < best[0]):
                        form = prefix + ("damped-holt" if damped else "ses")
                        best = (spread, form, profile, smoother)
        if best is None:
            return False
        # The form whose one-step errors are smallest on average on the window. The mean,
        # not the median: a season whose phase drifts (quasi-periodic signals) errs on few
        # points but badly, and those are exactly the points it would raise as anomalies.
        _, s.form, s.seasonal, smoother = best
        s.level, s.alpha = smoother.level, smoother.alpha
        if smoother.damped:
            s.slope, s.beta, s.phi = smoother.slope, smoother.beta, smoother.phi
        else:
            s.slope = s.beta = s.phi = 0.0
        # The scale comes from errors made online, on points the model had not seen; the
        # fit's own (in-sample, so a little optimistic) errors only stand in until there
        # are enough of those.
        online = s.residuals if s.fitted else []
        if len(online) < config.residual_window // 2:
            errors = smoother.resid[min(10, len(y) // 10) :]
            seed = [float(r) for r in errors[-config.residual_window :]]
            s.residuals = (seed + online)[-config.residual_window :]
            self._spread = RunningSpread(s.residuals)
        return True

    def _seed(self) -> None:
        """At the first fit, the recent changes and spectral residual scores (the families
        that need no fit) from the window; afterwards they are those of the points scored."""
        s = self.state
        families, keep = self.config.families, self.config.residual_window
        values = s.values
        if "diff" in families and not s.changes:
            recent = values[-keep - 1 :]
            s.changes = [b - a for a, b in zip(recent, recent[1:], strict=False)]
            self._changes = RunningSpread(s.changes)
        if "sr" in families and not s.saliencies:
            first = max(3, len(values) - keep)
            s.saliencies = [
                newest_statistic(values[max(0, i - SR_WINDOW + 1) : i + 1])
                for i in range(first, len(values))
            ]
            self._saliencies = RunningSpread(s.saliencies)

    def window(self) -> list[PointScore]:
        """The verdict on each point of the window, oldest first (as first given)."""
        s = self.state
        return [
            self._stored(i, ScoreStatus.WARMING_UP if s.scores[i] is None else ScoreStatus.SCORED)
            for i in range(len(s.timestamps))
        ]

    def fit_due(self, points: int) -> bool:
        """Whether taking `points` more points would (likely) fit the model: a fit costs tens
        of milliseconds to seconds, so callers run such batches off their event loop."""
        s = self.state
        if "sr" in self.config.families and points >= SR_OFFLOAD_POINTS:
            return True  # tens of microseconds a point: many points are seconds of work
        if not s.fitted:
            return len(s.values) + points >= self.config.min_points
        if not self.config.seasonal:
            return False  # its refits only learn the spacing: microseconds
        return s.since_fit + points >= self.config.refit_points(s.period)

    def observe_many(self, points: Sequence[tuple[float, float]]) -> list[PointScore]:
        """Score points in the order given (an ingestion batch)."""
        return [self.observe(t, v) for t, v in points]


def observe_state(
    state: DetectorState, points: Sequence[tuple[float, float]]
) -> tuple[list[PointScore], DetectorState]:
    """`observe_many` on a detector resumed from `state`: the scores and the new state. A
    plain function of picklable values, to run in a worker process."""
    detector = AnomalyDetector(state)
    return detector.observe_many(points), detector.state


def refit_state(state: DetectorState) -> tuple[bool, DetectorState]:
    """`refit` on a detector resumed from `state`: whether it fit, and the new state."""
    detector = AnomalyDetector(state)
    return detector.refit(), detector.state


def estimate_period(
    values: Sequence[float] | NDArray[np.float64], max_period: int = MAX_PERIOD
) -> int:
    """The shortest lag whose autocorrelation peak is at least 0.3 and within 10 % of the
    highest peak, or 1 when there is none.

    Args:
        values: the series, equally spaced.
        max_period: the longest period considered (also at most a third of the series).
    """
    y = np.asarray(values, dtype=float)
    lags = min(max_period, len(y) // 3)
    if lags < 3 or float(np.ptp(y)) == 0.0:
        return 1
    r = np.asarray(acf(y, nlags=lags, fft=True), dtype=float)
    peaks = [k for k in range(2, lags) if r[k] > r[k - 1] and r[k] >= r[k + 1] and r[k] >= 0.3]
    if not peaks:
        return 1
    # The fundamental: the shortest lag nearly as correlated as the best (a clean daily
    # cycle correlates almost as well at two or three days).
    best = max(r[k] for k in peaks)
    return min(k for k in peaks if r[k] >= 0.9 * best)


def anomaly_events(scores: Sequence[PointScore]) -> list[AnomalyEvent]:
    """The anomalies among `scores`, each once: its points share an `anomaly_start`."""
    groups: dict[float, list[PointScore]] = {}
    for score in scores:
        if score.is_anomaly and score.anomaly_start is not None:
            groups.setdefault(score.anomaly_start, []).append(score)
    events = []
    for start, members in groups.items():
        peak = max(members, key=lambda s: abs(s.score or 0.0))
        events.append(
            AnomalyEvent(
                start=start,
                end=members[-1].timestamp,
                peak=peak.timestamp,
                peak_score=peak.score or 0.0,
                peak_anomaly_score=peak.anomaly_score or 0.0,
                points=len(members),
            )
        )
    return events


def _offline(
    period: int | None, timestamps: Sequence[float] | None, **overrides: object
) -> AnomalyDetector:
    """A fresh detector as offline mode runs it: the period learnt unless given, the
    spacing learnt when timestamps are given (one step otherwise)."""
    updates: dict[str, object] = {"period": period if period is not None else 0}
    if timestamps is not None:
        updates["step"] = 0.0
    updates.update({k: v for k, v in overrides.items() if v is not None})
    return AnomalyDetector(config=DetectorConfig.model_validate(updates))


def _stream(
    detector: AnomalyDetector, values: Sequence[float], timestamps: Sequence[float] | None
) -> list[PointScore]:
    times = timestamps if timestamps is not None else range(len(values))
    return [detector.observe(float(t), float(v)) for t, v in zip(times, values, strict=True)]


def score_series(
    values: Sequence[float],
    period: int | None = None,
    *,
    timestamps: Sequence[float] | None = None,
    threshold: float | None = None,
    score_threshold: float | None = None,
    detector: Detector | None = None,
) -> list[PointScore]:
    """Score a whole series (offline mode) by streaming it through the online detector.

    Only the past scores each point, as in production, and the period, when not given, is
    learnt from the points already seen (as online): the first `2 * period + 1` points (30
    when the period is learnt, 10 when there is none) warm the detector up.

    Args:
        values: oldest first.
        period: seasonal period in steps; None learns it (`estimate_period` at every fit).
        timestamps: one per value, non-decreasing (gaps respected, the spacing learnt);
            None: the step indices 0, 1, ...
        threshold: |robust z| deciding instead of the anomaly score.
        score_threshold: the anomaly score at or above which a point is anomalous.
        detector: the family scoring it (None: the default).
    """
    scorer = _offline(
        period,
        timestamps,
        threshold=threshold,
        score_threshold=score_threshold,
        detector=detector,
    )
    return _stream(scorer, values, timestamps)


def detect(
    values: Sequence[float],
    period: int | None,
    threshold: float | None = None,
    timestamps: Sequence[float] | None = None,
    score_threshold: float | None = None,
    detector: Detector | None = None,
) -> DetectResult:
    """Offline mode as the service serves it: `score_series` and the anomalies' indices.
    Linear in the number of values (the fits are bounded by the window, and amortised)."""
    scorer = _offline(
        period,
        timestamps,
        threshold=threshold,
        score_threshold=score_threshold,
        detector=detector,
    )
    scores = _stream(scorer, values, timestamps)
    config = scorer.config
    return DetectResult(
        events=anomaly_events(scores),
        period=scorer.state.period,
        threshold=config.z_threshold,
        score_threshold=None if config.threshold is not None else config.score_threshold,
        scores=scores,
        anomalies=[i for i, s in enumerate(scores) if s.is_anomaly],
        model=scorer.model,
    )
