"""Start-up: how long the whole system takes to be ready, and the CPU it spends until then.

Each run starts every app of `dapr.yaml` with its sidecar, the profile's servers,
placement, scheduler, sentry and Zipkin, as `make run` does (tracing and security on), in a
fresh run folder on free ports, and stops it once ready. Beside the wall time to ready,
the user + system CPU seconds the kernel charged to every process of the system by then
(read from /proc, per process group: an app with its fit workers), largest first. On two
cores, the CPU spent is the floor under the time: a run that spends 30 CPU seconds cannot
be ready in less than 15 s. Results: bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.cost import cpu_by_process
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import RunFile

RESULTS = Path(__file__).parent / "results"


def one_run() -> dict[str, Any]:
    apps = [a.app_id for a in RunFile.load().apps]
    load = os.getloadavg()[0]
    started = time.monotonic()
    with local_system(apps, tracing=True) as system:
        ready_s = time.monotonic() - started
        spent = cpu_by_process(system)
    return {
        "ready_s": round(ready_s, 1),
        "cpu_s": round(sum(spent.values()), 1),
        "load_average_1m_before": round(load, 2),
        "cpu_s_by_process": {
            name: round(cpu, 2) for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1])
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        run = one_run()
        runs.append(run)
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(run["cpu_s_by_process"].items())[:5])
        print(f"run {i + 1}: ready in {run['ready_s']} s, {run['cpu_s']} CPU s ({top})", flush=True)
    report = {
        "benchmark": "startup",
        "description": __doc__,
        "machine": describe(),
        "runs": runs,
        "median_ready_s": statistics.median(r["ready_s"] for r in runs),
        "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "goal_ready_s": 20,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
