"""A peer, side by side: `/v1/text/analyze` on Consort, as a monolith and on Ray Serve, in one run.

The same text pipeline three ways, each answering the same JSON (`TextAnalysis`):

    consort    client -> gateway -> its daprd -> nlp's daprd -> nlp (spaCy, micro-batched)
                                            \\-> sentiment's daprd -> sentiment (VADER)
               in parallel, joined in the gateway with `aspect_sentiments` (tracing on, as
               the other benches run it; Zipkin's CPU is counted and shown apart); the
               gateway coalesces concurrent requests' calls into batch calls
    consort_sampled_0.01   the same, tracing a production-like 1 % of requests (the
               peers trace nothing)
    monolith   both models in one FastAPI process (bench/peers/monolith.py), served by
               `consort serve` (the uvicorn settings of every app): the floor
    ray_serve  Ray Serve 2.60.0 (bench/peers/ray_serve_app.py, in bench/.venv-ray): an
               ingress deployment composing an nlp and a sentiment deployment through
               DeploymentHandles, one replica each, on a single-node cluster on loopback

Each system runs alone (the others stopped), the same closed-loop load generator
(`bench.load.http_loop`, the Go client in bench/loadgen, whose own CPU is not the
system's) sends it the same texts in the same order at concurrency 1 and
16, and /proc gives the CPU seconds of every process of the system: Consort's process
groups (apps, sidecars, Redis, placement, scheduler, sentry, Zipkin), the monolith's
process, every process of the Ray session (gcs_server, raylet, agents, the Serve
controller, proxy and replicas). The texts are real ones: the Amazon review, movie review
and tweet snippets of Hutto and Gilbert (2014), from vaderSentiment 3.3.2's source
distribution (runtime/eval-data.sh). No text is sent twice to one system, so Consort's
sentiment cache (Redis, by text hash) never hits, and neither peer has a cache; one extra
level repeats Consort's c=16 texts to show what the cache is worth. Before the load, 20
texts are sent to every system and the answers compared.

Results: bench/results/peer.json. Set up first with bench/peers/setup.sh (make bench does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.eval_sentiment import acceptable, data_dir, load_set
from bench.load import http_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.processes import free_port, port_open
from consort.dev.system import LocalSystem

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RAY_VENV = REPO / "bench" / ".venv-ray"
ROUTE = "/v1/text/analyze"
SETS = [
    "amazonReviewSnippets_GroundTruth.txt",
    "movieReviewSnippets_GroundTruth.txt",
    "tweets_GroundTruth.txt",
]
LEVELS = (1, 16)
COMPARED = 20
# Consort once more at a production-like trace sampling rate (the peers trace nothing).
SAMPLING = "0.01"
SAMPLED = f"consort_sampled_{SAMPLING}"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def texts() -> list[str]:
    """Every distinct acceptable text of the three sets, shuffled the same way every run."""
    found: dict[str, None] = {}
    for name in SETS:
        path = data_dir() / name
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `bash runtime/eval-data.sh` first")
        for _, _, text in load_set(path):
            if acceptable(text) is None:
                found.setdefault(text.strip())
    pool = list(found)
    random.Random(0).shuffle(pool)
    return pool


# -- CPU from /proc ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcStat:
    pid: int
    pgrp: int
    session: int
    cpu_s: float
    nice: int
    name: str


def processes() -> list[ProcStat]:
    """Every live process: its group, session, user+system CPU seconds and a short name."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        comm = raw.split("(", 1)[1].rsplit(")", 1)[0]
        out.append(
            ProcStat(
                pid=int(stat.parent.name),
                pgrp=int(fields[2]),
                session=int(fields[3]),
                cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK,
                nice=int(fields[16]),
                name=_short_name(comm, [c.decode(errors="replace") for c in cmdline if c]),
            )
        )
    return out


