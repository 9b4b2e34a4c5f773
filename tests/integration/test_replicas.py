"""Instances of one app share its app id: calls spread over them, one can die or be scaled
away or replaced under load, and no caller sees a failure.

A system of its own (gateway, nlp with two instances, sentiment), with a short drain grace.
Load is a bounded closed loop through the gateway at concurrency 16.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from consort.dev.instances import ScaleFile
from consort.dev.scaling import Scaling
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from tests.conftest import _systems
from tests.integration.helpers import eventually
from tests.integration.load import Load, consort_cli, served

APPS = ["gateway", "nlp", "sentiment"]
CONCURRENCY = 16
#: A load never runs longer than this, whatever happens.
LOAD_LIMIT_S = 180


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("replicas"),
        InfraPorts.free(),
        tracing=False,
        scale_file=ScaleFile(replicas={"nlp": 2}, drain_grace_s=10),
    )
    _systems.append(local)
    scaling = Scaling(local, APPS)
    scaling.install(local.control)  # the system's control channel, served from start-up
    try:
        local.start(APPS, deadline_s=150)
        local.supervisor.supervise()  # restart what crashes, as `consort run` does
        yield local
    finally:
        local.stop()
        scaling.close()
        _systems.remove(local)


def nlp_load(system: LocalSystem) -> Load:
    text = "The battery of the Pixel died in London after two days."
    return Load(f"{system.url('gateway')}/v1/text/nlp", {"text": text}, system.api_headers)


def test_invocations_spread_over_both_instances(replicas: LocalSystem) -> None:
    before = served(replicas, "nlp")
    with nlp_load(replicas) as load:
        load.wait_for(400)
    after = served(replicas, "nlp")
    spread = {name: after[name] - before[name] for name in after}
    assert load.failures == []
    assert set(spread) == {"nlp", "nlp-1"}
    total = sum(spread.values())
    # Random picks of 400+: each instance's share is 50% +- 7.5% (3 sigma).
    assert all(0.35 < n / total < 0.65 for n in spread.values()), spread


def test_killing_one_of_two_instances_fails_no_request(replicas: LocalSystem) -> None:
    with nlp_load(replicas) as load:
        load.wait_for(100)
        replicas.kill_instance("nlp-1")  # SIGKILL, app and sidecar, mid-load
        load.wait_for(300)
        # The supervisor restarts it; callers reach it again only once it is ready.
        eventually(
            lambda: [p.state for p in replicas.supervisor.group("nlp-1")],
            lambda states: states == ["ready", "ready"],
            deadline_s=120,
        )
        eventually(lambda: len(replicas.registry.addresses("nlp")), lambda n: n == 2, 30)
        before = served(replicas, "nlp")["nlp-1"]
        load.wait_for(200)
    assert load.failures == [], load.failures[:5]
    assert served(replicas, "nlp")["nlp-1"] > before  # and takes its share again
    assert [p.restarts for p in replicas.supervisor.group("nlp-1")] == [1, 1]


def test_scale_up_and_down_under_load_fails_no_request(replicas: LocalSystem) -> None:
    replicas.scale("nlp", 1)
    assert [i.name for i in replicas.instances["nlp"]] == ["nlp"]
    with nlp_load(replicas) as load:
        load.wait_for(100)
        up = consort_cli(replicas, "scale", "nlp=2")
        assert up.returncode == 0, up.stderr
        assert len(replicas.instances["nlp"]) == 2
        load.wait_for(200)
        # The new instance takes its share of the calls.
        new = next(i for i in replicas.instances["nlp"] if i.index > 0)
        eventually(lambda: served(replicas, "nlp")[new.name], lambda n: n > 20, 30)
        down = consort_cli(replicas, "scale", "nlp=1")
        assert down.returncode == 0, down.stderr
        load.wait_for(200)
    assert load.failures == [], load.failures[:5]
    assert [i.name for i in replicas.instances["nlp"]] == ["nlp"]
    assert replicas.registry.addresses("nlp") == [replicas.instances["nlp"][0].address]


def sentiment_versions(system: LocalSystem) -> str | None:
    """The version the sentiment service reports when called through Dapr, as the
    gateway's catalog calls it (whichever instance name resolution picked)."""
    try:
        response = httpx.get(
            f"{system.sidecar_url('gateway')}/v1.0/invoke/sentiment/method/info",
            headers=system.sidecar_headers("gateway"),
            timeout=15,
        )
        return str(response.json()["version"]) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def test_rollout_under_load_fails_no_request_and_both_versions_serve(
    replicas: LocalSystem,
) -> None:
    old_version = sentiment_versions(replicas)
    assert old_version
    seen: Counter[str | None] = Counter()
    rolled = threading.Event()

    def watch_versions() -> None:
        while not rolled.is_set():
            seen[sentiment_versions(replicas)] += 1

    text = "Consort rolls out without dropping a request."
    with Load(
        f"{replicas.url('gateway')}/v1/text/sentiment", {"text": text}, replicas.api_headers
    ) as load:
        load.wait_for(100)
        watcher = threading.Thread(target=watch_versions, daemon=True)
        watcher.start()
        try:
            names = replicas.rollout("sentiment", env={"CONSORT_SERVICE_VERSION": "9.9.9-rolled"})
        finally:
            rolled.set()
            watcher.join(30)
        load.wait_for(100)
    assert load.failures == [], load.failures[:5]
    assert names == ["sentiment"]  # instance 0 is back on the run file's ports
    assert seen[old_version] > 0 and seen["9.9.9-rolled"] > 0, seen
    assert sentiment_versions(replicas) == "9.9.9-rolled"
    info = httpx.get(
        f"{replicas.url('sentiment')}/info", headers=replicas.app_headers("sentiment"), timeout=5
    ).json()
    assert info["version"] == "9.9.9-rolled"
