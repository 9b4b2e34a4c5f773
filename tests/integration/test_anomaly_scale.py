"""5,000 series: each its own actor, and memory stays bounded because idle ones leave it.

A system of its own (the anomaly app, its sidecar, Redis, placement, scheduler), with a
short actor idle timeout so that deactivation shows within the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from consort.dev.observe import counter_total
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from tests.integration.helpers import eventually

SERIES = 5_000
POINTS_PER_SERIES = 9  # fewer than a first fit needs: this measures the actors, not the fits
IDLE_TIMEOUT_S = 10
#: The documented bound (README, "anomaly"): the app's resident memory with 5,000 series
#: touched within one idle timeout.
RSS_BOUND_MIB = 400


@pytest.fixture(scope="module")
def anomaly_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("anomaly-scale"),
        InfraPorts.free(),
        tracing=False,
        extra_env={
            "ANOMALY_ACTOR_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
            "ANOMALY_ACTOR_SCAN_INTERVAL_S": "2",
            "ANOMALY_REFIT_INTERVAL_S": "3600",
        },
    )
    try:
        # The gateway publishes metrics.observed (the topic's publisher: pubsub.yaml's scopes).
        local.start(["anomaly", "gateway"])
        yield local
    finally:
        local.stop()


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


def points_taken(system: LocalSystem) -> int:
    text = httpx.get(f"{system.url('anomaly')}/metrics", timeout=5).text
    return int(counter_total(text, "consort_anomaly_points"))


def active_actors(system: LocalSystem) -> int:
    metadata = httpx.get(
        f"{system.sidecar_url('anomaly')}/v1.0/metadata",
        headers=system.sidecar_headers("anomaly"),
        timeout=5,
    ).json()
    return sum(a.get("count", 0) for a in metadata["actorRuntime"].get("activeActors", []))


def test_five_thousand_series_stay_within_the_memory_bound(anomaly_system: LocalSystem) -> None:
    system = anomaly_system
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sidecar = system.sidecar_url("gateway")
    with httpx.Client(timeout=30, headers=system.sidecar_headers("gateway")) as client:
        for first in range(0, SERIES, 500):
            entries = [
                {
                    "entryId": str(n),
                    "contentType": "application/json",
                    "event": {
                        "series": f"host-{n:04d}.cpu",
                        "points": [
                            {
                                "timestamp": (start + timedelta(minutes=i)).isoformat(),
                                "value": 50 + (n + i) % 7,
                            }
                            for i in range(POINTS_PER_SERIES)
                        ],
                    },
                }
                for n in range(first, first + 500)
            ]
            published = client.post(
                f"{sidecar}/v1.0-alpha1/publish/bulk/pubsub/metrics.observed", json=entries
            )
            assert published.status_code == 204, published.text  # every entry published

    eventually(
        lambda: points_taken(system), lambda n: n == SERIES * POINTS_PER_SERIES, deadline_s=240
    )
    pid = system.supervisor.get("anomaly").pid
    assert pid is not None
    peak = rss_mib(pid)

    assert active_actors(system) > 0
    assert peak < RSS_BOUND_MIB, f"{peak:.0f} MiB with {SERIES} series"

    # Idle series leave memory; their state stays in the store.
    eventually(lambda: active_actors(system), lambda n: n == 0, deadline_s=IDLE_TIMEOUT_S + 30)
    assert rss_mib(pid) < RSS_BOUND_MIB
    for n in (0, 2_499, 4_999):
        snapshot = httpx.get(
            f"{system.url('anomaly')}/v1/metrics/host-{n:04d}.cpu",
            headers=system.app_headers("anomaly"),
            timeout=10,
        )
        assert snapshot.status_code == 200
        assert snapshot.json()["observed"] == POINTS_PER_SERIES
