"""The gateway's rolling samples of the system's load, for the web console.

While the console polls `/v1/ops/overview`, a task takes a sample every few seconds:
every instance's Prometheus metrics, its app's and its sidecar's. The samples of the last
minutes are kept in memory (a bounded ring); the rates, percentiles and topic flows are
their differences (`apps.gateway.samples`). Nobody polling for a while: the task stops,
so an unwatched system pays nothing for it.

Where the instances are: the launcher that runs them (`consort run`, the test harness)
answers `GET /instances` on its control channel, named in `<CONSORT_RUN_DIR>/control.json`;
each instance's app and daprd serve their metrics on loopback, as to any Prometheus
scraper. Without a launcher (a cluster), each app's metrics are read through Dapr (one
instance, whichever Dapr picks) and the sidecars' are not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from apps.gateway.samples import InstanceScrape, Sample, Totals
from consort.kit.dapr import Sidecar, TargetUnavailable
from consort.kit.metrics_text import (
    PROBE_ROUTES,
    event_counts,
    latency_buckets,
    process_figures,
    pubsub_counts,
    request_counts,
)

log = logging.getLogger("gateway.sampler")

Instances = dict[str, list[dict[str, Any]]]


def app_scrape(
    app_id: str,
    name: str,
    text: str | None,
    sidecar_text: str | None,
    meta: dict[str, Any] | None = None,
) -> InstanceScrape:
    """One instance's figures from its app's and its sidecar's Prometheus text."""
    meta = meta or {}
    fields: dict[str, Any] = {}
    if text is not None:
        process = process_figures(text)
        requests, errors = request_counts(text)
        fields.update(
            requests=requests,
            errors=errors,
            buckets=latency_buckets(text, PROBE_ROUTES),
            cpu_s=process.get("process_cpu_seconds_total"),
            memory_bytes=process.get("process_resident_memory_bytes"),
            started_at=process.get("process_start_time_seconds"),
            events=event_counts(text),
        )
    if sidecar_text is not None:
        process = process_figures(sidecar_text)
        fields.update(
            sidecar_cpu_s=process.get("process_cpu_seconds_total"),
            sidecar_memory_bytes=process.get("process_resident_memory_bytes"),
            sidecar_started_at=process.get("process_start_time_seconds"),
            pubsub=pubsub_counts(sidecar_text),
        )
    return InstanceScrape(
        app_id=app_id, name=name, state=meta.get("state"), restarts=meta.get("restarts"), **fields
    )


def launcher_url(run_dir: str | None) -> str | None:
    """The control channel of the launcher running this gateway, if one does."""
    if not run_dir:
        return None
    try:
        return str(json.loads((Path(run_dir) / "control.json").read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None


class Sampler:
    """Samples every `interval_s` while wanted, keeps `window_s` of them.

    Args:
        take: takes one sample (the instances' scrapes at a time).
        interval_s: time between samples.
        window_s: how long samples are kept.
        idle_s: stop sampling when nobody asked for `idle_s`.
    """

    def __init__(
        self,
        take: Callable[[], Awaitable[tuple[Sample, str | None]]],
        interval_s: float = 5.0,
        window_s: float = 600.0,
        idle_s: float = 120.0,
    ) -> None:
        self._take = take
        self.interval_s = interval_s
        self.window_s = window_s
        self.idle_s = idle_s
        self.samples: deque[Sample] = deque(maxlen=math.ceil(window_s / interval_s) + 1)
        self.totals = Totals()
        #: Who named the instances in the last sample (`launcher`, or None).
        self.instances_from: str | None = None
        self._wanted_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def want(self) -> Sequence[Sample]:
        """The samples kept, sampling from now on for `idle_s` more (a first one now)."""
        self._wanted_at = time.monotonic()
        if not self.samples:
            await self.sample()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="overview-sampler")
        return list(self.samples)

    async def sample(self) -> None:
        """Take one sample now and keep it (dropping what is older than the window)."""
        async with self._lock:
            sample, source = await self._take()
            self.instances_from = source
            self.samples.append(sample)
            self.totals.add(sample)
            while self.samples and self.samples[0].t < sample.t - self.window_s:
                self.samples.popleft()

    async def _run(self) -> None:
        while time.monotonic() - self._wanted_at < self.idle_s:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sample()
            except Exception:  # the next one may do: a sample is never worth the task
                log.exception("overview sample failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _text(client: httpx.AsyncClient, url: str | None) -> str | None:
    if not url:
        return None
    try:
        reply = await client.get(url)
    except httpx.HTTPError:
        return None
    return reply.text if reply.status_code == 200 else None


async def scrape_launched(instances: Instances, timeout_s: float) -> dict[str, InstanceScrape]:
    """Every instance the launcher runs, read directly (app and sidecar metrics)."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        rows = [(app_id, row) for app_id, found in instances.items() for row in found]
        texts = await asyncio.gather(
            *(
                asyncio.gather(
                    _text(client, row.get("metrics_url")),
                    _text(client, row.get("sidecar_metrics_url")),
                )
                for _, row in rows
            )
        )
    scrapes = await asyncio.to_thread(
        lambda: [
            app_scrape(app_id, row["name"], app_text, sidecar_text, row)
            for (app_id, row), (app_text, sidecar_text) in zip(rows, texts, strict=True)
        ]
    )
    return {s.name: s for s in scrapes}


async def scrape_through_dapr(
    sc: Sidecar, apps: Sequence[str], timeout_s: float
) -> dict[str, InstanceScrape]:
    """Each app's metrics through Dapr (one instance each, the sidecars unread)."""

    async def one(app_id: str) -> str | None:
        try:
            reply = await sc.invoke(app_id, "metrics", http_method="GET", timeout_s=timeout_s)
        except TargetUnavailable:
            return None
        return reply.text if reply.status == 200 else None

    texts = await asyncio.gather(*(one(a) for a in apps))
    return {a: app_scrape(a, a, text, None) for a, text in zip(apps, texts, strict=True)}


async def fetch_instances(run_dir: str | None, timeout_s: float) -> Instances | None:
    """The launcher's instances per app, or None when no launcher answers."""
    url = launcher_url(run_dir)
    if url is None:
        return None
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            reply = await client.get(f"{url}/instances")
        reply.raise_for_status()
        apps: Instances = reply.json()["apps"]
        return apps
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def taker(
    sc: Sidecar, apps: Sequence[str], run_dir: str | None, timeout_s: float
) -> Callable[[], Awaitable[tuple[Sample, str | None]]]:
    """A sample of the apps of the catalog: from the launcher's instances when it answers,
    through Dapr otherwise."""

    async def take() -> tuple[Sample, str | None]:
        launched = await fetch_instances(run_dir, timeout_s)
        at = time.time()
        if launched is not None:
            known = {a: launched.get(a, []) for a in apps}
            return Sample(at, await scrape_launched(known, timeout_s)), "launcher"
        return Sample(at, await scrape_through_dapr(sc, apps, timeout_s)), None

    return take
