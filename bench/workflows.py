"""Durable workflows/s and completion time: review_triage on a positive review (nlp and
sentiment in parallel, no case, no decision), started through the gateway (gateway ->
daprd -> daprd -> orchestrator -> workflow engine), at 10 and 50 workflows in flight.

Closed loop, as Dapr's own workflow tests count "VUs": each of N virtual users starts a
workflow, waits until it completes (the engine's completion wait, on the orchestrator's
sidecar: no polling), and starts the next. Completion time is measured by the client, from
sending the start to hearing of the completion; the engine's own (created -> last update)
is recorded beside it. Results: bench/results/workflows.json, next to Dapr's published
v1.17 figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from dapr.ext.workflow import WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient

from bench.load import percentile
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
REVIEW = "Lovely kettle, boils fast and looks great. Very happy!"
#: Dapr's published figures for v1.17 (dapr/dapr tests/perf/report/charts/v1.17.0/workflows):
#: "Constant VU throughput (30 VUs, averaged across 3 runs)".
DAPR_V117 = {
    "source": "https://github.com/dapr/dapr/tree/master/tests/perf/report/charts/v1.17.0/workflows",
    "test": "TestWorkflowWithConstantVUs",
    "virtual_users": 30,
    "workflows": 300,
    "throughput_wfs": 28,
    "p50_s": 1.04,
    "p95_s": 1.18,
    "setup": "Kubernetes, workflow app with its sidecar at 0.5-1 CPU; a chain of five "
    "activities per workflow (as the issue cites it)",
}


@dataclass
class Run:
    """One closed-loop run at a given concurrency."""

    concurrency: int
    workflows: int
    errors: int
    throughput_wfs: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_s: float
    engine_p50_s: float
    engine_p95_s: float


async def closed_loop(
    gateway: httpx.AsyncClient, engine: DaprWorkflowClient, *, concurrency: int, workflows: int
) -> Run:
    remaining = workflows
    latencies: list[float] = []
    engine_times: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            reply = await gateway.post(
                "/v1/workflows/review-triage",
                json={"review_id": f"b-{uuid.uuid4().hex[:16]}", "text": REVIEW},
            )
        except httpx.HTTPError as exc:
            print(f"start failed: {exc!r}")
            errors += 1
            return
        if reply.status_code != 202:
            print(f"start answered {reply.status_code}: {reply.text[:200]}")
            errors += 1
            return
        state = await engine.wait_for_workflow_completion(
            reply.json()["id"], fetch_payloads=False, timeout_in_seconds=120
        )
        if state is None or state.runtime_status != WorkflowStatus.COMPLETED:
            errors += 1
            return
        latencies.append(time.perf_counter() - started)
        engine_times.append((state.last_updated_at - state.created_at).total_seconds())

    async def user() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    engine_times.sort()
    return Run(
        concurrency=concurrency,
        workflows=len(latencies),
        errors=errors,
        throughput_wfs=round(len(latencies) / elapsed, 2),
        p50_s=round(percentile(latencies, 0.50), 3),
        p95_s=round(percentile(latencies, 0.95), 3),
        p99_s=round(percentile(latencies, 0.99), 3),
        mean_s=round(statistics.fmean(latencies), 3),
        engine_p50_s=round(percentile(engine_times, 0.50), 3),
        engine_p95_s=round(percentile(engine_times, 0.95), 3),
    )


async def run(system: LocalSystem, rounds: int) -> list[Run]:
    port = str(system.run_file.app("orchestrator").dapr_grpc_port)
    engine = DaprWorkflowClient(host="127.0.0.1", port=port)
    # Idle connections are dropped before uvicorn's own 5 s keep-alive ends: a connection
    # reused as the server closes it fails the request (seen once at c=50).
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=2.0)
    async with httpx.AsyncClient(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60, limits=limits
    ) as gateway:
        await closed_loop(gateway, engine, concurrency=5, workflows=20)  # warm-up
        results = []
        for concurrency in (10, 50):
            found = await closed_loop(
                gateway, engine, concurrency=concurrency, workflows=concurrency * rounds
            )
            results.append(found)
            print(
                f"c={concurrency:>3} {found.workflows} workflows ({found.errors} errors): "
                f"{found.throughput_wfs:6.2f} wf/s  p50 {found.p50_s:.3f} s  "
                f"p95 {found.p95_s:.3f} s  (engine p50 {found.engine_p50_s:.3f} s)"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=10, help="workflows per virtual user (default 10)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "workflows.json")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = os.getloadavg()
    with local_system(["sentiment", "nlp", "orchestrator", "gateway"]) as system:
        results = asyncio.run(run(system, args.rounds))
    report: dict[str, Any] = {
        "benchmark": "workflows",
        "description": __doc__,
        "machine": describe(),
        # The machine is shared: its load before the run says how much of it others used.
        "load_average_before": [round(x, 2) for x in load_before],
        "workflow": "review_triage, positive review: nlp_analyze and sentiment_score in "
        "parallel (each a service invocation of a real model), then done",
        "results": {f"c{r.concurrency}": asdict(r) for r in results},
        "dapr_published": DAPR_V117,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
