"""A stopped or crashed AI service costs its callers a quick 503, never a hang."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from apps.gateway.settings import GatewaySettings
from consort.dev.system import LocalSystem

DEADLINE_S = GatewaySettings().invoke_timeout_s


@pytest.fixture
def sentiment_down(system: LocalSystem, request: pytest.FixtureRequest) -> Iterator[None]:
    system.stop_app("sentiment", kill=request.param == "killed")
    try:
        yield
    finally:
        system.start_app("sentiment")
        system.wait_app("sentiment")


@pytest.mark.parametrize("sentiment_down", ["stopped", "killed"], indirect=True)
def test_gateway_answers_503_within_its_deadline(system: LocalSystem, sentiment_down: None) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment",
        headers=system.api_headers,
        json={"text": "is anyone there?"},
        timeout=DEADLINE_S + 5,
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["title"] == "Service unavailable"
    assert elapsed < DEADLINE_S + 0.5
    # The gateway itself stays healthy: the fault is isolated to the sentiment service,
    # and its catalog says which service is missing.
    assert httpx.get(f"{system.url('gateway')}/healthz").status_code == 200
    catalog = httpx.get(
        f"{system.url('gateway')}/v1/catalog", headers=system.api_headers, timeout=10
    ).json()
    status = {s["app_id"]: s["status"] for s in catalog["services"]}
    assert status == {
        "gateway": "available",
        "nlp": "available",
        "sentiment": "unreachable",
        "vision": "available",
        "forecast": "available",
        "anomaly": "available",
        "recommender": "available",
        "orchestrator": "available",
        "search": "available",
    }


def test_service_recovers_after_restart(system: LocalSystem) -> None:
    system.stop_app("sentiment", kill=True)
    system.start_app("sentiment")
    system.wait_app("sentiment")
    response = httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment",
        headers=system.api_headers,
        json={"text": "back again, great"},
        timeout=10,
    )
    assert response.status_code == 200
