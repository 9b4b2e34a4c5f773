"""Anomaly detection on the AIOps Challenge 2018 KPIs, through the running service.

Data: ../shared/datasets/aiops-kpi/ (29 labelled KPIs of web services, each a train half
and the test half that follows it; its README gives the protocols and published figures).

Parameters: chosen on the train halves only, by bench/tune_anomaly_kpi.py (in process, the
same domain code): the detector and |z| threshold of every KPI, either one pair for all or
each KPI's own, the scheme itself picked on a split of the train halves
(bench/results/anomaly-kpi-choices.json). Labels of the test halves are used only to score.

Route: a local system (anomaly and gateway, each beside its daprd) is started as the tests
start it. Offline: every KPI's test half, after the last 2,000 train points, goes to
`POST /v1/anomalies/detect` at the gateway in requests of 10,000 values, each the 2,000
points before its 8,000 new ones (timestamps as given, the period and spacing learnt, the
KPI's detector and threshold); the new points' scores and verdicts are the service's
answers. Online: the first such request's 10,000 points of every KPI go to a fresh series
through `POST /v1/metrics/{series}/points` (its actor; config: the same detector and
threshold, period learnt, the KPI's spacing), and its scores must equal the offline ones
point for point (`online_equals_offline`).

Measures on the test halves (bench/aiops_kpi.py):
- delay-F1 (k = 7, the challenge's rule, `iopsai/iops` evaluation.py), of the service's own
  verdicts: per KPI, and over all KPIs concatenated (the challenge's overall figure);
- best F1 (point adjustment, best threshold: optimistic by construction), event F1 (each
  segment one point, best threshold), AUPRC (of |z| against the point labels);
- alerts per 1,000 normal points: alerts (one `anomalies.detected` each: runs of flagged
  points, gaps up to the cool-down of 10) starting on a normal point.

Results: bench/results/quality-anomaly-kpi.json. `--kpis N` takes the N smallest KPIs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.aiops_kpi import (
    DELAY,
    PUBLISHED,
    Half,
    alerts_per_1000,
    auprc,
    counts,
    f1,
    kpis,
    read_half,
    requests,
    sweep,
    test_series,
)
from bench.local import local_system
from bench.machine import describe

RESULTS = Path(__file__).parent / "results"
CHOICES = RESULTS / "anomaly-kpi-choices.json"


def choices(kpi: str, chosen: dict[str, Any]) -> tuple[str, float]:
    """The KPI's detector and |z| threshold under the scheme chosen on the train halves."""
    if chosen["scheme"] == "global":
        return chosen["global"]["detector"], chosen["global"]["z_threshold"]
    own = chosen["per_kpi"][kpi]
    return own["detector"], own["z_threshold"]


