"""The test harness: tiers by folder, and a real local system for integration tests.

`unit/` needs no sidecar. `integration/` gets one session-wide system of real processes:
Redis, placement, scheduler, and each app under test beside its own daprd, all on free
ports in a temporary run folder. Start-up waits on health endpoints with deadlines;
teardown always ends every process group; a failing test gets every process's log tail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consort.dev.system import InfraPorts, LocalSystem, RunFile

TIERS = ("unit", "integration", "e2e")


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
            ]
        )
        yield local
    finally:
        local.stop()
        _systems.remove(local)
