"""How the gateway answers a service's failure (`apps.gateway.calls.forward`), unit-level:
the service's own problem passes on with its type and Retry-After; an unreachable service
is the gateway's 503."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from apps.gateway.calls import forward, install_passthrough
from consort.kit.dapr import Reply, TargetUnavailable
from consort.kit.errors import PROBLEM_JSON, install_problem_handlers


class ScriptedSidecar:
    """Answers every invocation with one reply, or raises `TargetUnavailable`."""

    def __init__(self, reply: Reply | None) -> None:
        self.reply = reply

    async def invoke(self, app_id: str, method: str, **request: Any) -> Reply:
        if self.reply is None:
            raise TargetUnavailable(f"{app_id} unavailable: circuit breaker is open")
        return self.reply


def _gateway(reply: Reply | None) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    install_passthrough(app)

    @app.post("/call")
    async def call() -> Any:
        return (await forward(ScriptedSidecar(reply), "forecast", "v1/forecasts")).json()  # type: ignore[arg-type]

    return TestClient(app, raise_server_exceptions=False)


def _problem(status: int, slug: str, **headers: str) -> Reply:
    body = {"type": f"urn:consort:problem:{slug}", "title": slug, "status": status}
    return Reply(status, json.dumps(body).encode(), {"content-type": PROBLEM_JSON, **headers})


def test_a_services_own_503_passes_on_with_its_type_and_retry_after() -> None:
    response = _gateway(_problem(503, "time-budget-exceeded", **{"retry-after": "7"})).post("/call")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:consort:problem:time-budget-exceeded"
    assert response.headers["retry-after"] == "7"


def test_an_over_budget_503_passes_on_without_a_retry_after() -> None:
    """Over its budget, the same request would run out again: no Retry-After to add."""
    response = _gateway(_problem(503, "over-budget")).post("/call")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:consort:problem:over-budget"
    assert "retry-after" not in response.headers


def test_a_services_4xx_problem_passes_on_unchanged() -> None:
    response = _gateway(_problem(422, "validation-error")).post("/call")
    assert response.status_code == 422
    assert response.json()["type"] == "urn:consort:problem:validation-error"
    assert "retry-after" not in response.headers


def test_an_unreachable_service_is_the_gateways_503() -> None:
    response = _gateway(None).post("/call")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:consort:problem:service-unavailable"
    assert response.headers["retry-after"] == "2"
    assert "cut off" in response.json()["detail"]


def test_a_services_500_stays_behind_an_upstream_failure() -> None:
    response = _gateway(_problem(500, "internal-error")).post("/call")
    assert response.status_code == 502
    assert response.json()["type"] == "urn:consort:problem:upstream-failure"
