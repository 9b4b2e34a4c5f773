"""Memory and start-up CPU of every app and sidecar, for the Kubernetes resource requests.

Starts the whole system (as `make run` does, on free ports), waits until every app is
ready (models loaded), lets it idle, then reads from /proc for each app's process group
(an app and any worker processes it forked) and each daprd: resident memory now (VmRSS),
its peak so far (VmHWM, which covers the model load), and the CPU seconds spent since
start. consort.yaml's `kubernetes:` requests and limits are sized from these figures
(docs/kubernetes.md). Results: bench/results/footprint.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.local import local_system
from bench.machine import describe
from bench.replicas import cpu_seconds
from consort.dev.system import RunFile

RESULTS = Path(__file__).parent / "results"
IDLE_S = 10.0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def group_pids(pgid: int) -> list[int]:
    """The live processes of one process group (an app and the workers it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5: pgrp
            pids.append(int(entry.name))
    return pids


def footprint(pid: int) -> dict[str, Any]:
    pids = group_pids(pid) or [pid]
    return {
        "processes": len(pids),
        "rss_mib": round(sum(_status_kib(p, "VmRSS") for p in pids) / 1024, 1),
        "peak_rss_mib": round(sum(_status_kib(p, "VmHWM") for p in pids) / 1024, 1),
        "cpu_s_since_start": round(sum(cpu_seconds(p) for p in pids), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--apps",
        help="comma-separated app ids to measure alone (with their sidecars); their figures "
        "replace theirs in footprint.json, the others' stay, and `partial` says when",
    )
    args = parser.parse_args(argv)
    every = [spec.app_id for spec in RunFile.load().apps]
    apps = args.apps.split(",") if args.apps else every
    started = time.monotonic()
    with local_system(apps) as system:
        ready_s = time.monotonic() - started
        time.sleep(IDLE_S)
        figures = {
            p.name: footprint(p.pid)
            for p in system.supervisor
            if p.alive() and p.pid is not None and (p.name in apps or p.name.endswith("-daprd"))
        }
    result: dict[str, Any] = {
        "machine": describe(),
        "ready_s": round(ready_s, 1),
        "idle_s": IDLE_S,
        "processes": figures,
    }
    path = RESULTS / "footprint.json"
    if args.apps and path.exists():
        whole = json.loads(path.read_text())
        whole["processes"].update(figures)
        whole.setdefault("partial", []).append(
            {"apps": apps, "machine": result["machine"], "ready_s": result["ready_s"]}
        )
        result = whole
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "footprint.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
