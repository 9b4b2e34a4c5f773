"""The forecast service's time budget, on the app itself (no sidecar needed to forecast)."""

from __future__ import annotations

import math
import time

import pytest
from fastapi.testclient import TestClient

from apps.forecast import main


def test_a_request_past_its_time_budget_is_a_503_that_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [100 + 10 * math.sin(2 * math.pi * t / 12) + t for t in range(240)]
    body = {
        "series": [
            {"id": f"s{i}", "values": values, "period": 12, "horizon": 24, "model": "combination"}
            for i in range(40)
        ]
    }
    with TestClient(main.app) as client:
        deadline = time.monotonic() + 240  # three workers import statsmodels; busy cores
        while "loading" in client.get("/readyz").text and time.monotonic() < deadline:
            time.sleep(0.1)
        monkeypatch.setattr(main.settings, "time_budget_s", 0.2)
        response = client.post("/v1/forecasts", json=body)
        # The fits of the abandoned request were killed with their workers (both: it used
        # both lanes). While fresh ones warm up, requests are told to retry (not queued
        # behind them); then a small request gets its answer within the budget.
        monkeypatch.setattr(main.settings, "time_budget_s", 30)
        small = {"series": [{"id": "x", "values": values[:24], "horizon": 3, "model": "theta"}]}
        restarting = []
        after = client.post("/v1/forecasts", json=small)
        while after.status_code == 503 and time.monotonic() < deadline + 60:
            restarting.append(after.json()["title"])
            time.sleep(0.2)
            after = client.post("/v1/forecasts", json=small)
    assert after.status_code == 200, after.text
    assert set(restarting) <= {"Restarting"}
    assert response.status_code == 503
    problem = response.json()
    assert problem["type"] == "urn:consort:problem:over-budget"
    assert "0.2 s" in problem["detail"]
    # Over budget is the request's doing: retrying the same request would not help.
    assert "retry-after" not in response.headers
