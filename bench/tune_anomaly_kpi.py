"""Choosing the anomaly detector and its threshold on the AIOps KPIs' train halves, in
process (the service's own domain code, `apps.anomaly.detector.score_series`, so fast
enough to try every detector on every point).

Every KPI's train half and test half (after the train half's tail) are scored by each
detector, in the requests offline mode would serve (bench/aiops_kpi.py), and the |z| kept
under .run/anomaly-kpi/ (the ensemble's is the largest of its members', as
`ensemble_z` makes it). Then, on the train halves only:
- `global`: one detector and one |z| threshold for every KPI, the pair with the best
  delay-F1 over the train halves pooled (how the service's default is picked);
- `per_kpi`: each KPI's own detector and threshold, the best delay-F1 on its own train half.
Which of the two schemes is reported as the choice is itself decided on the train halves:
each scheme picks on the first 60 % of every train half and is scored on the rest.

Written: bench/results/anomaly-kpi-choices.json (the choices, and the in-process figures
on the test halves, which bench/eval_anomaly_kpi.py then measures through the service).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from apps.anomaly.detector import score_series
from bench.aiops_kpi import (
    DELAY,
    Half,
    adjusted_counts,
    candidates,
    f1,
    kpis,
    read_half,
    requests,
    sweep,
    test_series,
)
from consort.contracts.anomaly import Detector

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).resolve().parents[1] / ".run" / "anomaly-kpi"
#: Detectors scored point by point on every KPI, and chosen from; the ensemble comes from
#: its members' scores.
SCORED = (Detector.DIFF, Detector.SPECTRAL_RESIDUAL)
DETECTORS = (*SCORED, Detector.ENSEMBLE)
#: STL, the first detector, is scored on the five-minute KPIs only (1,700-3,800 points a
#: CPU second: all 29 would take an hour of this shared machine's two cores), as a baseline.
STL_KPIS = 7
#: Share of each train half the schemes choose on, when they are compared.
CHOOSE_SHARE = 0.6


def score_half(series: Half, first_new: int, detector: Detector) -> np.ndarray:
    """|z| of points [first_new, end) of `series`, request by request (0 while warming)."""
    z = np.zeros(len(series.values) - first_new)
    for start, new, stop in requests(first_new, len(series.values)):
        scores = score_series(
            series.values[start:stop].tolist(),
            timestamps=series.timestamps[start:stop].tolist(),
            detector=detector,
        )
        z[new - first_new : stop - first_new] = [
            abs(s.score) if s.score is not None else 0.0 for s in scores[new - start :]
        ]
    return z


def score_task(
    kpi: str, detector: Detector, train_only: bool = False
) -> tuple[str, str, float, int]:
    """Score one KPI's halves (or its train half) with one detector into the cache;
    seconds and points."""
    path = CACHE / f"{kpi}.{detector.value}{'.train' if train_only else ''}.npz"
    if path.exists() or (train_only and (CACHE / f"{kpi}.{detector.value}.npz").exists()):
        return kpi, detector.value, 0.0, 0
    train, test = read_half(kpi, "train"), read_half(kpi, "test")
    started = time.process_time()
    z_train = score_half(train, 0, detector)
    z_test = np.zeros(0)
    if not train_only:
        joined, before = test_series(train, test)
        z_test = score_half(joined, before, detector)
    seconds = time.process_time() - started
    np.savez(path, train=z_train, test=z_test)
    return kpi, detector.value, seconds, len(z_train) + len(z_test)


def stl_train(kpi: str) -> np.ndarray:
    """STL's train half scores (the only ones the one-minute KPIs have)."""
    for name in (f"{kpi}.stl.npz", f"{kpi}.stl.train.npz"):
        if (CACHE / name).exists():
            return np.asarray(np.load(CACHE / name)["train"])
    raise FileNotFoundError(f"{kpi}: STL not scored (run --score-stl-train)")


def load(kpi: str, detector: Detector) -> tuple[np.ndarray, np.ndarray]:
    if detector is Detector.ENSEMBLE:
        members = [load(kpi, d) for d in SCORED]
        return (
            np.max([m[0] for m in members], axis=0),
            np.max([m[1] for m in members], axis=0),
        )
    saved = np.load(CACHE / f"{kpi}.{detector.value}.npz")
    return saved["train"], saved["test"]


