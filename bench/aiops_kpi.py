"""The AIOps Challenge 2018 KPIs and their measures, shared by the tuning (in process) and
the evaluation (through the service): reading a half, the requests a half is scored in,
and the challenge's delay-F1 beside best F1, event F1, AUPRC and alerts per 1,000 normal
points.

Data: ../shared/datasets/aiops-kpi/ (29 labelled KPIs, each a train half and the test half
that follows it; its README gives the protocols and the published figures).

How a half is scored: as offline mode serves it, in requests of at most `MAX_DETECT_POINTS`
values, each the `WARM` points before its new points (the train half's tail for the test
half's first) and then `MAX_DETECT_POINTS - WARM` new points: each request is one fresh
detector, warmed up on its first `WARM` points and scoring the rest causally. Only the new
points' scores are kept. The train half's first request has no points before it: its
first points are the detector's own warm-up (scored 0).
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from consort.contracts.anomaly import MAX_DETECT_POINTS

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "aiops-kpi"
DELAY = 7
#: Points before a request's new points that warm its detector up.
WARM = 2_000
#: Gap after an alert within which the next flagged point is the same alert.
COOLDOWN = 10
PUBLISHED = {
    "sr_delay_f1_k7": 0.622,
    "sr_source": "Ren et al. KDD 2019, as reprinted in Floss (arXiv 2308.01011v4) Table 5",
    "sr_reproduced_k7": 0.675,
    "ts2vec_f1_k7": 0.677,
    "kan_ad_k5": {"best_f1": 0.9442, "event_f1": 0.7989, "delay_f1": 0.8755, "auprc": 0.9693},
    "srcnn_kan_ad_table_k5": {
        "best_f1": 0.4137,
        "event_f1": 0.0994,
        "delay_f1": 0.2266,
        "auprc": 0.3355,
    },
    "note": (
        "see the data set's README: SR's and TS2Vec's figures come from the original files "
        "with gaps and their own splits; KAN-AD's table is k = 5 on these files"
    ),
}


@dataclass
class Half:
    timestamps: np.ndarray
    values: np.ndarray
    labels: np.ndarray


def kpis() -> list[tuple[str, int]]:
    """Every KPI id and its step in seconds, smallest first."""
    with open(DATA / "series.csv", newline="") as rows:
        table = sorted(csv.DictReader(rows), key=lambda r: int(r["train_points"]))
    return [(r["kpi_id"], int(r["interval_s"])) for r in table]


def read_half(kpi: str, half: str) -> Half:
    with gzip.open(DATA / half / f"{kpi}.csv.gz", "rt", newline="") as rows:
        table = [
            (int(r["timestamp"]), float(r["value"]), int(r["label"])) for r in csv.DictReader(rows)
        ]
    t, v, y = zip(*table, strict=True)
    return Half(np.asarray(t, float), np.asarray(v, float), np.asarray(y, bool))


def test_series(train: Half, test: Half) -> tuple[Half, int]:
    """The train half's last `WARM` points and the test half, and where the test begins."""
    before = min(WARM, len(train.values))
    joined = Half(
        np.concatenate((train.timestamps[-before:], test.timestamps)),
        np.concatenate((train.values[-before:], test.values)),
        np.concatenate((train.labels[-before:], test.labels)),
    )
    return joined, before


def requests(first_new: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(start, first new, end) of each request scoring points [first_new, end) of a series:
    each at most `MAX_DETECT_POINTS` long, the `WARM` points before its new ones first."""
    while first_new < end:
        start = max(0, first_new - WARM)
        stop = min(end, start + MAX_DETECT_POINTS)
        yield start, first_new, stop
        first_new = stop


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of labelled points, as (first, last + 1)."""
    edges = np.diff(np.concatenate(([0], labels.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def counts(flagged: np.ndarray, labels: np.ndarray, delay: int | None) -> tuple[int, int, int]:
    """TP, FP, FN of 0/1 verdicts after the delay rule (None: plain point adjustment): a
    segment is detected, all its points true positives, if one of its first delay + 1
    points is flagged, else all are misses (`iopsai/iops` evaluation.py)."""
    tp = fn = 0
    for first, end in segments(labels):
        reach = end if delay is None else min(end, first + delay + 1)
        if flagged[first:reach].any():
            tp += end - first
        else:
            fn += end - first
    fp = int(np.sum(flagged & ~labels))
    return tp, fp, fn


def adjusted_counts(
    z: np.ndarray, labels: np.ndarray, threshold: float, delay: int | None
) -> tuple[int, int, int]:
    """TP, FP, FN of the scores `z` above `threshold` (the service's rule for `threshold`)
    after the delay rule."""
    return counts(z > threshold, labels, delay)


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def candidates(z: np.ndarray, extra: tuple[float, ...] = ()) -> np.ndarray:
    """Thresholds worth trying on scores `z`: 160 quantiles, from the median to 1e-5."""
    levels = np.concatenate((np.linspace(0.5, 0.99, 50), 1 - np.logspace(-2, -5, 60)))
    return np.unique(np.concatenate((np.quantile(z, levels), extra)))


def sweep(
    z: np.ndarray,
    labels: np.ndarray,
    delay: int | None,
    event: bool = False,
    extra: tuple[float, ...] = (),
) -> tuple[float, float]:
    """The best F1 over thresholds (`candidates`) and its threshold."""
    spans = segments(labels)
    best = (0.0, float(np.max(z)) + 1.0)
    for threshold in candidates(z, extra):
        if event:
            flagged = z > threshold
            hits = sum(bool(flagged[a:b].any()) for a, b in spans)
            tp, fn, fp = hits, len(spans) - hits, int(np.sum(flagged & ~labels))
        else:
            tp, fp, fn = adjusted_counts(z, labels, float(threshold), delay)
        if (score := f1(tp, fp, fn)) > best[0]:
            best = (score, float(threshold))
    return best


def auprc(z: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of the scores against the point labels."""
    order = np.argsort(-z, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision[hits]) / max(1, hits.sum()))


def alerts_per_1000(flagged: np.ndarray, labels: np.ndarray, cooldown: int = COOLDOWN) -> float:
    """Alerts (runs of flagged points, gaps up to the cool-down: one `anomalies.detected`
    each) starting on a normal point, per 1,000 normal points."""
    at = np.flatnonzero(flagged)
    starts = at[np.concatenate(([True], np.diff(at) > cooldown))] if at.size else at
    false = int(np.sum(~labels[starts]))
    return 1000 * false / max(1, int(np.sum(~labels)))
