"""The language services under load, in one run:

1. nlp micro-batching: texts/s and p50/p99 at concurrency 1 and 16, straight to the nlp
   app: batches of up to 16 waiting up to 5 ms, batches of up to 16 formed only from the
   backlog (no waiting, the default), and one text per model call (the baseline).
   Also spaCy in this process, one text at a time and `nlp.pipe` in batches of 16.
2. `POST /v1/text/analyze` (gateway -> nlp and sentiment in parallel) against
   `/v1/text/sentiment` and `/v1/text/nlp` (each one call through the gateway): its
   latency should be near the slower call's, not their sum.

Results: bench/results/language.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from apps.nlp.analyzer import NlpAnalyzer
from apps.nlp.settings import NlpSettings
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"
SUBJECTS = ["The battery", "The screen", "Shipping", "The price", "Customer service", "The camera"]
VERDICTS = [
    "is awful and died after two days",
    "is gorgeous, bright and sharp",
    "was slow but the box arrived intact",
    "is fair for what you get from Apple",
    "answered within an hour and fixed it",
    "takes blurry photos in low light",
]


def texts(n: int = 60) -> list[str]:
    """Review-like texts of two or three clauses, varied so no two are equal."""
    pairs = itertools.product(SUBJECTS, VERDICTS)
    out = []
    for i, (subject, verdict) in zip(range(n), itertools.cycle(pairs), strict=False):
        again = "would" if i % 2 else "would not"
        out.append(
            f"{subject} {verdict}. I bought it in London in {2015 + i % 10} "
            f"and {again} buy it again."
        )
    return out


def poster(
    client: httpx.AsyncClient, url: str, bodies: list[dict[str, Any]]
) -> Callable[[], Awaitable[bool]]:
    cycle = itertools.cycle(bodies)

    async def call() -> bool:
        try:
            response = await client.post(url, json=next(cycle))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    return call


def report(name: str, figures: Figures) -> None:
    print(
        f"{name:>28} c={figures.concurrency:<2} p50 {figures.p50_ms:8.2f} ms  "
        f"p99 {figures.p99_ms:8.2f} ms  {figures.throughput_rps:8.1f} /s  errors {figures.errors}"
    )


async def measure_nlp(system: LocalSystem, requests: int) -> dict[str, Figures]:
    bodies = [{"text": t} for t in texts()]
    out = {}
    # Straight to the app, with the token its sidecar would send.
    async with httpx.AsyncClient(timeout=60, headers=system.app_headers("nlp")) as client:
        call = poster(client, f"{system.url('nlp')}/v1/nlp", bodies)
        for concurrency in (1, 16):
            figures = await closed_loop(call, requests=requests, concurrency=concurrency, warmup=20)
            out[f"c{concurrency}"] = figures
    return out


async def measure_analyze(system: LocalSystem, requests: int) -> dict[str, dict[str, Figures]]:
    bodies = [{"text": t} for t in texts()]
    gateway = system.url("gateway")
    out: dict[str, dict[str, Figures]] = {}
    async with httpx.AsyncClient(headers=system.api_headers, timeout=60) as client:
        routes = {
            "/v1/text/sentiment": poster(client, f"{gateway}/v1/text/sentiment", bodies),
            "/v1/text/nlp": poster(client, f"{gateway}/v1/text/nlp", bodies),
            "/v1/text/analyze": poster(client, f"{gateway}/v1/text/analyze", bodies),
        }
        for concurrency in (1, 16):
            for name, call in routes.items():
                figures = await closed_loop(
                    call, requests=requests, concurrency=concurrency, warmup=20
                )
                out.setdefault(name, {})[f"c{concurrency}"] = figures
                report(name, figures)
    return out


async def in_process(requests: int) -> dict[str, Figures]:
    settings = NlpSettings()
    analyzer = NlpAnalyzer(settings.pipeline)
    pool = itertools.cycle(texts())

    async def one() -> bool:
        analyzer.analyze(next(pool))
        return True

    single = await closed_loop(one, requests=requests, concurrency=1, warmup=20)
    batch_texts = [next(pool) for _ in range(16)]

    async def sixteen() -> bool:
        analyzer.analyze_many(batch_texts, False)
        return True

    batched = await closed_loop(sixteen, requests=max(requests // 16, 10), concurrency=1, warmup=2)
    per_text = {
        "texts_per_s_one_at_a_time": single.throughput_rps,
        "texts_per_s_pipe_16": round(batched.throughput_rps * 16, 1),
    }
    print(f"{'in-process spaCy':>28} {per_text}")
    return {"one": single, "pipe16": batched, **per_text}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS / "language.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    results["in_process"] = {
        k: v.as_dict() if isinstance(v, Figures) else v
        for k, v in asyncio.run(in_process(args.requests)).items()
    }
    batching: dict[str, dict[str, Any]] = {}
    for mode, env in (
        ("batched, wait 5 ms", {"NLP_BATCH_MAX_SIZE": "16", "NLP_BATCH_MAX_WAIT_MS": "5"}),
        ("batched backlog, no wait", {"NLP_BATCH_MAX_SIZE": "16", "NLP_BATCH_MAX_WAIT_MS": "0"}),
        ("one at a time", {"NLP_BATCH_MAX_SIZE": "1"}),
    ):
        with local_system(["nlp"], env=env) as system:
            figures = asyncio.run(measure_nlp(system, args.requests))
        for level, f in figures.items():
            report(f"nlp {mode}", f)
            batching.setdefault(mode, {})[level] = f.as_dict()
    results["nlp_micro_batching"] = batching
    with local_system(["sentiment", "nlp", "gateway"]) as system:
        analyze = asyncio.run(measure_analyze(system, args.requests))
    results["text_analyze"] = {
        k: {lv: f.as_dict() for lv, f in v.items()} for k, v in analyze.items()
    }
    summary: dict[str, Any] = {}
    for level in ("c1", "c16"):
        off = batching["one at a time"][level]
        s, n, a = (
            analyze[k][level] for k in ("/v1/text/sentiment", "/v1/text/nlp", "/v1/text/analyze")
        )
        summary[level] = {
            **{
                f"{mode} / one at a time": {
                    "throughput_ratio": round(
                        batching[mode][level]["throughput_rps"] / off["throughput_rps"], 3
                    ),
                    "p50_ratio": round(batching[mode][level]["p50_ms"] / off["p50_ms"], 3),
                }
                for mode in ("batched, wait 5 ms", "batched backlog, no wait")
            },
            "analyze_p50_ms": a.p50_ms,
            "slower_call_p50_ms": max(s.p50_ms, n.p50_ms),
            "sum_of_calls_p50_ms": round(s.p50_ms + n.p50_ms, 3),
            "analyze_to_slower_call_ratio": round(a.p50_ms / max(s.p50_ms, n.p50_ms), 3),
        }
    report_doc = {
        "benchmark": "language",
        "description": __doc__,
        "machine": describe(),
        "results": results,
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
