"""Replicas per app (`consort.yaml`), instance names and ports, and the name-resolution rows
the launcher withdraws, admits and removes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from consort.dev.instances import Instance, NameRegistry, ScaleFile, instance_name, parse_scale
from consort.dev.runtime import REPO
from consort.dev.system import RunFile


def test_the_repositorys_scale_file_names_every_app_of_the_run_file() -> None:
    scale = ScaleFile.load(REPO / "consort.yaml")
    assert set(scale.replicas) == {a.app_id for a in RunFile.load().apps}
    assert scale.drain_grace_s > 0


def test_a_missing_scale_file_means_one_instance_each(tmp_path: Path) -> None:
    scale = ScaleFile.load(tmp_path / "consort.yaml")
    assert scale.of("nlp") == 1


def test_scale_file_rejects_zero_replicas(tmp_path: Path) -> None:
    path = tmp_path / "consort.yaml"
    path.write_text("apps:\n  nlp: { replicas: 0 }\n")
    with pytest.raises(ValueError, match="at least one"):
        ScaleFile.load(path)


def test_parse_scale() -> None:
    assert parse_scale("nlp=2") == ("nlp", 2)
    for bad in ("nlp", "nlp=0", "=2", "nlp=two"):
        with pytest.raises(ValueError):
            parse_scale(bad)


def test_instance_zero_keeps_the_run_files_ports_and_names() -> None:
    spec = RunFile.load().app("nlp")
    first, second = Instance.of(spec, 0), Instance.of(spec, 1)
    assert (first.name, first.sidecar_name) == ("nlp", "nlp-daprd")
    assert first.spec.app_port == spec.app_port
    assert (second.name, second.spec.app_id) == ("nlp-1", "nlp")
    assert second.spec.app_port != spec.app_port
    assert first.address != second.address
    assert instance_name("nlp", 3) == "nlp-3"


def hosts_file(path: Path) -> NameRegistry:
    """A name-resolution file with the SQLite resolver's table and two rows of nlp."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "CREATE TABLE hosts (registration_id TEXT PRIMARY KEY, address TEXT NOT NULL,"
        " app_id TEXT NOT NULL, namespace TEXT NOT NULL, last_update INTEGER NOT NULL)"
    )
    for n in (1, 2):
        db.execute(
            "INSERT INTO hosts VALUES (?, ?, 'nlp', '', unixepoch())", (f"r{n}", f"127.0.0.1:{n}")
        )
    db.close()
    return NameRegistry(path)


def test_withdrawn_rows_stop_resolving_and_admitted_ones_resolve_again(tmp_path: Path) -> None:
    registry = hosts_file(tmp_path / "nr.db")
    assert registry.withdraw("127.0.0.1:1")
    assert not registry.withdraw("127.0.0.1:1")  # once is enough
    assert registry.addresses("nlp") == ["127.0.0.1:2"]
    assert registry.admit("127.0.0.1:1")
    assert registry.addresses("nlp") == ["127.0.0.1:1", "127.0.0.1:2"]
    registry.remove("127.0.0.1:2")
    assert registry.addresses("nlp") == ["127.0.0.1:1"]


def test_hold_gives_up_when_told(tmp_path: Path) -> None:
    registry = hosts_file(tmp_path / "nr.db")
    done = threading.Event()
    done.set()
    registry.hold("127.0.0.1:9", done)  # never registered: returns at once
    registry.hold("127.0.0.1:1", threading.Event())
    assert registry.addresses("nlp") == ["127.0.0.1:2"]
