"""Anomaly detection on the AIOps Challenge 2018 KPIs, through the running service.

Data: ../shared/datasets/aiops-kpi/ (29 labelled KPIs of web services, each a train half
and the test half that follows it; its README gives the protocols and published figures).

Route: a local system (anomaly and gateway, each beside its daprd) is started as the tests
start it. Each KPI is one series: its train half, then its test half, go to
`POST /v1/metrics/{series}/points` at the gateway in requests of at most 10,000 points,
timestamps as given, the period learnt (`period` 0) and the spacing the KPI's own. The
series' actor scores each point from the points before it only, so the test half is scored
after an unsupervised warm-up on the train values. The scores are the service's answers.

Protocol (unsupervised, parameters on the train halves only): the only parameter chosen is
the decision threshold on |robust z|: one for all KPIs, the one with the best delay-F1 over
the train halves pooled (reported as `delay_f1`); beside it, one per KPI from its own train
half (few segments there: it overfits), and the service's default (0.9999). Labels of the
test halves are used only to score. Measures on the test halves:
- delay-F1 (k = 7, the challenge's rule, `iopsai/iops` evaluation.py): a labelled segment
  counts as detected, all its points true positives, if any of its first k + 1 points is
  flagged, otherwise all are misses; points outside segments count as flagged. Per KPI,
  and over all KPIs concatenated (the challenge's overall figure).
- best F1 (point adjustment, any threshold: an upper bound, optimistic by construction),
  event F1 (each segment one point, best threshold), AUPRC (average precision of the raw
  |z| against the point labels).
- alerts per 1,000 normal points: anomalies (events, as `anomalies.detected` fires them)
  starting on a normal point, at the chosen threshold and at the service's default.

Results: bench/results/quality-anomaly-kpi.json. `--kpis N` takes the N smallest KPIs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from math import erf, sqrt
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.local import local_system
from bench.machine import describe
from consort.contracts.anomaly import DEFAULT_SCORE_THRESHOLD, MAX_POINTS, z_at

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "aiops-kpi"
DELAY = 7
PUBLISHED = {
    "sr_delay_f1_k7": 0.622,
    "sr_source": "Ren et al. KDD 2019, as reprinted in Floss (arXiv 2308.01011v4) Table 5",
    "sr_reproduced_k7": 0.675,
    "kan_ad_k5": {"best_f1": 0.9442, "event_f1": 0.7989, "delay_f1": 0.8755, "auprc": 0.9693},
    "srcnn_kan_ad_table_k5": {
        "best_f1": 0.4137,
        "event_f1": 0.0994,
        "delay_f1": 0.2266,
        "auprc": 0.3355,
    },
    "note": "see the data set's README: SR's figures come from the original files with gaps",
}


@dataclass
class Half:
    timestamps: np.ndarray
    values: np.ndarray
    labels: np.ndarray


def read_half(kpi: str, half: str) -> Half:
    with gzip.open(DATA / half / f"{kpi}.csv.gz", "rt", newline="") as rows:
        table = [
            (int(r["timestamp"]), float(r["value"]), int(r["label"])) for r in csv.DictReader(rows)
        ]
    t, v, y = zip(*table, strict=True)
    return Half(np.asarray(t, float), np.asarray(v, float), np.asarray(y, bool))


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of labelled points, as (first, last + 1)."""
    edges = np.diff(np.concatenate(([0], labels.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def adjusted_counts(
    z: np.ndarray, labels: np.ndarray, threshold: float, delay: int | None
) -> tuple[int, int, int]:
    """TP, FP, FN after the delay rule (None: plain point adjustment)."""
    flagged = z >= threshold
    tp = fn = 0
    for first, end in segments(labels):
        reach = end if delay is None else min(end, first + delay + 1)
        if flagged[first:reach].any():
            tp += end - first
        else:
            fn += end - first
    fp = int(np.sum(flagged & ~labels))
    return tp, fp, fn


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def sweep(
    z: np.ndarray,
    labels: np.ndarray,
    delay: int | None,
    event: bool = False,
    extra: tuple[float, ...] = (),
) -> tuple[float, float]:
    """The best F1 over thresholds (160 quantiles of the scores and `extra`) and its
    threshold."""
    levels = np.concatenate((np.linspace(0.0, 0.99, 100), 1 - np.logspace(-2, -5, 60)))
    candidates = np.unique(np.concatenate((np.quantile(z, levels), extra)))
    best = (0.0, float(candidates[-1]))
    for threshold in candidates:
        if event:
            flagged = z >= threshold
            hits = [flagged[a:b].any() for a, b in segments(labels)]
            tp, fn = int(sum(hits)), len(hits) - int(sum(hits))
            fp = int(np.sum(flagged & ~labels))
        else:
            tp, fp, fn = adjusted_counts(z, labels, float(threshold), delay)
        if (score := f1(tp, fp, fn)) > best[0]:
            best = (score, float(threshold))
    return best


def auprc(z: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-z, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision[hits]) / max(1, hits.sum()))


def alerts_per_1000(z: np.ndarray, labels: np.ndarray, threshold: float, cooldown: int) -> float:
    """Anomalies (runs of flagged points, gaps up to the cool-down) starting on a normal
    point, per 1,000 normal points."""
    flagged = np.flatnonzero(z >= threshold)
    starts = [i for k, i in enumerate(flagged) if k == 0 or i - flagged[k - 1] > cooldown]
    false = sum(1 for i in starts if not labels[i])
    return 1000 * false / max(1, int(np.sum(~labels)))


async def score_kpi(
    client: httpx.AsyncClient, gateway: str, kpi: str, step_s: int, points: Half
) -> np.ndarray:
    """|robust z| of every point, from the series' actor (0 while warming up)."""
    series = f"kpi.{kpi[:8]}.{int(time.time())}"
    z = np.zeros(len(points.values))
    for first in range(0, len(points.values), MAX_POINTS):
        chunk = slice(first, first + MAX_POINTS)
        body: dict[str, Any] = {
            "points": [
                {"timestamp": datetime.fromtimestamp(t, UTC).isoformat(), "value": v}
                for t, v in zip(points.timestamps[chunk], points.values[chunk], strict=True)
            ],
            "config": {"period": 0, "step_s": step_s},
        }
        response = await client.post(f"{gateway}/v1/metrics/{series}/points", json=body)
        response.raise_for_status()
        scores = response.json()["scores"]
        z[chunk] = [abs(s["score"]) if s["score"] is not None else 0.0 for s in scores]
    await client.delete(f"{gateway}/v1/metrics/{series}")
    return z


def pooled_threshold(scored: list[tuple[np.ndarray, Half]]) -> float:
    """The |z| threshold with the best delay-F1 over all train halves together."""
    candidates = np.unique(
        np.quantile(np.concatenate([z for z, _ in scored]), 1 - np.logspace(-1, -4.5, 60))
    )

    def pooled(threshold: float) -> float:
        counts = [adjusted_counts(z, half.labels, threshold, DELAY) for z, half in scored]
        return f1(*(sum(c[i] for c in counts) for i in range(3)))

    return float(max(candidates, key=pooled))


def evaluate(kpi: str, z: np.ndarray, train: Half, test: Half, pooled: float) -> dict[str, Any]:
    n = len(train.values)
    z_train, z_test = z[:n], z[n:]
    _, chosen = sweep(z_train, train.labels, DELAY)
    default = z_at(DEFAULT_SCORE_THRESHOLD)
    tp, fp, fn = adjusted_counts(z_test, test.labels, pooled, DELAY)
    k_tp, k_fp, k_fn = adjusted_counts(z_test, test.labels, chosen, DELAY)
    d_tp, d_fp, d_fn = adjusted_counts(z_test, test.labels, default, DELAY)
    tried = (pooled, chosen, default)  # the best-threshold figures are at least these
    return {
        "kpi": kpi,
        "test_points": len(z_test),
        "delay_f1": round(f1(tp, fp, fn), 4),
        "counts": [tp, fp, fn],
        "per_kpi_z_threshold": round(chosen, 3),
        "delay_f1_per_kpi_threshold": round(f1(k_tp, k_fp, k_fn), 4),
        "counts_per_kpi_threshold": [k_tp, k_fp, k_fn],
        "delay_f1_at_default": round(f1(d_tp, d_fp, d_fn), 4),
        "counts_at_default": [d_tp, d_fp, d_fn],
        "best_f1": round(sweep(z_test, test.labels, None, extra=tried)[0], 4),
        "best_delay_f1_oracle": round(sweep(z_test, test.labels, DELAY, extra=tried)[0], 4),
        "event_f1": round(sweep(z_test, test.labels, None, event=True, extra=tried)[0], 4),
        "auprc": round(auprc(z_test, test.labels), 4),
        "alerts_per_1000_normal": round(alerts_per_1000(z_test, test.labels, pooled, 10), 3),
        "alerts_per_1000_normal_at_default": round(
            alerts_per_1000(z_test, test.labels, default, 10), 3
        ),
    }


def overall(rows: list[dict[str, Any]], key: str) -> float:
    tp, fp, fn = (sum(r[key][i] for r in rows) for i in range(3))
    return round(f1(tp, fp, fn), 4)


async def run(
    gateway: str, kpis: list[tuple[str, int]], headers: dict[str, str]
) -> list[tuple[str, np.ndarray, Half, Half]]:
    """Every KPI's train and test halves and the service's |z| for them."""
    scored = []
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        for kpi, step_s in kpis:
            started = time.perf_counter()
            train, test = read_half(kpi, "train"), read_half(kpi, "test")
            both = Half(
                np.concatenate((train.timestamps, test.timestamps)),
                np.concatenate((train.values, test.values)),
                np.concatenate((train.labels, test.labels)),
            )
            z = await score_kpi(client, gateway, kpi, step_s, both)
            print(f"  {kpi[:8]}: {len(z)} points in {time.perf_counter() - started:.0f} s")
            scored.append((kpi, z, train, test))
    return scored


def report_rows(scored: list[tuple[str, np.ndarray, Half, Half]]) -> tuple[float, list[Any]]:
    """The pooled train threshold and each KPI's measures on its test half."""
    pooled = pooled_threshold([(z[: len(train.values)], train) for _, z, train, _ in scored])
    rows = []
    for kpi, z, train, test in scored:
        row = evaluate(kpi, z, train, test, pooled)
        measures = ("delay_f1", "delay_f1_at_default", "best_f1", "event_f1", "auprc")
        shown = " ".join(f"{m} {row[m]:.3f}" for m in measures)
        print(f"  {kpi[:8]} {shown} alerts/1000 {row['alerts_per_1000_normal']:.2f}")
        rows.append(row)
    return pooled, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=29, help="the N smallest KPIs (29: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-anomaly-kpi.json")
    args = parser.parse_args()
    with open(DATA / "series.csv", newline="") as rows:
        table = sorted(csv.DictReader(rows), key=lambda r: int(r["train_points"]))
    kpis = [(r["kpi_id"], int(r["interval_s"])) for r in table[: args.kpis]]
    started = time.perf_counter()
    with local_system(["anomaly", "gateway"]) as system:
        try:
            scored = asyncio.run(run(system.url("gateway"), kpis, system.api_headers))
        except Exception:
            print(system.log_tails(15))
            raise
    pooled, rows = report_rows(scored)
    report = {
        "z_threshold_chosen_on_train": round(pooled, 3),
        "anomaly_score_threshold_chosen_on_train": float(erf(pooled / sqrt(2))),
        "machine": describe(),
        "data": "AIOps Challenge 2018 KPIs (../shared/datasets/aiops-kpi/), test halves",
        "kpis": len(rows),
        "method": __doc__,
        "overall_delay_f1": overall(rows, "counts"),
        "overall_delay_f1_per_kpi_threshold": overall(rows, "counts_per_kpi_threshold"),
        "overall_delay_f1_at_default": overall(rows, "counts_at_default"),
        "mean": {
            key: round(float(np.mean([r[key] for r in rows])), 4)
            for key in ("delay_f1", "best_f1", "event_f1", "auprc", "alerts_per_1000_normal")
        },
        "published": PUBLISHED,
        "per_kpi": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"overall delay-F1 (k = {DELAY}) {report['overall_delay_f1']}; wrote {args.out}")


if __name__ == "__main__":
    main()