def _short_name(comm: str, argv: list[str]) -> str:
    if argv and argv[0].startswith("ray::"):
        return argv[0].split()[0].split(".")[0]  # ray::ServeReplica:text:Nlp
    for arg in argv:
        if arg.endswith(".py"):
            return Path(arg).stem  # log_monitor, monitor, dashboard
        if arg.startswith("ray.") or arg.startswith("bench."):
            return arg  # -m ray.util.client.server
    return Path(argv[0]).name if argv else comm


@dataclass
class System:
    """A running system under test: where to call it and how to read its CPU split."""

    name: str
    url: str
    headers: dict[str, str]
    cpu: Callable[[], dict[str, float]]  # CPU seconds so far, by process (or group) name
    startup_s: float
    members: Callable[[], list[ProcStat]]  # its live processes


def nice_values(system: System) -> dict[str, int]:
    """The nice value of each of the system's processes, by name."""
    return {p.name: p.nice for p in sorted(system.members(), key=lambda p: p.name)}


def consort_groups(system: LocalSystem) -> dict[int, str]:
    return {p.popen.pid: p.name for p in system.supervisor.procs if p.popen}


def consort_cpu(system: LocalSystem) -> Callable[[], dict[str, float]]:
    groups = consort_groups(system)

    def read() -> dict[str, float]:
        split: dict[str, float] = {}
        for proc in processes():
            if proc.pgrp in groups:
                key = groups[proc.pgrp]
                split[key] = split.get(key, 0.0) + proc.cpu_s
        return split

    return read


def consort_members(system: LocalSystem) -> Callable[[], list[ProcStat]]:
    groups = consort_groups(system)

    def read() -> list[ProcStat]:
        return [
            ProcStat(p.pid, p.pgrp, p.session, p.cpu_s, p.nice, groups[p.pgrp])
            for p in processes()
            if p.pgrp in groups
        ]

    return read


def session_members(session: int) -> Callable[[], list[ProcStat]]:
    return lambda: [p for p in processes() if p.session == session]


