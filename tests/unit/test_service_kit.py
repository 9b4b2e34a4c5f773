"""The service kit's HTTP behaviour, on an app built with it (no sidecar)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from consort.contracts.common import ModelInfo
from consort.contracts.sentiment import SentimentBatchRequest, SentimentRequest
from consort.kit.caller_faults import is_caller_fault, restored_status
from consort.kit.errors import field_problems
from consort.kit.service import ServiceKit, create_app, draining
from consort.kit.settings import ServiceSettings


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # Nothing listens on this sidecar port: readiness must say so.
    kit = ServiceKit(ServiceSettings(app_id="kit-test", max_body_bytes=2_000), version="9.9.9")
    kit.sidecar_settings.http_port = 1
    app = create_app(kit, title="kit test", description="")

    @app.post("/echo")
    async def echo(request: SentimentRequest) -> dict[str, str]:
        return {"text": request.text}

    @app.post("/batch")
    async def batch(request: SentimentBatchRequest) -> dict[str, int]:
        return {"n": len(request.texts)}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal-detail-42")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_healthz_is_alive(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_says_what_is_missing(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "sidecar" in response.json()["detail"]


class Model:
    model = ModelInfo(name="slow", version="1")


def test_a_model_loads_in_the_background_behind_readiness() -> None:
    gate = threading.Event()
    kit = ServiceKit(ServiceSettings(app_id="loading"), version="1")
    kit.sidecar_settings.http_port = 1
    slot = kit.load_model("slow", lambda: (gate.wait(10), Model())[1])
    app = create_app(kit, title="t", description="")

    @app.get("/predict")
    async def predict() -> dict[str, str]:
        return {"model": slot.get().model.name}

    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # alive while loading
        assert "model slow is loading" in client.get("/readyz").json()["detail"]
        early = client.get("/predict")
        assert early.status_code == 503
        assert early.headers["retry-after"] == "1"
        assert client.get("/info").json()["models"] == []
        gate.set()
        deadline = time.monotonic() + 10
        while "loading" in client.get("/readyz").json()["detail"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get("/predict").json() == {"model": "slow"}
        assert client.get("/info").json()["models"] == [{"name": "slow", "version": "1"}]


def test_a_model_that_fails_to_load_says_why() -> None:
    def broken() -> Model:
        raise FileNotFoundError("weights.onnx")

    kit = ServiceKit(ServiceSettings(app_id="broken"), version="1")
    kit.sidecar_settings.http_port = 1
    kit.load_model("broken", broken)
    with TestClient(create_app(kit, title="t", description="")) as client:
        deadline = time.monotonic() + 10
        while "failed to load" not in client.get("/readyz").json()["detail"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert "weights.onnx" in client.get("/readyz").json()["detail"]


def test_info_describes_the_app_even_without_its_sidecar(client: TestClient) -> None:
    info = client.get("/info").json()
    assert (info["app_id"], info["version"], info["models"]) == ("kit-test", "9.9.9", [])
    assert {"method": "POST", "path": "/echo"} in info["routes"]
    assert {"method": "GET", "path": "/healthz"} in info["routes"]
    assert info["sidecar"] is None  # nothing listens on its sidecar port
    assert info["subscribes"] == []


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.post("/echo", json={"text": "counted"})
    text = client.get("/metrics").text
    assert 'consort_http_requests_total{method="POST",route="/echo",status="200"}' in text
    assert 'consort_app_info{app="kit-test",version="9.9.9"} 1.0' in text


def test_trace_id_continues_the_callers_trace(client: TestClient) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client.post(
        "/echo", json={"text": ""}, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    )
    assert response.headers["x-trace-id"] == trace
    assert response.json()["trace_id"] == trace


def test_validation_problem_names_field_and_limit(client: TestClient) -> None:
    response = client.post("/batch", json={"texts": ["x"] * 65})
    body = response.json()
    assert response.status_code == 422
    assert body["type"] == "urn:consort:problem:validation-error"
    assert body["errors"] == [
        {"field": "body.texts", "message": "must have at most 64 items", "limit": 64}
    ]


def test_body_limit_is_413(client: TestClient) -> None:
    response = client.post("/echo", json={"text": "a" * 3_000})
    assert response.status_code == 413
    assert response.json()["errors"][0]["limit"] == 2_000


def test_unexpected_error_is_a_500_problem_not_a_traceback(client: TestClient) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "internal-detail-42" not in response.text  # internals stay in the logs
    assert response.json()["trace_id"] == response.headers["x-trace-id"]


def test_field_problems_map_pydantic_errors() -> None:
    problems = field_problems(
        [
            {"loc": ("body", "text"), "type": "string_too_long", "ctx": {"max_length": 5}},
            {"loc": ("body", "n"), "type": "int_parsing", "msg": "bad"},
            {"loc": ("body", "x"), "type": "extra_forbidden", "msg": "bad"},
        ]
    )
    assert [(p.field, p.message, p.limit) for p in problems] == [
        ("body.text", "must be at most 5 characters", 5),
        ("body.n", "must be an integer", None),
        ("body.x", "is not a known field", None),
    ]


# -- caller faults in band (issue 12: bad input never trips a breaker) ---------------------
IN_BAND = {"consort-caller-faults": "in-band"}


def test_a_caller_fault_asked_in_band_is_a_200_with_its_real_status(client: TestClient) -> None:
    response = client.post("/echo", json={"text": ""}, headers=IN_BAND)
    assert response.status_code == 200
    assert response.headers["consort-status"] == "422"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "body.text"
    too_large = client.post("/echo", content=b"x" * 3_000, headers=IN_BAND)
    assert (too_large.status_code, too_large.headers["consort-status"]) == (200, "413")


def test_without_the_header_a_caller_fault_keeps_its_status(client: TestClient) -> None:
    response = client.post("/echo", json={"text": ""})
    assert response.status_code == 422
    assert "consort-status" not in response.headers


def test_service_faults_are_never_in_band(client: TestClient) -> None:
    response = client.get("/boom", headers=IN_BAND)
    assert response.status_code == 500
    assert "consort-status" not in response.headers
    assert client.get("/echo", headers=IN_BAND).headers["consort-status"] == "405"


@pytest.mark.parametrize(
    ("status", "headers", "meant"),
    [
        (200, {"consort-status": "422"}, 422),
        (200, {}, 200),
        (200, {"consort-status": "503"}, 200),  # never turns a success into a fault
        (200, {"consort-status": "429"}, 200),
        (500, {"consort-status": "422"}, 500),
    ],
)
def test_the_caller_restores_only_a_caller_fault(
    status: int, headers: dict[str, str], meant: int
) -> None:
    assert restored_status(status, headers) == meant


def test_is_caller_fault_leaves_overload_to_the_service() -> None:
    assert [s for s in (400, 404, 408, 413, 415, 422, 429, 500, 503) if is_caller_fault(s)] == [
        400,
        404,
        413,
        415,
        422,
    ]


# -- shutdown and version (issue 12) ---------------------------------------------------------
def test_readyz_says_shutting_down_from_the_signal_on(client: TestClient) -> None:
    draining.begin()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["type"] == "urn:consort:problem:shutting-down"
        assert response.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200  # alive while it drains
    finally:
        draining.since = None


def test_the_environment_overrides_the_version_of_the_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSORT_SERVICE_VERSION", "2.0.0-rc.1")
    kit = ServiceKit(ServiceSettings(app_id="versioned"), version="1.0.0")
    kit.sidecar_settings.http_port = 1
    with TestClient(create_app(kit, title="versioned", description="")) as versioned:
        assert versioned.get("/info").json()["version"] == "2.0.0-rc.1"
    monkeypatch.delenv("CONSORT_SERVICE_VERSION")
    assert ServiceKit(ServiceSettings(app_id="plain"), version="1.0.0").version == "1.0.0"
