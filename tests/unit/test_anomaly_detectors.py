"""Each detector family (no sidecar): spikes and level shifts found, flat and quantized
series not spammed, offline equal to online, state resumed exactly, the ensemble's rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from apps.anomaly.detector import (
    AnomalyDetector,
    DetectorConfig,
    DetectorState,
    anomaly_events,
    detect,
    score_series,
)
from apps.anomaly.spectral import newest_score, saliency
from consort.contracts.anomaly import Detector, DetectRequest, ScoreStatus, SeriesConfig

pytestmark = pytest.mark.unit

ALL = list(Detector)


def noisy(n: int = 1500, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 100 + 5 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 1, n)


def flagged(scores: list) -> list[int]:
    return [i for i, s in enumerate(scores) if s.is_anomaly]


@pytest.mark.parametrize("detector", ALL)
def test_a_spike_is_found_and_ordinary_points_are_rarely_flagged(detector: Detector) -> None:
    y = noisy()
    y[1200] += 15
    scores = score_series(list(y), 1, detector=detector, threshold=6.0)
    assert 1200 in flagged(scores)
    # At |z| > 6 on Gaussian noise, few others: the spectral residual's z has the heaviest
    # tails (a few in a thousand), the others none but the change back down.
    spectral = "sr" in DetectorConfig(detector=detector).families
    others = [i for i in flagged(scores) if not 1200 <= i <= 1201]
    assert len(others) <= (5 if spectral else 0)
    top = sorted(range(len(scores)), key=lambda i: -abs(scores[i].score or 0))
    assert 1200 in top[: 3 if spectral else 1]


@pytest.mark.parametrize("detector", ALL)
def test_a_level_shift_is_caught_at_its_start_and_is_one_anomaly(detector: Detector) -> None:
    y = noisy()
    y[1000:] += 25
    result = detect(list(y), 1, threshold=6.0, detector=detector)
    starts = [e.start for e in result.events if e.start >= 1000]
    assert starts and starts[0] <= 1002.0  # within the delay rule's first points
    assert [s for s in starts if s < 1100] == starts[:1]  # one anomaly, then normal


@pytest.mark.parametrize("detector", ALL)
def test_a_quantized_series_moving_by_one_quantum_is_not_spammed(detector: Detector) -> None:
    rng = np.random.default_rng(5)
    counts = [float(v) for v in 10 + (rng.random(1000) < 0.05)]
    counts[900] = 25.0
    scores = score_series(counts, 1, detector=detector)
    assert 900 in flagged(scores)
    others = [i for i in flagged(scores) if not 900 <= i <= 901]
    # One-quantum moves are ordinary: at most a handful of 1,000 (the change family's
    # 5 % of moves are its tail; none should be a million-sigma event).
    assert len(others) <= 5, others
    assert all(abs(scores[i].score or 0) < 100 for i in others)


@pytest.mark.parametrize("detector", ALL)
def test_a_flat_series_raises_nothing(detector: Detector) -> None:
    scores = score_series([42.0] * 800, 1, detector=detector)
    assert flagged(scores) == []
    assert all(abs(s.score or 0.0) < 1e-6 for s in scores)


@pytest.mark.parametrize("detector", ALL)
def test_offline_scores_are_the_online_scores_for_every_detector(detector: Detector) -> None:
    y = noisy(900)
    y[700] -= 20
    times = [60.0 * i for i in range(900) if i % 9 != 4]  # gaps
    values = [float(y[i]) for i in range(900) if i % 9 != 4]
    offline = score_series(values, timestamps=times, detector=detector)
    online = AnomalyDetector(config=DetectorConfig(detector=detector, period=0, step=60.0))
    assert [online.observe(t, v) for t, v in zip(times, values, strict=True)] == offline
    assert 60.0 * 700 in [s.timestamp for s in offline if s.is_anomaly]


@pytest.mark.parametrize("detector", ALL)
def test_a_resumed_state_scores_on_identically(detector: Detector) -> None:
    y = noisy(700)
    config = DetectorConfig(detector=detector, period=0)
    straight = AnomalyDetector(config=config)
    expected = [straight.observe(float(i), float(v)) for i, v in enumerate(y)]
    first = AnomalyDetector(config=config)
    for i, v in enumerate(y[:400]):
        first.observe(float(i), float(v))
    saved = json.dumps(first.state.model_dump(mode="json"))
    resumed = AnomalyDetector(DetectorState.model_validate(json.loads(saved)))
    assert [resumed.observe(float(i), float(v)) for i, v in enumerate(y) if i >= 400] == (
        expected[400:]
    )


def test_the_ensemble_scores_its_members_largest_z() -> None:
    y = noisy(800)
    y[500] += 12
    y[650:] -= 10
    members = {
        d: score_series(list(y), detector=d) for d in (Detector.DIFF, Detector.SPECTRAL_RESIDUAL)
    }
    ensemble = score_series(list(y), detector=Detector.ENSEMBLE)
    for i, s in enumerate(ensemble):
        if s.status is ScoreStatus.SCORED:
            assert abs(s.score or 0) == max(abs(m[i].score or 0) for m in members.values())
    # Both members fire at the spike; its band is the change member's.
    assert {abs(m[500].score or 0) > 6 for m in members.values()} == {True}
    assert [s.expected for s in ensemble] == [s.expected for s in members[Detector.DIFF]]


def test_spectral_residual_saliency_peaks_at_a_spike_and_is_zero_when_flat() -> None:
    y = np.random.default_rng(1).normal(0, 1, 64)
    y[-1] += 8
    assert newest_score(y) > 3  # the paper's threshold
    assert int(np.argmax(saliency(y)[:64])) == 63
    assert newest_score([3.0] * 64) == 0.0
    assert newest_score(np.random.default_rng(2).normal(0, 1, 64)) < 3


def test_each_detector_names_its_model() -> None:
    names = {d: AnomalyDetector(config=DetectorConfig(detector=d)).model.name for d in ALL}
    assert names[Detector.DIFF] == "diff-robust-z"
    assert names[Detector.SPECTRAL_RESIDUAL] == "spectral-residual"
    assert names[Detector.ENSEMBLE].startswith("ensemble(")


def test_an_unknown_detector_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError) as error:
        SeriesConfig.model_validate({"detector": "prophet"})
    assert error.value.errors()[0]["loc"] == ("detector",)
    with pytest.raises(ValidationError) as error:
        DetectRequest.model_validate({"values": [1, 2, 3], "detector": "prophet"})
    assert error.value.errors()[0]["loc"] == ("detector",)


def test_the_change_detector_fires_once_per_shift() -> None:
    y = noisy(1200)
    for at in (400, 800):
        y[at:] += 30
    scores = score_series(list(y), 1, detector=Detector.DIFF, threshold=6.0)
    assert [e.start for e in anomaly_events(scores)] == [400.0, 800.0]
