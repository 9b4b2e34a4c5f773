"""Forecasts through the gateway and real sidecars."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consort.dev.system import LocalSystem


@pytest.fixture
def api(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=30
    ) as client:
        yield client


def monthly(n: int = 72) -> list[float]:
    """A trending series with a yearly cycle, as monthly sales would be."""
    return [100 + 0.8 * t + 15 * math.sin(2 * math.pi * t / 12) for t in range(n)]


def series(**fields: Any) -> dict[str, Any]:
    return {"id": "sales", "values": monthly(), "period": 12, "horizon": 12, **fields}


@pytest.mark.parametrize("model", ["ets", "theta", "arima", "combination", "auto"])
def test_each_model_forecasts_the_seasonal_series(api: httpx.Client, model: str) -> None:
    response = api.post("/v1/forecasts", json={"series": [series(model=model)]})
    assert response.status_code == 200, response.text
    (result,) = response.json()["forecasts"]
    truth = monthly(84)[72:]
    errors = [abs(p - t) / t for p, t in zip(result["point"], truth, strict=True)]
    assert max(errors) < 0.1, (result["model"]["name"], errors)
    levels = {i["level"]: i for i in result["intervals"]}
    assert set(levels) == {80, 95}
    for step in range(12):
        assert levels[95]["lower"][step] <= levels[80]["lower"][step] <= result["point"][step]
        assert result["point"][step] <= levels[80]["upper"][step] <= levels[95]["upper"][step]
    assert result["library"]["name"] == "statsmodels"
    assert result["model"]["name"]


def test_many_series_in_one_request_keep_their_order_and_labels(api: httpx.Client) -> None:
    body = {
        "series": [
            series(id="a", model="ets", start="2020-01-01T00:00:00", frequency="MS"),
            series(id="b", values=[5.0, 6.0, 7.0, 8.0, 9.0, 10.0], period=1, horizon=3),
        ]
    }
    response = api.post("/v1/forecasts", json=body)
    assert response.status_code == 200, response.text
    a, b = response.json()["forecasts"]
    assert (a["id"], b["id"]) == ("a", "b")
    assert a["timestamps"][0].startswith("2026-01-01")  # 72 months after January 2020
    assert len(b["point"]) == 3 and b["timestamps"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"series": []}, "body.series"),
        ({"series": [series(values=[1.0, 2.0])]}, "body.series.0.values"),
        ({"series": [series(horizon=501)]}, "body.series.0.horizon"),
        ({"series": [series(levels=[101])]}, "body.series.0.levels.0"),
        ({"series": [series(model="prophet")]}, "body.series.0.model"),
        ({"series": [series(), series()]}, "body.series"),
    ],
    ids=["none", "too-short", "horizon", "level", "model", "duplicate-ids"],
)
def test_bad_requests_are_422(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = api.post("/v1/forecasts", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith(field)


def test_non_finite_values_are_a_422(api: httpx.Client) -> None:
    response = api.post(
        "/v1/forecasts",
        content='{"series": [{"id": "x", "values": [1, 2, NaN, 4], "horizon": 2}]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "finite" in response.json()["detail"]
