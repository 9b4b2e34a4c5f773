"""Infrastructure profiles: one setting picks the folder of components the sidecars load,
and the servers started follow from it; no app names a backend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from consort.dev.profiles import UnknownProfile, available, component_types, servers
from consort.dev.runtime import REPO
from consort.dev.system import RunFile

COMPONENTS = REPO / "components"


def test_the_profiles_are_the_folders_of_components() -> None:
    assert {"redis", "postgres-rabbitmq"} <= set(available(COMPONENTS))


def test_the_default_profile_is_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSORT_PROFILE", raising=False)
    run_file = RunFile.load()
    assert run_file.profile == "redis"
    assert run_file.sidecar.resources_paths == [COMPONENTS, COMPONENTS / "redis"]
    assert servers(run_file.sidecar.resources_paths) == ["redis"]


def test_one_variable_selects_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSORT_PROFILE", "postgres-rabbitmq")
    run_file = RunFile.load()
    paths = run_file.sidecar.resources_paths
    assert paths == [COMPONENTS, COMPONENTS / "postgres-rabbitmq"]
    assert servers(paths) == ["postgres", "rabbitmq"]
    assert component_types(paths) == {
        "consort-secrets": "secretstores.local.file",
        "pubsub": "pubsub.rabbitmq",
        "statestore": "state.postgresql",
    }


def test_an_unknown_profile_names_those_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSORT_PROFILE", "mongo-kafka")
    with pytest.raises(UnknownProfile, match="postgres-rabbitmq"):
        RunFile.load()


@pytest.mark.parametrize("profile", available(COMPONENTS))
def test_every_profile_has_the_same_logical_components(profile: str) -> None:
    """Same names, same scopes, the actor store flag: apps cannot tell profiles apart."""
    docs = {
        d["metadata"]["name"]: d
        for f in sorted((COMPONENTS / profile).glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    }
    redis = {
        d["metadata"]["name"]: d
        for f in sorted((COMPONENTS / "redis").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    }
    assert docs.keys() == redis.keys() == {"statestore", "pubsub"}
    for name, doc in docs.items():
        assert doc["scopes"] == redis[name]["scopes"]
        assert doc["auth"] == {"secretStore": "consort-secrets"}
        for item in doc["spec"]["metadata"]:  # no password inline
            if "password" in item["name"].lower():
                assert "secretKeyRef" in item and "value" not in item, item
    flags = {m["name"]: m.get("value") for m in docs["statestore"]["spec"]["metadata"]}
    assert flags["actorStateStore"] == "true"


BACKEND = re.compile(r"redis|postgres|rabbitmq|kafka", re.IGNORECASE)


def _code(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_no_app_names_a_backend() -> None:
    """apps/, actors/, workflows/ and the service kit refer to `statestore` and `pubsub`
    only; what Redis did that others do not is documented in docs/profiles.md, and where
    the code adapts to it, it says so without depending on it."""
    named = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for folder in ("apps", "actors", "workflows")
        for path in _code(REPO / folder)
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if BACKEND.search(line)
    ]
    assert named == [], "\n".join(named)
