"""The test harness: tiers by folder, and a real local system for integration tests.

`unit/` needs no sidecar. `integration/` gets one session-wide system of real processes:
Redis, placement, scheduler, and each app under test beside its own daprd, all on free
ports in a temporary run folder. Start-up waits on health endpoints with deadlines;
teardown always ends every process group; a failing test gets every process's log tail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from consort.dev.system import InfraPorts, LocalSystem, RunFile

TIERS = ("unit", "integration", "e2e")


_own_basetemp: Path | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Run folders under a temporary folder of this session's own, not pytest's shared
    `/tmp/pytest-of-<user>`: every pytest session resets that one to mode 0700, which
    would lock a server running as another account (PostgreSQL, as `postgres`) out of
    its data in a run folder of a session still running beside it."""
    global _own_basetemp
    if config.option.basetemp is None:
        _own_basetemp = Path(tempfile.mkdtemp(prefix="consort-pytest-"))
        config.option.basetemp = str(_own_basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _own_basetemp is not None and not os.environ.get("CONSORT_KEEP_TEST_RUNS"):
        shutil.rmtree(_own_basetemp, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


_systems: list[LocalSystem] = []

#: The recommender's ALS defaults suit MSWeb's 32,711 users; the tests' few users need a
#: small penalty and plain confidences. Scheduled retraining every few seconds is tested too.
RECOMMENDER_TEST_ENV = {
    "RECOMMENDER_ALS_FACTORS": "8",
    "RECOMMENDER_ALS_REGULARIZATION": "0.1",
    "RECOMMENDER_ALS_ALPHA": "10",
    "RECOMMENDER_ALS_WEIGHTING": "confidence",
    "RECOMMENDER_RETRAIN_INTERVAL_S": "4",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed and _systems:
        for system in _systems:
            report.sections.append(("process logs (last lines)", system.log_tails(25)))


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """gateway, sentiment, nlp, vision, forecast, anomaly, recommender, orchestrator and
    search (Rust), each with its sidecar, on Redis, placement, scheduler and Zipkin."""
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("run"),
        InfraPorts.free(),
        # Series actors refit every 2 s while points arrive, so tests see reminders fire.
        extra_env={"ANOMALY_REFIT_INTERVAL_S": "2", **RECOMMENDER_TEST_ENV},
    )
    _systems.append(local)
    try:
        local.start(
            [
                "sentiment",
                "nlp",
                "vision",
                "forecast",
                "anomaly",
                "recommender",
                "orchestrator",
                "search",
                "gateway",
            ],
            # Longer on a machine shared with other work: CONSORT_TEST_START_DEADLINE_S.
            deadline_s=float(os.environ.get("CONSORT_TEST_START_DEADLINE_S", "90")),
        )
        yield local
    finally:
        local.stop()
        _systems.remove(local)