def session_cpu(session: int) -> Callable[[], dict[str, float]]:
    def read() -> dict[str, float]:
        split: dict[str, float] = {}
        for proc in processes():
            if proc.session == session:
                split[proc.name] = split.get(proc.name, 0.0) + proc.cpu_s
        return split

    return read


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process spent between two readings (new processes count from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# -- the systems -------------------------------------------------------------------------------
def wait_http(url: str, deadline_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process serving {url} exited")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy within {deadline_s} s")


def stop_session(lead: subprocess.Popen[bytes], grace_s: float) -> None:
    """TERM the session's leader, wait up to `grace_s` for the session to empty, then KILL
    what is left of it, process by process (all of it was started here)."""
    session = lead.pid
    if lead.poll() is None:
        lead.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(p.session == session for p in processes()):
            break
        time.sleep(0.5)
    for proc in processes():
        if proc.session == session:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    lead.wait(timeout=10)


@contextmanager
def consort(sampling: str = "1") -> Iterator[System]:
    """Consort as `make run` starts it, every request traced (`sampling` 1, the development
    default) or a production-like share of them (`CONSORT_TRACE_SAMPLING`)."""
    started = time.monotonic()
    os.environ["CONSORT_TRACE_SAMPLING"] = sampling
    try:
        with local_system(["gateway", "nlp", "sentiment"], tracing=True) as system:
            yield System(
                "consort" if sampling == "1" else f"consort_sampled_{sampling}",
                system.url("gateway"),
                system.api_headers,
                consort_cpu(system),
                time.monotonic() - started,
                consort_members(system),
            )
    finally:
        os.environ.pop("CONSORT_TRACE_SAMPLING", None)


@contextmanager
def monolith(logs: Path) -> Iterator[System]:
    port = free_port()
    started = time.monotonic()
    with (logs / "monolith.log").open("wb") as log:
        lead = subprocess.Popen(
            [str(REPO / ".venv/bin/python"), "-m", "consort", "serve", "bench.peers.monolith:app"],
            cwd=REPO,
            env={**os.environ, "APP_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/healthz", 120, lambda: lead.poll() is None)
            yield System(
                "monolith",
                url,
                {},
                session_cpu(lead.pid),
                time.monotonic() - started,
                session_members(lead.pid),
            )
        finally:
            stop_session(lead, 25)


def ray_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),  # the domain modules, for the driver and every worker
        "RAY_USAGE_STATS_ENABLED": "0",
        # A single-node cluster on loopback: without this Ray advertises (and its processes
        # call each other on) the machine's network address instead of 127.0.0.1.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def worker_ports(count: int = 32) -> tuple[int, int]:
    """A run of `count` consecutive ports free now, for Ray's workers."""
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(20000, 30000)
        if not any(port_open(p) for p in range(low, low + count)):
            return low, low + count - 1
    raise RuntimeError("no run of free ports for Ray's workers")


@contextmanager
def ray_serve(logs: Path) -> Iterator[System]:
    if not (RAY_VENV / "bin" / "ray").exists():
        raise SystemExit("bench/.venv-ray is missing: run `bash bench/peers/setup.sh` first")
    gcs, http = free_port(), free_port()
    low, high = worker_ports()
    ports = {
        "--port": gcs,
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--min-worker-port": low,
        "--max-worker-port": high,
    }
    temp = Path(tempfile.mkdtemp(prefix="peer-ray-"))  # short: Ray's socket paths live in it
    argv = [
        str(RAY_VENV / "bin" / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--object-store-memory=100000000",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    started = time.monotonic()
    with (logs / "ray.log").open("wb") as log:
        lead = subprocess.Popen(
            argv, cwd=REPO, env=ray_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not port_open(gcs) or not port_open(ports["--node-manager-port"]):
                if lead.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start failed: see {logs / 'ray.log'}")
                time.sleep(0.2)
            subprocess.run(
                [
                    str(RAY_VENV / "bin" / "python"),
                    "-m",
                    "bench.peers.ray_serve_app",
                    f"--address=127.0.0.1:{gcs}",
                    f"--http-port={http}",
                ],
                cwd=REPO,
                env=ray_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=300,
            )
            url = f"http://127.0.0.1:{http}"
            yield System(
                "ray_serve",
                url,
                {},
                session_cpu(lead.pid),
                time.monotonic() - started,
                session_members(lead.pid),
            )
        finally:
            stop_session(lead, 45)  # Ray drains for up to 30 s on SIGTERM
            shutil.rmtree(temp, ignore_errors=True)


# -- the load ----------------------------------------------------------------------------------
def answers(system: System, sample: list[str]) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(timeout=60, headers=system.headers) as client:
        for text in sample:
            response = client.post(f"{system.url}{ROUTE}", json={"text": text})
            response.raise_for_status()
            body = response.json()
            body["sentiment"].pop("cached", None)  # Consort's cache flag, false here anyway
            out.append(body)
    return out


async def measure(
    system: System, chunks: dict[str, list[str]], requests: int, warmup: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cores = os.cpu_count() or 1
    for level, chunk in chunks.items():
        concurrency = int(level.split("_")[0].removeprefix("c"))
        targets = [{"url": f"{system.url}{ROUTE}", "json": {"text": t}} for t in chunk]
        # The warm-up takes the first texts of the chunk, the run the ones after them.
        if warmup:
            await http_loop(
                targets[:warmup],
                method="POST",
                headers=system.headers,
                requests=warmup,
                concurrency=concurrency,
            )
        load_before = os.getloadavg()[0]
        before = system.cpu()
        run = await http_loop(
            targets[warmup:],
            method="POST",
            headers=system.headers,
            requests=requests,
            concurrency=concurrency,
        )
        split = spent(before, system.cpu())
        total = sum(split.values())
        entry = run.as_dict() | {
            "cpu_ms_per_request": round(1000 * total / requests, 3),
            "cpu_bound_rps_on_the_cores": round(cores * requests / total, 1),
            "cpu_ms_per_request_by_process": {
                k: round(1000 * v / requests, 3)
                for k, v in sorted(split.items(), key=lambda kv: -kv[1])
                if v > 0
            },
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        }
        out[level] = entry
        print(
            f"{system.name:>10} {level:<10} p50 {run.p50_ms:8.2f} ms  p99 {run.p99_ms:8.2f} ms"
            f"  {run.throughput_rps:7.1f} req/s  cpu {entry['cpu_ms_per_request']:6.2f} "
            f"ms/req  errors {run.errors}",
            flush=True,
        )
    return out


def ratios(results: dict[str, Any], consort: str = "consort") -> dict[str, Any]:
    c, m, r = (results[s]["levels"] for s in (consort, "monolith", "ray_serve"))
    out: dict[str, Any] = {}
    for level in ("c1", "c16"):
        out[level] = {
            "consort_to_monolith_throughput": round(
                c[level]["throughput_rps"] / m[level]["throughput_rps"], 3
            ),
            "consort_to_ray_throughput": round(
                c[level]["throughput_rps"] / r[level]["throughput_rps"], 3
            ),
            "consort_to_ray_p50": round(c[level]["p50_ms"] / r[level]["p50_ms"], 3),
            "consort_to_ray_p99": round(c[level]["p99_ms"] / r[level]["p99_ms"], 3),
            "consort_to_monolith_cpu": round(
                c[level]["cpu_ms_per_request"] / m[level]["cpu_ms_per_request"], 3
            ),
            "consort_to_ray_cpu": round(
                c[level]["cpu_ms_per_request"] / r[level]["cpu_ms_per_request"], 3
            ),
            "ray_to_monolith_throughput": round(
                r[level]["throughput_rps"] / m[level]["throughput_rps"], 3
            ),
            # What the throughput ratios would be with the cores to themselves: each system
            # then serves (cores / CPU per request) requests a second.
            "consort_to_monolith_throughput_cpu_bound": round(
                m[level]["cpu_ms_per_request"] / c[level]["cpu_ms_per_request"], 3
            ),
            "consort_to_ray_throughput_cpu_bound": round(
                r[level]["cpu_ms_per_request"] / c[level]["cpu_ms_per_request"], 3
            ),
        }
    c16 = out["c16"]
    out["goals"] = {
        "consort_c16_at_least_0.8x_monolith_throughput": c16["consort_to_monolith_throughput"]
        >= 0.8,
        "consort_c16_at_least_1.5x_ray_throughput": c16["consort_to_ray_throughput"] >= 1.5,
        "consort_c16_p99_at_most_0.5x_ray": c16["consort_to_ray_p99"] <= 0.5,
    }
    return out


def models_in_process(pool: list[str]) -> dict[str, float]:
    """CPU ms per text of the models alone, in this process: what any system must spend."""
    from apps.nlp.analyzer import NlpAnalyzer
    from apps.nlp.settings import DEFAULT_PIPELINE
    from apps.sentiment.analyzer import SentimentAnalyzer

    nlp, vader = NlpAnalyzer(DEFAULT_PIPELINE), SentimentAnalyzer()
    sample = pool[:480]
    nlp.analyze_many(sample[:32], False)
    started = time.process_time()
    for i in range(0, len(sample), 16):
        nlp.analyze_many(sample[i : i + 16], False)
    batched = time.process_time() - started
    started = time.process_time()
    for text in sample[:160]:
        nlp.analyze(text)
    single = time.process_time() - started
    started = time.process_time()
    for text in sample:
        vader.analyze(text)
    sentiment = time.process_time() - started
    return {
        "spacy_batches_of_16_cpu_ms_per_text": round(1000 * batched / len(sample), 3),
        "spacy_one_at_a_time_cpu_ms_per_text": round(1000 * single / 160, 3),
        "vader_cpu_ms_per_text": round(1000 * sentiment / len(sample), 3),
    }


def scheduling() -> dict[str, Any]:
    """How the kernel shares the cores out, which decides the wall-time figures under load."""
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = False
    return {
        "sched_autogroup_enabled": autogroup,
        "note": "with autogroup on, each session is one scheduling group: under contention "
        "from other jobs a system gets about one share of the cores per busy session "
        "(`sessions` of each system), and Ray runs its workers at nice 15 "
        "(`nice`). CPU per request does not depend on that; wall-time figures do.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per system and level")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "peer.json")
    args = parser.parse_args()
    pool = texts()
    per_level = args.warmup + args.requests
    if 2 * per_level + COMPARED > len(pool):
        raise SystemExit(f"{len(pool)} distinct texts: too few for {args.requests} a level")
    chunks = {f"c{c}": pool[i * per_level : (i + 1) * per_level] for i, c in enumerate(LEVELS)}
    sample = pool[-COMPARED:]  # never part of the load
    load_start = os.getloadavg()
    models = models_in_process(pool)
    print(f"models in process: {models}", flush=True)
    results: dict[str, Any] = {}
    reference: list[dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="consort-peer-") as tmp:
        logs = Path(tmp)
        starters: list[tuple[str, Callable[[], Any]]] = [
            ("consort", consort),
            (SAMPLED, lambda: consort(SAMPLING)),
            ("monolith", lambda: monolith(logs)),
            ("ray_serve", lambda: ray_serve(logs)),
        ]
        for name, start in starters:
            load_before = os.getloadavg()[0]
            try:
                with start() as system:
                    print(f"{name}: ready in {system.startup_s:.1f} s", flush=True)
                    got = answers(system, sample)
                    reference = reference or got
                    same = sum(a == b for a, b in zip(got, reference, strict=True))
                    levels = dict(chunks)
                    if name == "consort":  # the c=16 texts again: sentiment's cache hits
                        levels["c16_cached"] = chunks["c16"]
                    figures = asyncio.run(measure(system, levels, args.requests, args.warmup))
                    nice = nice_values(system)
                    sessions = len({p.session for p in system.members()})
            except Exception:
                for log in sorted(logs.glob("*.log")):
                    print(f"----- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
                raise
            results[name] = {
                "startup_s": round(system.startup_s, 2),
                "answers_equal_to_consort": f"{same}/{len(sample)}",
                "processes": len(nice),
                "sessions": sessions,
                "nice": nice,
                "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
                "levels": figures,
            }
    report = {
        "benchmark": "peer",
        "description": __doc__,
        "machine": describe(),
        "ray_serve": {
            "version": "2.60.0",
            "deployments": {
                "TextAnalyze": "ingress (FastAPI), 1 replica, num_cpus 0.5, max_ongoing 64",
                "Nlp": "1 replica, num_cpus 1, @serve.batch(16, wait 0), max_ongoing 32",
                "Sentiment": "1 replica, num_cpus 0.5, max_ongoing 32",
            },
            "node": "ray start --head --num-cpus=2, dashboard off, loopback only",
        },
        "texts": {
            "sets": SETS,
            "distinct": len(pool),
            "per_level": per_level,
            "reuse": "none within a system (each level its own texts, warm-up included); "
            "every system gets the same texts in the same order; consort's c16_cached "
            "level repeats its c16 texts, so sentiment answers from its Redis cache",
        },
        "requests_per_level": args.requests,
        "warmup_per_level": args.warmup,
        "load_average_1m": {"start": load_start[0], "end": os.getloadavg()[0]},
        "scheduling": scheduling(),
        "models_in_process": models,
        "results": results,
        "ratios": ratios(results),
        f"ratios_{SAMPLED}": ratios(results, SAMPLED),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("ratios")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s")
