"""The search service (Rust) under the launcher's replicas, `consort status`, the catalog,
`consort rollout` and the supervisor, unchanged: what they do for the Python apps they do
for it.

A system of its own (gateway, search with two instances; real sidecars, Redis, placement,
scheduler, sentry), with a short drain grace, the supervisor on and the launcher's control
channel served, as `consort run` serves it. Load is a bounded closed loop of queries
through the gateway.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consort.contracts.search import EMBEDDING_MODEL
from consort.dev.instances import ScaleFile
from consort.dev.scaling import Scaling
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from tests.conftest import _systems
from tests.integration.helpers import eventually
from tests.integration.load import Load, consort_cli, served

APPS = ["gateway", "search"]
#: Each query is one forward pass of the model: four at a time keep two cores busy.
CONCURRENCY = 4
#: A load never runs longer than this, whatever happens.
LOAD_LIMIT_S = 240
COLLECTION = f"replicas-{uuid.uuid4().hex[:8]}"
DOCUMENTS = {
    "battery": "The battery died after two days.",
    "screen": "The screen cracked when I dropped it.",
    "delivery": "The parcel arrived a week late.",
    "refund": "I want my money back.",
    "charger": "The charger stopped working.",
    "sound": "The speakers crackle at high volume.",
}
QUERY = {"text": "my battery does not last", "k": 3}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("search-replicas"),
        InfraPorts.free(),
        tracing=False,
        scale_file=ScaleFile(replicas={"search": 2}, drain_grace_s=5),
    )
    _systems.append(local)
    scaling = Scaling(local, APPS)
    scaling.install(local.control)  # the system's control channel, served from start-up
    try:
        local.start(APPS, deadline_s=150)
        local.supervisor.supervise()  # restart what crashes, as `consort run` does
        local.write_endpoints(APPS)  # what `consort status` reads, as `consort run` writes
        yield local
    finally:
        local.stop()
        scaling.close()
        _systems.remove(local)


@pytest.fixture(scope="module")
def indexed(system: LocalSystem) -> str:
    """The test collection, indexed once through the gateway (so through one instance)."""
    response = httpx.post(
        f"{system.url('gateway')}/v1/search/collections/{COLLECTION}/documents",
        json={"documents": [{"id": k, "text": v} for k, v in DOCUMENTS.items()]},
        headers=system.api_headers,
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert response.json()["count"] == len(DOCUMENTS)
    return COLLECTION


def _first_id(response: httpx.Response) -> str | None:
    try:
        matches = response.json()["matches"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(matches[0]["id"]) if matches else None


def query_load(system: LocalSystem, collection: str) -> Load:
    url = f"{system.url('gateway')}/v1/search/collections/{collection}/query"
    return Load(
        url,
        QUERY,
        system.api_headers,
        concurrency=CONCURRENCY,
        limit_s=LOAD_LIMIT_S,
        accept=lambda r: r.status_code == 200 and _first_id(r) == "battery",
        wait_s=90,
    )


def instance_query(system: LocalSystem, url: str, collection: str) -> list[str]:
    """The ids one instance answers the query with, asked directly (as its sidecar would)."""
    response = httpx.post(
        f"{url}/v1/collections/{collection}/query",
        json=QUERY,
        headers=system.app_headers("search"),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["matches"]]


def search_version(system: LocalSystem) -> str | None:
    """The version search reports when called through Dapr, as the gateway's catalog
    calls it (whichever instance name resolution picked)."""
    try:
        response = httpx.get(
            f"{system.sidecar_url('gateway')}/v1.0/invoke/search/method/info",
            headers=system.sidecar_headers("gateway"),
            timeout=15,
        )
        return str(response.json()["version"]) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def catalog_entry(system: LocalSystem) -> dict[str, Any]:
    catalog = httpx.get(
        f"{system.url('gateway')}/v1/catalog", headers=system.api_headers, timeout=30
    ).json()
    return next(s for s in catalog["services"] if s["app_id"] == "search")


def test_both_instances_serve_one_index(system: LocalSystem, indexed: str) -> None:
    assert [i.name for i in system.instances["search"]] == ["search", "search-1"]
    # Indexed through one of them: each answers from the same documents (the state store).
    for instance in system.instances["search"]:
        assert instance_query(system, instance.url, indexed)[0] == "battery", instance.name
    before = served(system, "search")
    with query_load(system, indexed) as load:
        load.wait_for(200)
    after = served(system, "search")
    assert load.failures == [], load.failures[:5]
    spread = {name: after[name] - before[name] for name in after}
    total = sum(spread.values())
    # Random picks of 200+: each instance's share is 50% +- 11% (3 sigma).
    assert all(0.3 < n / total < 0.7 for n in spread.values()), spread


def test_a_write_through_one_instance_is_seen_by_the_other(
    system: LocalSystem, indexed: str
) -> None:
    first, second = system.instances["search"]
    response = httpx.post(
        f"{first.url}/v1/collections/{indexed}/documents",
        json={"documents": [{"id": "battery-2", "text": "My battery does not last a day."}]},
        headers=system.app_headers("search"),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert instance_query(system, second.url, indexed)[0] == "battery-2"
    deleted = httpx.delete(
        f"{second.url}/v1/collections/{indexed}/documents/battery-2",
        headers=system.app_headers("search"),
        timeout=30,
    )
    assert deleted.status_code == 204, deleted.text
    assert "battery-2" not in instance_query(system, first.url, indexed)


def test_consort_status_and_the_catalog_show_search(system: LocalSystem) -> None:
    status = consort_cli(system, "status", "--once")
    assert status.returncode == 0, status.stderr
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in status.stdout.splitlines()
        if line.count("│") > 3
    ]
    # The services table: both instances, each ready, with its version and model.
    services = {row[0]: row for row in cells if EMBEDDING_MODEL.name in " ".join(row)}
    assert set(services) == {"search", "search-1"}, status.stdout
    for row in services.values():
        assert row[1] == "ready" and row[2] != "-", row
    # The processes table: each instance's app and sidecar, ready, in its own group.
    processes = {
        row[0]: row
        for row in cells
        if row[0].startswith("search") and EMBEDDING_MODEL.name not in " ".join(row)
    }
    for name, group in [
        ("search", "search"),
        ("search-daprd", "search"),
        ("search-1", "search-1"),
        ("search-1-daprd", "search-1"),
    ]:
        assert processes[name][1:3] == [group, "ready"], status.stdout
    entry = catalog_entry(system)
    assert entry["status"] == "available", entry
    assert [m["name"] for m in entry["info"]["models"]] == [EMBEDDING_MODEL.name]


def test_rollout_under_load_fails_no_query_and_both_versions_serve(
    system: LocalSystem, indexed: str
) -> None:
    old_version = search_version(system)
    assert old_version
    seen: Counter[str | None] = Counter()
    rolled = threading.Event()

    def watch_versions() -> None:
        while not rolled.is_set():
            seen[search_version(system)] += 1

    with query_load(system, indexed) as load:
        load.wait_for(50)
        watcher = threading.Thread(target=watch_versions, daemon=True)
        watcher.start()
        try:
            rollout = consort_cli(
                system, "rollout", "search", "--env", "CONSORT_SERVICE_VERSION=9.9.9-rolled"
            )
        finally:
            rolled.set()
            watcher.join(30)
        load.wait_for(50)
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr
    assert load.failures == [], load.failures[:5]
    assert seen[old_version] > 0 and seen["9.9.9-rolled"] > 0, seen
    # Instance 0 is back on the run file's ports; every instance is the new version, and
    # answers from the index the old ones wrote.
    assert [i.name for i in system.instances["search"]][0] == "search"
    assert len(system.instances["search"]) == 2
    for instance in system.instances["search"]:
        info = httpx.get(
            f"{instance.url}/info", headers=system.app_headers("search"), timeout=5
        ).json()
        assert info["version"] == "9.9.9-rolled", instance.name
        assert instance_query(system, instance.url, indexed)[0] == "battery", instance.name
    assert catalog_entry(system)["info"]["version"] == "9.9.9-rolled"


def test_killing_one_instance_under_load_fails_no_query(system: LocalSystem, indexed: str) -> None:
    victim = system.instances["search"][1].name
    with query_load(system, indexed) as load:
        load.wait_for(50)
        system.kill_instance(victim)  # SIGKILL, app and sidecar, mid-load
        load.wait_for(100)
        # The supervisor restarts it; callers reach it again only once it is ready.
        eventually(
            lambda: [p.state for p in system.supervisor.group(victim)],
            lambda states: states == ["ready", "ready"],
            deadline_s=120,
        )
        eventually(lambda: len(system.registry.addresses("search")), lambda n: n == 2, 30)
        before = served(system, "search")[victim]
        load.wait_for(100)
    assert load.failures == [], load.failures[:5]
    assert served(system, "search")[victim] > before  # and takes its share again
    assert [p.restarts for p in system.supervisor.group(victim)] == [1, 1]
