"""Every AI app enforces its own contract's limits when called directly, not only the
gateway (issue 12): limit + 1 is a 422 naming the field and the limit, before any model
is needed (the apps are not started, so no model loads and no sidecar is asked)."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consort.contracts import anomaly, forecast, nlp, recommender, sentiment

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _points(n: int) -> list[dict[str, Any]]:
    return [{"timestamp": (T0 + timedelta(minutes=i)).isoformat(), "value": 1.0} for i in range(n)]


def _series(**over: Any) -> dict[str, Any]:
    return {"id": "s", "values": [1.0, 2.0, 3.0, 4.0], "horizon": 2, **over}


#: (app, path, body over one limit, the field named, the limit named)
OVER_THE_LIMIT = [
    (
        "nlp",
        "/v1/nlp",
        {"text": "x" * (nlp.MAX_NLP_TEXT_CHARS + 1)},
        "body.text",
        nlp.MAX_NLP_TEXT_CHARS,
    ),
    (
        "nlp",
        "/v1/nlp/batch",
        {"texts": ["x"] * (nlp.MAX_NLP_BATCH_TEXTS + 1)},
        "body.texts",
        nlp.MAX_NLP_BATCH_TEXTS,
    ),
    (
        "sentiment",
        "/v1/sentiment",
        {"text": "x" * (sentiment.MAX_TEXT_CHARS + 1)},
        "body.text",
        sentiment.MAX_TEXT_CHARS,
    ),
    (
        "sentiment",
        "/v1/sentiment/batch",
        {"texts": ["x"] * (sentiment.MAX_BATCH_TEXTS + 1)},
        "body.texts",
        sentiment.MAX_BATCH_TEXTS,
    ),
    (
        "forecast",
        "/v1/forecasts",
        {"series": [_series()] * (forecast.MAX_SERIES + 1)},
        "body.series",
        forecast.MAX_SERIES,
    ),
    (
        "forecast",
        "/v1/forecasts",
        {"series": [_series(horizon=forecast.MAX_HORIZON + 1)]},
        "body.series.0.horizon",
        forecast.MAX_HORIZON,
    ),
    (
        "forecast",
        "/v1/forecasts",
        {"series": [_series(values=[1.0] * (forecast.MAX_POINTS + 1))]},
        "body.series.0.values",
        forecast.MAX_POINTS,
    ),
    (
        "anomaly",
        "/v1/anomalies/detect",
        {"values": [1.0] * (anomaly.MAX_DETECT_POINTS + 1)},
        "body.values",
        anomaly.MAX_DETECT_POINTS,
    ),
    (
        "anomaly",
        "/v1/anomalies/detect",
        {"values": [1.0] * 10, "period": anomaly.MAX_PERIOD + 1},
        "body.period",
        anomaly.MAX_PERIOD,
    ),
    (
        "anomaly",
        "/v1/metrics/s/points",
        {"points": _points(anomaly.MAX_POINTS + 1)},
        "body.points",
        anomaly.MAX_POINTS,
    ),
    (
        "recommender",
        "/v1/recommend",
        {"user": "u" * (recommender.MAX_ID_CHARS + 1)},
        "body.user",
        recommender.MAX_ID_CHARS,
    ),
    (
        "recommender",
        "/v1/recommend",
        {"user": "u", "k": recommender.K_MAX + 1},
        "body.k",
        recommender.K_MAX,
    ),
    (
        "recommender",
        "/v1/similar",
        {"item": "i", "k": recommender.K_MAX + 1},
        "body.k",
        recommender.K_MAX,
    ),
    (
        "recommender",
        "/v1/baskets/complete",
        {"items": ["i"] * (recommender.MAX_BASKET + 1)},
        "body.items",
        recommender.MAX_BASKET,
    ),
]


@pytest.mark.parametrize(("app_id", "path", "body", "field", "limit"), OVER_THE_LIMIT)
def test_an_app_called_directly_refuses_limit_plus_one(
    app_id: str, path: str, body: dict[str, Any], field: str, limit: int
) -> None:
    app = importlib.import_module(f"apps.{app_id}.main").app
    response = TestClient(app).post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problems = {p["field"]: p for p in response.json()["errors"]}
    assert field in problems, problems
    assert problems[field]["limit"] == limit
    assert str(limit) in problems[field]["message"]


def test_the_anomaly_app_refuses_a_series_id_that_breaks_its_pattern() -> None:
    app = importlib.import_module("apps.anomaly.main").app
    response = TestClient(app).post(
        "/v1/metrics/" + "s" * 201 + "/points", json={"points": _points(1)}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "path.series"


def test_the_vision_app_refuses_an_image_over_its_byte_and_pixel_limits() -> None:
    from consort.contracts.vision import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
    from tests.integration.test_vision import png_bomb

    client = TestClient(importlib.import_module("apps.vision.main").app)
    route = "/v1/images/analyze?features=quality"  # no model needed: limits come first
    too_large = client.post(
        route, content=b"\xff" * (MAX_IMAGE_BYTES + 1), headers={"content-type": "image/jpeg"}
    )
    assert too_large.status_code == 413, too_large.text
    assert too_large.json()["errors"][0]["limit"] == MAX_IMAGE_BYTES
    bomb = client.post(route, content=png_bomb(), headers={"content-type": "image/png"})
    assert bomb.status_code == 413, bomb.text
    assert bomb.json()["errors"][0]["limit"] == MAX_IMAGE_PIXELS
