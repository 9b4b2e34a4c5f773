"""nlp at one and two replicas, through the gateway at concurrency 16:

- requests/s and latency of `POST /v1/text/nlp` (gateway -> its sidecar -> an nlp
  instance's sidecar -> that nlp instance);
- CPU seconds per request, from /proc, of every process of the system (gateway, nlp
  instances, their sidecars) and of the nlp instances alone;
- the spread of invocations over the instances, as each instance's own request counter
  saw it: the SQLite name resolver picks a live row at random for every call;
- how long `scale nlp=2` (until the new instance serves) and `scale nlp=1` (its drain) take.

A second replica only adds throughput when there is a core for it: the machine's cores and
load average are recorded beside the figures. Results: bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.language import poster, report, texts
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.observe import request_counts
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = 16
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time of one process so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def cpu_by_process(system: LocalSystem) -> dict[str, float]:
    return {p.name: cpu_seconds(p.pid) for p in system.supervisor if p.alive()}


def served(system: LocalSystem) -> dict[str, float]:
    """Requests each nlp instance has served, from its own /metrics."""
    return {
        i.name: request_counts(httpx.get(f"{i.url}/metrics", timeout=5).text)[0]
        for i in system.instances["nlp"]
    }


def spread(counts: dict[str, float]) -> dict[str, Any]:
    """Each instance's share, and how far the largest is from an even split in standard
    deviations of a fair random pick (binomial)."""
    total = sum(counts.values())
    n = len(counts)
    even = total / n
    sigma = math.sqrt(total * (1 / n) * (1 - 1 / n)) if n > 1 else 0.0
    worst = max(abs(c - even) for c in counts.values())
    return {
        "calls": counts,
        "shares": {k: round(c / total, 4) for k, c in counts.items()},
        "largest_deviation_calls": round(worst, 1),
        "binomial_sigma_calls": round(sigma, 1),
        "largest_deviation_sigmas": round(worst / sigma, 2) if sigma else 0.0,
    }


async def measure(system: LocalSystem, requests: int) -> Figures:
    bodies = [{"text": t} for t in texts()]
    async with httpx.AsyncClient(headers=system.api_headers, timeout=60) as client:
        call = poster(client, f"{system.url('gateway')}/v1/text/nlp", bodies)
        return await closed_loop(call, requests=requests, concurrency=CONCURRENCY, warmup=50)


def run_level(system: LocalSystem, requests: int) -> dict[str, Any]:
    """One measured run at the system's current number of nlp instances."""
    cpu_before, calls_before = cpu_by_process(system), served(system)
    load_before = os.getloadavg()[0]
    figures = asyncio.run(measure(system, requests))
    cpu_after, calls_after = cpu_by_process(system), served(system)
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    nlp_cpu = sum(v for k, v in used.items() if k == "nlp" or k.startswith("nlp-"))
    done = figures.requests + 50  # the warm-up went through the same processes
    calls = {k: calls_after[k] - calls_before.get(k, 0.0) for k in calls_after}
    report(f"nlp x{len(calls)} via gateway", figures)
    return {
        "replicas": len(calls),
        "figures": figures.as_dict(),
        "cpu_s_per_request_all_processes": round(sum(used.values()) / done, 5),
        "cpu_s_per_request_nlp_instances": round(nlp_cpu / done, 5),
        "cpu_s_by_process": {k: round(v, 2) for k, v in sorted(used.items())},
        "spread": spread(calls),
        "load_average_1m_before": round(load_before, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--out", type=Path, default=RESULTS / "replicas.json")
    args = parser.parse_args()
    levels = []
    with local_system(["gateway", "nlp"]) as system:
        levels.append(run_level(system, args.requests))
        started = time.monotonic()
        system.scale("nlp", 2)
        scale_up_s = time.monotonic() - started
        levels.append(run_level(system, args.requests))
        started = time.monotonic()
        system.scale("nlp", 1)
        scale_down_s = time.monotonic() - started
    one, two = levels
    summary = {
        "throughput_rps": {
            "1": one["figures"]["throughput_rps"],
            "2": two["figures"]["throughput_rps"],
        },
        "throughput_ratio_2_to_1": round(
            two["figures"]["throughput_rps"] / one["figures"]["throughput_rps"], 3
        ),
        "p50_ms": {"1": one["figures"]["p50_ms"], "2": two["figures"]["p50_ms"]},
        "cpu_s_per_request": {
            "1": one["cpu_s_per_request_all_processes"],
            "2": two["cpu_s_per_request_all_processes"],
        },
        "spread_at_2": two["spread"]["shares"],
        "spread_largest_deviation_sigmas": two["spread"]["largest_deviation_sigmas"],
        "errors": one["figures"]["errors"] + two["figures"]["errors"],
        # Start, model load, readiness and admission of the new instance; then its drain.
        "scale_1_to_2_s": round(scale_up_s, 2),
        "scale_2_to_1_s": round(scale_down_s, 2),
    }
    report_doc = {
        "benchmark": "replicas",
        "description": __doc__,
        "machine": {**describe(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "results": levels,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report_doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s")
