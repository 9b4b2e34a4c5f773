"""Recovery time after a SIGKILL, per kind of process: an app, a sidecar, Redis, placement.

A small system (gateway, sentiment, nlp, anomaly; no Zipkin) runs with its supervisor
restarting what exits (first restart after 1 s of backoff). For each kind, a route that
needs the process is called back to back through the gateway; the process is SIGKILLed,
and we time, from the kill:

- `restart_s`: until the supervisor started it again (the backoff, plus noticing the exit);
- `ready_s`: until its readiness probe passed (sidecar /v1.0/healthz, app /readyz, Redis
  port, placement /healthz);
- `route_ok_s`: until the route answered 2xx again (a request that started after the kill).

| kind | process killed | route timed |
|---|---|---|
| app | sentiment (its sidecar is restarted with it) | POST /v1/text/sentiment |
| sidecar | nlp-daprd (its app is restarted with it) | POST /v1/text/nlp |
| redis | redis (append-only file, fsync every second) | POST /v1/reviews (state + pub/sub) |
| placement | placement (actor placement tables) | POST /v1/metrics/{series}/points (actors) |

Each kind is killed `--rounds` times. The backoff doubles for a process that fails again
before it stayed up a while (60 s by default); so that every round times a first crash, the
bench forgets failures after 8 s up and waits that long between rounds. Results:
bench/results/recovery.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.local import local_system
from bench.machine import describe
from consort.dev.faults import Call, RouteLoad, crash, restarted
from consort.dev.processes import READY, Backoff, wait_until
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
RUN = uuid.uuid4().hex[:8]
_n = itertools.count()
START = datetime(2026, 1, 1, tzinfo=UTC)


def _sentiment(client: httpx.Client) -> int:
    return client.post("/v1/text/sentiment", json={"text": f"fine {next(_n)}"}).status_code


def _nlp(client: httpx.Client) -> int:
    return client.post("/v1/text/nlp", json={"text": f"Ada in London {next(_n)}."}).status_code


def _review(client: httpx.Client) -> int:
    review = {"id": f"bench-{RUN}-{next(_n)}", "text": "Works as promised."}
    return client.post("/v1/reviews", json={"reviews": [review]}).status_code


def _points(client: httpx.Client) -> int:
    n = next(_n)
    point = {"timestamp": (START + timedelta(minutes=n)).isoformat(), "value": 50 + n % 5}
    return client.post(f"/v1/metrics/bench.{RUN}/points", json={"points": [point]}).status_code


KINDS: dict[str, tuple[str, str, Call]] = {
    "app": ("sentiment", "POST /v1/text/sentiment", _sentiment),
    "sidecar": ("nlp-daprd", "POST /v1/text/nlp", _nlp),
    "redis": ("redis", "POST /v1/reviews", _review),
    "placement": ("placement", "POST /v1/metrics/{series}/points", _points),
}


def one_round(system: LocalSystem, process: str, call: Call) -> dict[str, float]:
    """Kill `process` once under load on its route; the times from the kill (s)."""
    proc = system.supervisor.get(process)
    settled = system.supervisor.backoff.reset_after_s + 0.5

    def up_s() -> float:
        return time.monotonic() - (proc.started_at or time.monotonic())

    wait_until(f"{process} up {settled} s", lambda: proc.state == READY and up_s() > settled, 60)
    load = RouteLoad(
        process, system.url("gateway"), call, timeout_s=30, headers=system.api_headers
    ).start()
    try:
        load.wait_ok(time.monotonic(), 60)
        old_pid, killed_at = crash(system.supervisor, process)
        started_at, ready_at = restarted(system.supervisor, process, old_pid, 60)
        ok_at = load.wait_ok(killed_at, 60)
        refused = sum(not o.ok for o in load.since(killed_at))
    finally:
        load.stop()
    assert system.supervisor.get(process).state == READY
    return {
        "restart_s": round(started_at - killed_at, 3),
        "ready_s": round(ready_at - killed_at, 3),
        "route_ok_s": round(ok_at - killed_at, 3),
        "requests_refused": refused,
    }


def summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    ok = [r["route_ok_s"] for r in rounds]
    return {
        "route_ok_median_s": round(statistics.median(ok), 3),
        "route_ok_max_s": round(max(ok), 3),
        "route_ok_after_ready_median_s": round(
            statistics.median(r["route_ok_s"] - r["ready_s"] for r in rounds), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "recovery.json")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    with local_system(["sentiment", "nlp", "anomaly", "gateway"]) as system:
        backoff = system.supervisor.backoff = Backoff(reset_after_s=8.0)
        system.supervisor.supervise()
        for kind, (process, route, call) in KINDS.items():
            rounds = [one_round(system, process, call) for _ in range(args.rounds)]
            results[kind] = {"process": process, "route": route, "rounds": rounds}
            results[kind].update(summary(rounds))
            print(f"{kind}: {results[kind]}")  # noqa: T201
    report = {
        "benchmark": "recovery",
        "description": __doc__,
        "machine": describe(),
        "backoff": {
            "first_s": backoff.base_s,
            "cap_s": backoff.cap_s,
            "reset_after_s": backoff.reset_after_s,
        },
        # The machine is shared: its load says how much of the time is waiting for a CPU.
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "results": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
