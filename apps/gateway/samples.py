"""The console's load figures over time: samples of every instance's counters, and the
rates, error shares, latency percentiles and topic flows their differences give.

Plain code (no web framework, no sidecar): `apps.gateway.sampler` takes the samples every
few seconds and keeps the last minutes of them; these functions do the arithmetic.
Counters are Prometheus counters: they only grow while their process lives and start
again from zero when it restarts, so a difference is taken as Prometheus' `increase`
does: a value below the one before (or a new process start time) is a reset, and the
new value is what was counted since.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consort.kit.metrics_text import bucket_quantiles

#: What a consumer has finished with: handled, or dropped (to its dead-letter topic).
FINISHED = ("success", "drop")
DEAD_LETTER_SUFFIX = ".dead-letter"


@dataclass(frozen=True)
class InstanceScrape:
    """What one instance's app and sidecar said at one time (None: not read).

    Attributes:
        app_id: the app it is an instance of.
        name: the instance (`nlp`, `nlp-1`; the app id when instances are unknown).
        state: the launcher's state of it (`ready`, `restarting`, …), None when unknown.
        restarts: how many times the launcher restarted it, None when unknown.
        requests, errors: requests served and 5xx answers since its start (probes left out).
        buckets: its latency histogram (cumulative counts by upper bound in seconds).
        cpu_s, memory_bytes, started_at: the app process's CPU time, resident memory and
            start (Unix seconds).
        sidecar_cpu_s, sidecar_memory_bytes, sidecar_started_at: the same of its daprd.
        pubsub: its daprd's pub/sub counters (`consort.kit.metrics_text.pubsub_counts`).
        events: the app's own count of the events it answered (`event_counts`).
    """

    app_id: str
    name: str
    state: str | None = None
    restarts: int | None = None
    requests: float | None = None
    errors: float | None = None
    buckets: dict[float, float] = field(default_factory=dict)
    cpu_s: float | None = None
    memory_bytes: float | None = None
    started_at: float | None = None
    sidecar_cpu_s: float | None = None
    sidecar_memory_bytes: float | None = None
    sidecar_started_at: float | None = None
    pubsub: dict[tuple[str, str, str], float] = field(default_factory=dict)
    events: dict[tuple[str, str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """Every instance's figures at time `t` (Unix seconds)."""

    t: float
    instances: dict[str, InstanceScrape]

    def of(self, app_id: str) -> list[InstanceScrape]:
        return [i for i in self.instances.values() if i.app_id == app_id]


def increase(was: float | None, now: float | None, restarted: bool = False) -> float | None:
    """How much a counter grew from `was` to `now`: what `now` counts when the process
    restarted in between (or the counter went down, the sign of one); None unread."""
    if now is None:
        return None
    if was is None or restarted or now < was:
        return now
    return now - was


def _restarted(was: float | None, now: float | None) -> bool:
    return was is not None and now is not None and abs(now - was) > 0.5


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class Window:
    """One app's figures between two samples, all its instances together.

    `requests_per_s`, `error_rate` (5xx share of the requests), `p50_ms` and `p99_ms` (of
    the requests in the window, from the histogram's bucket differences), CPU as % of one
    core for the apps and for their sidecars; memory is resident, at the window's end.
    """

    seconds: float
    requests_per_s: float | None
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    cpu_percent: float | None
    memory_bytes: float | None
    sidecar_cpu_percent: float | None
    sidecar_memory_bytes: float | None


def _grown(
    was: float | None, now: float | None, restarted: bool, started_at: float | None, since: float
) -> float | None:
    """A counter's increase; without a value before (a new instance, or one not read
    then), what it counted since its start if that was inside the window, else unknown."""
    if was is None:
        return now if started_at is not None and started_at >= since else None
    return increase(was, now, restarted)


def window(older: Sample, newer: Sample, app_id: str) -> Window | None:
    """`app_id`'s figures from `older` to `newer`; None when either has none of it.

    An instance (or a figure of it) that `older` did not read counts from its start when
    it started inside the window (a new or restarted one), and not at all when it started
    before (nothing to take its difference from).
    """
    dt = newer.t - older.t
    current = newer.of(app_id)
    if dt <= 0 or not current or not older.of(app_id):
        return None
    requests: list[float | None] = []
    errors: list[float | None] = []
    cpu: list[float | None] = []
    sidecar_cpu: list[float | None] = []
    buckets: dict[float, float] = {}
    for now in current:
        was = older.instances.get(now.name) or InstanceScrape(app_id, now.name)
        restarted = _restarted(was.started_at, now.started_at)
        since = older.t
        requests.append(_grown(was.requests, now.requests, restarted, now.started_at, since))
        errors.append(_grown(was.errors, now.errors, restarted, now.started_at, since))
        cpu.append(_grown(was.cpu_s, now.cpu_s, restarted, now.started_at, since))
        sidecar_cpu.append(
            _grown(
                was.sidecar_cpu_s,
                now.sidecar_cpu_s,
                _restarted(was.sidecar_started_at, now.sidecar_started_at),
                now.sidecar_started_at,
                since,
            )
        )
        if not was.buckets and not (now.started_at is not None and now.started_at >= since):
            continue  # no histogram to take the difference from
        reset = restarted or now.buckets.get(math.inf, 0) < was.buckets.get(math.inf, 0)
        for bound, count in now.buckets.items():
            grown = increase(was.buckets.get(bound), count, reset) or 0.0
            buckets[bound] = buckets.get(bound, 0.0) + grown
    served, failed = _sum(requests), _sum(errors)
    p50, p99 = bucket_quantiles(buckets)
    app_cpu, daprd_cpu = _sum(cpu), _sum(sidecar_cpu)
    return Window(
        seconds=dt,
        requests_per_s=None if served is None else served / dt,
        error_rate=(failed or 0.0) / served if served else None,
        p50_ms=p50,
        p99_ms=p99,
        cpu_percent=None if app_cpu is None else app_cpu / dt * 100,
        memory_bytes=_sum(i.memory_bytes for i in current),
        sidecar_cpu_percent=None if daprd_cpu is None else daprd_cpu / dt * 100,
        sidecar_memory_bytes=_sum(i.sidecar_memory_bytes for i in current),
    )