async def offline(
    client: httpx.AsyncClient, gateway: str, series: Half, first: int, params: tuple[str, float]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """|z| and verdicts of points [first, end) from `POST /v1/anomalies/detect`, and the
    first request's scores (every point of it, warm-up included)."""
    detector, threshold = params
    n = len(series.values) - first
    z, flagged = np.zeros(n), np.zeros(n, dtype=bool)
    first_scores: list[dict[str, Any]] = []
    for start, new, stop in requests(first, len(series.values)):
        body = {
            "values": series.values[start:stop].tolist(),
            "timestamps": series.timestamps[start:stop].tolist(),
            "detector": detector,
            "threshold": threshold,
        }
        response = await client.post(f"{gateway}/v1/anomalies/detect", json=body)
        response.raise_for_status()
        scores = response.json()["scores"]
        first_scores = first_scores or scores
        kept = scores[new - start :]
        z[new - first : stop - first] = [abs(s["score"] or 0.0) for s in kept]
        flagged[new - first : stop - first] = [s["is_anomaly"] for s in kept]
    return z, flagged, first_scores


async def online(
    client: httpx.AsyncClient,
    gateway: str,
    name: str,
    series: Half,
    step_s: int,
    params: tuple[str, float],
) -> list[dict[str, Any]]:
    """The first request's points, sent to a fresh series' actor: its scores."""
    start, _, stop = next(requests(min(2_000, len(series.values)), len(series.values)))
    body = {
        "points": [
            {"timestamp": datetime.fromtimestamp(t, UTC).isoformat(), "value": v}
            for t, v in zip(series.timestamps[start:stop], series.values[start:stop], strict=True)
        ],
        "config": {"detector": params[0], "threshold": params[1], "period": 0, "step_s": step_s},
    }
    response = await client.post(f"{gateway}/v1/metrics/{name}/points", json=body)
    response.raise_for_status()
    await client.delete(f"{gateway}/v1/metrics/{name}")
    return list(response.json()["scores"])


def same_scores(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two lists of point scores agree on every point's score and verdict."""
    keys = ("score", "is_anomaly", "expected")
    return len(a) == len(b) and all(
        all(x[k] == y[k] for k in keys) for x, y in zip(a, b, strict=True)
    )


def measure(
    kpi: str, params: tuple[str, float], z: np.ndarray, flagged: np.ndarray, test: Half
) -> dict[str, Any]:
    tp, fp, fn = counts(flagged, test.labels, DELAY)
    return {
        "kpi": kpi,
        "detector": params[0],
        "z_threshold": round(params[1], 3),
        "test_points": len(z),
        "delay_f1": round(f1(tp, fp, fn), 4),
        "counts": [tp, fp, fn],
        "best_f1": round(sweep(z, test.labels, None, extra=(params[1],))[0], 4),
        "best_delay_f1_oracle": round(sweep(z, test.labels, DELAY, extra=(params[1],))[0], 4),
        "event_f1": round(sweep(z, test.labels, None, event=True, extra=(params[1],))[0], 4),
        "auprc": round(auprc(z, test.labels), 4),
        "alerts_per_1000_normal": round(alerts_per_1000(flagged, test.labels), 3),
        "normal_points": int(np.sum(~test.labels)),
    }


async def run(
    gateway: str,
    chosen_kpis: list[tuple[str, int]],
    chosen: dict[str, Any],
    headers: dict[str, str],
) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    rows, equal = [], {}
    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        for kpi, step_s in chosen_kpis:
            started = time.perf_counter()
            params = choices(kpi, chosen)
            train, test = read_half(kpi, "train"), read_half(kpi, "test")
            series, before = test_series(train, test)
            z, flagged, first_offline = await offline(client, gateway, series, before, params)
            offline_s = time.perf_counter() - started
            name = f"kpi.{kpi[:8]}.{int(time.time())}"
            first_online = await online(client, gateway, name, series, step_s, params)
            equal[kpi] = same_scores(first_offline, first_online)
            row = measure(kpi, params, z, flagged, test)
            row["offline_points_per_s"] = round(len(z) / offline_s)
            rows.append(row)
            print(
                f"  {kpi[:8]} {params[0]:>17} delay-F1 {row['delay_f1']:.3f} "
                f"alerts/1000 {row['alerts_per_1000_normal']:.2f} "
                f"offline {row['offline_points_per_s']}/s online==offline {equal[kpi]}"
            )
    return rows, equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kpis", type=int, default=29, help="the N smallest KPIs (29: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-anomaly-kpi.json")
    args = parser.parse_args()
    chosen = json.loads(CHOICES.read_text())
    chosen_kpis = kpis()[: args.kpis]
    started = time.perf_counter()
    with local_system(["anomaly", "gateway"]) as system:
        try:
            rows, equal = asyncio.run(
                run(system.url("gateway"), chosen_kpis, chosen, system.api_headers)
            )
        except Exception:
            print(system.log_tails(15))
            raise
    tp, fp, fn = (sum(r["counts"][i] for r in rows) for i in range(3))
    report = {
        "overall_delay_f1": round(f1(tp, fp, fn), 4),
        "overall_counts": [tp, fp, fn],
        "scheme": chosen["scheme"],
        "machine": describe(),
        "data": "AIOps Challenge 2018 KPIs (../shared/datasets/aiops-kpi/), test halves",
        "kpis": len(rows),
        "method": __doc__,
        "online_equals_offline": equal,
        "mean": {
            key: round(float(np.mean([r[key] for r in rows])), 4)
            for key in ("delay_f1", "best_f1", "event_f1", "auprc", "alerts_per_1000_normal")
        },
        "alerts_per_1000_normal_pooled": round(
            sum(r["alerts_per_1000_normal"] * r["normal_points"] for r in rows)
            / max(1, sum(r["normal_points"] for r in rows)),
            3,
        ),
        "baselines_in_process": chosen["in_process_test_delay_f1"],
        "published": PUBLISHED,
        "per_kpi": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"overall delay-F1 (k = {DELAY}) {report['overall_delay_f1']}; wrote {args.out}")


if __name__ == "__main__":
    main()
