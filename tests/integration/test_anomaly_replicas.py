"""Two anomaly instances: placement spreads the series' actors over both, and when one is
killed its series move to the other and keep scoring in order, with no point lost.

A system of its own (two anomaly instances, Redis, placement, scheduler). Points arrive as
`metrics.observed` events, which both instances consume from one consumer group; a round
of events (one point per series) is published once the previous round is in.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consort.dev.instances import ScaleFile
from consort.dev.observe import counter_total
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from tests.conftest import _systems
from tests.integration.helpers import eventually

SERIES = [f"replica-host-{n:02d}.cpu" for n in range(24)]
START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def anomalies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("anomaly-replicas"),
        InfraPorts.free(),
        tracing=False,
        scale_file=ScaleFile(replicas={"anomaly": 2}, drain_grace_s=10),
        extra_env={"ANOMALY_REFIT_INTERVAL_S": "3600"},
    )
    _systems.append(local)
    try:
        # The gateway publishes metrics.observed (the topic's publisher: pubsub.yaml's scopes).
        local.start(["anomaly", "gateway"], deadline_s=150)
        yield local
    finally:
        local.stop()
        _systems.remove(local)


def publish_round(system: LocalSystem, round_: int) -> None:
    """One point for every series, at minute `round_`, as one bulk publish."""
    at = (START + timedelta(minutes=round_)).isoformat()
    entries = [
        {
            "entryId": str(n),
            "contentType": "application/json",
            "event": {"series": s, "points": [{"timestamp": at, "value": 50 + (n + round_) % 5}]},
        }
        for n, s in enumerate(SERIES)
    ]
    published = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0-alpha1/publish/bulk/pubsub/metrics.observed",
        json=entries,
        headers=system.sidecar_headers("gateway"),
        timeout=30,
    )
    assert published.status_code == 204, published.text


def observed(system: LocalSystem) -> list[int]:
    """Points each series' actor holds, asked through instance 0 wherever the actor lives."""
    counts = []
    with httpx.Client(timeout=30, headers=system.app_headers("anomaly")) as client:
        for series in SERIES:
            response = client.get(f"{system.url('anomaly')}/v1/metrics/{series}")
            counts.append(response.json()["observed"] if response.status_code == 200 else 0)
    return counts


def wait_round(system: LocalSystem, round_: int, deadline_s: float = 30) -> None:
    eventually(lambda: observed(system), lambda c: c == [round_ + 1] * len(SERIES), deadline_s)


def active_actors(system: LocalSystem, sidecar_url: str) -> int:
    metadata = httpx.get(
        f"{sidecar_url}/v1.0/metadata", headers=system.sidecar_headers("anomaly"), timeout=5
    ).json()
    return sum(a.get("count", 0) for a in metadata["actorRuntime"].get("activeActors", []))


def counter_total_of(text: str, status: str) -> float:
    """The `consort_anomaly_points` counter for one verdict."""
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "consort_anomaly_points"
        for s in f.samples
        if s.name.endswith("_total") and s.labels.get("status") == status
    )


def test_series_move_off_a_killed_instance_and_lose_no_point(anomalies: LocalSystem) -> None:
    system = anomalies
    first, second = system.instances["anomaly"]
    for round_ in range(3):
        publish_round(system, round_)
        wait_round(system, round_)
    # Placement spread the series over both instances.
    on_first = active_actors(system, first.sidecar_url)
    on_second = active_actors(system, second.sidecar_url)
    assert on_first > 0 and on_second > 0, (on_first, on_second)
    assert on_first + on_second == len(SERIES)

    publish_round(system, 3)
    system.kill_instance(second.name)  # SIGKILL mid-round: some of its events are in hand
    # Its unfinished events are handed out again (processingTimeout) to the survivor,
    # where placement has moved its series.
    wait_round(system, 3, deadline_s=90)
    for round_ in range(4, 7):
        publish_round(system, round_)
        wait_round(system, round_)

    assert active_actors(system, first.sidecar_url) == len(SERIES)
    # In order: the survivor rejected no point as late.
    metrics = httpx.get(f"{first.url}/metrics", timeout=5).text
    assert counter_total(metrics, "consort_anomaly_points") > 0
    assert counter_total_of(metrics, "late") == 0
    window = httpx.get(
        f"{system.url('anomaly')}/v1/metrics/{SERIES[0]}",
        headers=system.app_headers("anomaly"),
        timeout=10,
    ).json()
    stamps = [p["timestamp"] for p in window["points"]]
    assert stamps == sorted(stamps) and len(stamps) == 7