def series(samples: Sequence[Sample], app_id: str) -> list[tuple[float, Window]]:
    """`app_id`'s figures between each two successive samples, at the later one's time."""
    found = []
    for older, newer in zip(samples, samples[1:], strict=False):
        w = window(older, newer, app_id)
        if w is not None:
            found.append((newer.t, w))
    return found


def recent(samples: Sequence[Sample], app_id: str, seconds: float) -> Window | None:
    """`app_id`'s figures over the last `seconds` (from the newest sample back to the last
    one at least that old, or the oldest there is)."""
    if len(samples) < 2:
        return None
    newest = samples[-1]
    older = next((s for s in reversed(samples[:-1]) if s.t <= newest.t - seconds), samples[0])
    return window(older, newest, app_id)


class Totals:
    """Counters summed over every instance and its restarts, from the first sample on
    (each process's first value counts what it counted since it started): its daprd's
    pub/sub counters, and its app's own count of the events it answered."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, tuple[str, str, str]], float] = {}
        self._started: dict[str, float | None] = {}
        #: Per app and counter key, the total.
        self.by_app: dict[tuple[str, tuple[str, str, str]], float] = {}

    def add(self, sample: Sample) -> None:
        for inst in sample.instances.values():
            self._add(inst.app_id, f"{inst.name} daprd", inst.sidecar_started_at, inst.pubsub)
            self._add(inst.app_id, f"{inst.name} app", inst.started_at, inst.events)

    def _add(
        self,
        app_id: str,
        process: str,
        started_at: float | None,
        counts: dict[tuple[str, str, str], float],
    ) -> None:
        if started_at is None and not counts:
            return  # not read this time: keep what it said before
        if process in self._started and _restarted(self._started[process], started_at):
            for stale in [k for k in self._last if k[0] == process]:
                del self._last[stale]
        self._started[process] = started_at
        for key, value in counts.items():
            grown = increase(self._last.get((process, key)), value) or 0.0
            self._last[(process, key)] = value
            total = (app_id, key)
            self.by_app[total] = self.by_app.get(total, 0.0) + grown

    def count(
        self, kind: str, topic: str, statuses: Sequence[str], app_id: str | None = None
    ) -> float:
        """The total of `kind` (`published`, `delivered`, `handled`, …) on `topic` in
        `statuses`, of one app or of all."""
        return sum(
            v
            for (app, (k, t, status)), v in self.by_app.items()
            if k == kind and t == topic and status in statuses and app_id in (None, app)
        )

    def has(self, kind: str, topic: str, app_id: str) -> bool:
        return any(app == app_id and k == kind and t == topic for (app, (k, t, _)) in self.by_app)

    def consumers(self, topic: str) -> list[str]:
        """The apps that had `topic` delivered to them."""
        return sorted(
            {
                app
                for (app, (k, t, _)) in self.by_app
                if t == topic and k in ("delivered", "delivered_batches", "handled")
            }
        )


@dataclass(frozen=True)
class Consumption:
    """How far one consumer (an app id, all its instances) is behind on one topic."""

    app_id: str
    delivered: float | None
    retries: float | None
    lag: float | None


@dataclass(frozen=True)
class TopicFlow:
    """One topic's traffic since sampling began: published, consumed, dead letters."""

    published: float
    batches: float
    consumers: list[Consumption]
    dead_letters: float


def _finished(totals: Totals, topic: str, app_id: str) -> tuple[float | None, float | None]:
    """(finished, retried) events of `topic` by `app_id`: as the app counted them, else as
    its daprd counted single deliveries; None when it had bulk deliveries only, which
    daprd counts per call."""
    for kind in ("handled", "delivered"):
        if totals.has(kind, topic, app_id):
            return (
                totals.count(kind, topic, FINISHED, app_id),
                totals.count(kind, topic, ("retry",), app_id),
            )
    if totals.has("delivered_batches", topic, app_id):
        return None, None
    return 0.0, 0.0


def topic_flow(totals: Totals, topic: str, subscribers: Sequence[str]) -> TopicFlow:
    """What was published on `topic`, how far behind each subscriber is (published less
    what it finished, never below zero: a redelivery after a crash is finished twice),
    and how many events went to its dead-letter topic (delivered there to its listener).
    A topic published in batches has no lag: daprd counts the batches, not their events;
    nor has a consumer whose events nobody counts one by one."""
    published = totals.count("published", topic, ("success",))
    batches = totals.count("batches", topic, ("success",))
    consumers = []
    for app_id in sorted({*subscribers, *totals.consumers(topic)}):
        finished, retries = _finished(totals, topic, app_id)
        known = finished is not None and not batches
        consumers.append(
            Consumption(
                app_id=app_id,
                delivered=finished,
                retries=retries,
                lag=max(0.0, published - finished) if known and finished is not None else None,
            )
        )
    dead_topic = topic + DEAD_LETTER_SUFFIX
    dead = max(
        totals.count("handled", dead_topic, FINISHED),
        totals.count("delivered", dead_topic, FINISHED),
    )
    return TopicFlow(published, batches, consumers, dead)