def pooled_f1(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> float:
    """Delay-F1 over (scores, labels, threshold) parts concatenated."""
    total = np.zeros(3, dtype=np.int64)
    for z, labels, threshold in parts:
        total += adjusted_counts(z, labels, threshold, DELAY)
    return f1(*(int(c) for c in total))


def choose_global(
    halves: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict[str, np.ndarray]
) -> tuple[Detector, float, float]:
    """The detector and |z| threshold with the best pooled delay-F1 (detector, z, F1)."""
    best = (Detector.STL, 0.0, -1.0)
    for detector in DETECTORS:
        threshold, score = choose_global_for(detector, halves, labels)
        if score > best[2]:
            best = (detector, threshold, score)
    return best


def choose_per_kpi(z: dict[Detector, np.ndarray], labels: np.ndarray) -> tuple[Detector, float]:
    """A KPI's detector and threshold: the best delay-F1 on its own points (ties: the
    detector listed first, the higher threshold)."""
    best = (Detector.STL, float("inf"), -1.0)
    for detector in DETECTORS:
        score, threshold = sweep(z[detector], labels, DELAY)
        if score > best[2]:
            best = (detector, threshold, score)
    return best[0], best[1]


def compare_schemes(
    scores: dict[str, tuple[np.ndarray, np.ndarray]], train: dict[str, np.ndarray]
) -> dict[str, float]:
    """Each scheme chosen on the first `CHOOSE_SHARE` of every train half and scored on the
    rest (pooled delay-F1): which one generalises, decided without the test halves."""
    cut = {k: int(CHOOSE_SHARE * len(y)) for k, y in train.items()}
    early = {key: (z[: cut[key.split(".")[0]]], z) for key, (z, _) in scores.items()}
    detector, threshold, _ = choose_global(early, {k: y[: cut[k]] for k, y in train.items()})
    late_global = [
        (scores[f"{k}.{detector.value}"][0][cut[k] :], y[cut[k] :], threshold)
        for k, y in train.items()
    ]
    late_own = []
    for k, y in train.items():
        own = {d: scores[f"{k}.{d.value}"][0][: cut[k]] for d in DETECTORS}
        d, t = choose_per_kpi(own, y[: cut[k]])
        late_own.append((scores[f"{k}.{d.value}"][0][cut[k] :], y[cut[k] :], t))
    return {"global": pooled_f1(late_global), "per_kpi": pooled_f1(late_own)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=29, help="the N smallest KPIs (29: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "anomaly-kpi-choices.json")
    parser.add_argument(
        "--score-only",
        nargs="*",
        choices=[d.value for d in (Detector.STL, *SCORED)],
        help="score these, then stop",
    )
    parser.add_argument(
        "--score-stl-train", action="store_true", help="also STL's train half of every KPI"
    )
    args = parser.parse_args()
    chosen_kpis = kpis()[: args.kpis]
    CACHE.mkdir(parents=True, exist_ok=True)
    # STL on the five-minute KPIs first (small), then each detector over the largest first.
    tasks = [(k, Detector.STL) for k, _ in chosen_kpis[:STL_KPIS]]
    tasks += [(k, d) for d in SCORED for k, _ in reversed(chosen_kpis)]
    if args.score_only:
        tasks = [(k, d) for k, d in tasks if d.value in args.score_only]
    # STL's train halves on every KPI: only for choosing the default, one detector for all.
    stl = [(k, Detector.STL, True) for k, _ in reversed(chosen_kpis)]
    plan = [(k, d, False) for k, d in tasks] + (stl if args.score_stl_train else [])
    with ProcessPoolExecutor(args.workers) as pool:
        for kpi, detector, seconds, points in pool.map(score_task, *zip(*plan, strict=True)):
            if points:
                print(f"  {kpi[:8]} {detector}: {points} points, {points / seconds:.0f}/s")
    if args.score_only is not None:
        return
    scores = {f"{k}.{d.value}": load(k, d) for k, _ in chosen_kpis for d in DETECTORS}
    train = {k: read_half(k, "train").labels for k, _ in chosen_kpis}
    test = {k: read_half(k, "test").labels for k, _ in chosen_kpis}
    schemes = compare_schemes(scores, train)
    scheme = max(schemes, key=lambda s: schemes[s])
    detector, threshold, train_f1 = choose_global(scores, train)
    # The default: one detector for all, on the train halves pooled, STL included when its
    # train halves were scored (`--score-stl-train`).
    default_on_train = {}
    try:
        with_stl = {**scores, **{f"{k}.stl": (stl_train(k), np.zeros(0)) for k, _ in chosen_kpis}}
    except FileNotFoundError:
        with_stl = None
    if with_stl is not None:
        for d in (Detector.STL, *DETECTORS):
            t, train_f1 = choose_global_for(d, with_stl, train)
            default_on_train[d.value] = {"z_threshold": t, "train_delay_f1": train_f1}
    per_kpi: dict[str, dict[str, Any]] = {}
    for k, _ in chosen_kpis:
        own_d, own_t = choose_per_kpi({d: scores[f"{k}.{d.value}"][0] for d in DETECTORS}, train[k])
        per_kpi[k] = {"detector": own_d.value, "z_threshold": own_t}
    # In-process figures on the test halves (the service's are bench/eval_anomaly_kpi.py's).
    in_process = {
        "global": pooled_f1(
            [(scores[f"{k}.{detector.value}"][1], test[k], threshold) for k in test]
        ),
        "per_kpi": pooled_f1(
            [
                (scores[f"{k}.{c['detector']}"][1], test[k], c["z_threshold"])
                for k, c in per_kpi.items()
            ]
        ),
        "each_detector_at_its_pooled_train_threshold": baselines(scores, train, test, DETECTORS),
    }
    five = [k for k, _ in chosen_kpis[:STL_KPIS]]
    scores.update({f"{k}.stl": load(k, Detector.STL) for k in five})
    in_process["five_minute_kpis_each_detector_at_its_pooled_train_threshold"] = baselines(
        scores,
        {k: train[k] for k in five},
        {k: test[k] for k in five},
        (Detector.STL, *DETECTORS),
    )
    report = {
        "method": __doc__,
        "kpis": len(chosen_kpis),
        "schemes_on_train_split": schemes,
        "scheme": scheme,
        "global": {
            "detector": detector.value,
            "z_threshold": threshold,
            "train_delay_f1": train_f1,
        },
        "default_one_detector_for_all_on_train": default_on_train,
        "per_kpi": per_kpi,
        "in_process_test_delay_f1": in_process,
        "points_per_cpu_second": points_per_cpu_second(chosen_kpis[-1][0]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("method", "per_kpi")}, indent=2))


def baselines(
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    detectors: tuple[Detector, ...],
) -> dict[str, dict[str, float]]:
    """Each detector alone at its pooled train threshold: that and its test delay-F1."""
    found = {}
    for d in detectors:
        t, train_f1 = choose_global_for(d, scores, train)
        found[d.value] = {
            "z_threshold": t,
            "train_delay_f1": train_f1,
            "test_delay_f1": pooled_f1([(scores[f"{k}.{d.value}"][1], test[k], t) for k in test]),
        }
    return found


def points_per_cpu_second(kpi: str, points: int = 20_000) -> dict[str, int]:
    """Each detector's speed in process: the first `points` of a KPI's train half, in
    requests as offline mode serves them, points scored a CPU second."""
    half = read_half(kpi, "train")
    part = Half(half.timestamps[:points], half.values[:points], half.labels[:points])
    speed = {}
    for d in Detector:
        started = time.process_time()
        score_half(part, 0, d)
        speed[d.value] = round(points / (time.process_time() - started))
    return speed


def choose_global_for(
    detector: Detector,
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    train: dict[str, np.ndarray],
) -> tuple[float, float]:
    """The best pooled |z| threshold of one detector on the train halves, and its F1."""
    z_all = np.concatenate([scores[f"{k}.{detector.value}"][0] for k in train])
    best = (0.0, -1.0)
    for threshold in candidates(z_all):
        parts = [(scores[f"{k}.{detector.value}"][0], y, threshold) for k, y in train.items()]
        if (score := pooled_f1(parts)) > best[1]:
            best = (float(threshold), score)
    return best


if __name__ == "__main__":
    main()
