"""The gateway's edge, in process: which routes need which scope (the OpenAPI document),
401/403/429 before the route runs, the security headers, CORS off unless configured, and
the docs page's content security policy."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from apps.gateway.edge import (
    ApiKeyMiddleware,
    SecurityHeadersMiddleware,
    docs_page,
    install_edge,
    requires,
)
from apps.gateway.main import app as gateway_app
from apps.gateway.settings import GatewaySettings
from consort.kit.errors import PROBLEM_JSON, install_problem_handlers
from consort.kit.keys import KeyFile, KeyRing, RateLimiter

#: The scope each kind of route needs, as the issue and docs/security.md say.
EXPECTED = {
    "/v1/text/": "text",
    "/v1/reviews": "text",
    "/v1/embeddings": "text",
    "/v1/search/": "text",
    "/v1/images/": "images",
    "/v1/forecasts": "timeseries",
    "/v1/metrics/": "timeseries",
    "/v1/anomalies": "timeseries",
    "/v1/ops/": "ops",
    "/v1/catalog": "ops",
    "/v1/recommendations/": "recommendations",
    "/v1/items/": "recommendations",
    "/v1/baskets/": "recommendations",
    "/v1/users/": "recommendations",
    "/v1/interactions": "recommendations",
    "/v1/cases": "workflows",
}
#: Workflow routes an operator uses (decide, stop, purge, schedule); the rest: `workflows`.
OPS_WORKFLOW_ROUTES = {
    ("post", "/v1/workflows/{instance_id}/events/decision"),
    ("post", "/v1/workflows/{instance_id}/terminate"),
    ("delete", "/v1/workflows/{instance_id}"),
    ("put", "/v1/workflows/forecast-and-alert/schedule"),
    ("delete", "/v1/workflows/forecast-and-alert/schedule"),
}


def _expected_scope(method: str, path: str) -> str:
    if path.startswith("/v1/workflows"):
        return "ops" if (method, path) in OPS_WORKFLOW_ROUTES else "workflows"
    return next(scope for prefix, scope in EXPECTED.items() if path.startswith(prefix))


def test_every_v1_route_declares_its_one_scope_and_nothing_else_needs_a_key() -> None:
    doc = gateway_app.openapi()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    seen = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security")
            if not path.startswith("/v1/"):
                assert security is None, f"{method} {path}"
                continue
            seen += 1
            scope = _expected_scope(method, path)
            assert security == [{"bearer": [scope]}, {"apiKey": [scope]}], f"{method} {path}"
            assert {"401", "403", "429"} <= set(operation["responses"]), f"{method} {path}"
    assert seen >= 35
    assert {"/v1/ops/recommender/retrain", "/v1/ops/dead-letters/{topic}"} <= set(doc["paths"])


@pytest.fixture
def keyfile(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "gateway-keys.json")


def _edge(keyfile: KeyFile, **settings: Any) -> TestClient:
    app = FastAPI(docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    calls: list[str] = []
    app.state.calls = calls

    @app.post("/v1/thing", dependencies=[requires("text")])
    async def thing() -> dict[str, str]:
        calls.append("thing")
        return {"ok": "yes"}

    @app.get("/v1/admin", dependencies=[requires("ops")])
    async def admin() -> dict[str, str]:
        calls.append("admin")
        return {"ok": "yes"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(ApiKeyMiddleware, ring=KeyRing(keyfile.path), limiter=RateLimiter())
    install_edge(app, GatewaySettings(keys_file=keyfile.path, **settings))
    return TestClient(app)


def test_without_a_key_401_with_a_challenge_before_the_body_is_read(keyfile: KeyFile) -> None:
    client = _edge(keyfile)
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"X-API-Key": " "}):
        response = client.post("/v1/thing", content=b"{not json", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.app.state.calls == []  # type: ignore[attr-defined]
    assert client.get("/healthz").status_code == 200


def test_an_unknown_or_revoked_key_is_401_invalid_token(keyfile: KeyFile) -> None:
    record, key = keyfile.create("a", ["text"])
    client = _edge(keyfile)
    assert client.post("/v1/thing", headers={"X-API-Key": key}).status_code == 200
    keyfile.revoke(record.id)
    response = client.post("/v1/thing", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["title"] == "Invalid API key"


def test_a_key_without_the_scope_is_403_naming_it(keyfile: KeyFile) -> None:
    record, key = keyfile.create("reader", ["text"])
    client = _edge(keyfile)
    response = client.get("/v1/admin", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert "`ops`" in response.json()["detail"] and record.id in response.json()["detail"]
    assert client.app.state.calls == []  # type: ignore[attr-defined]


def test_over_its_rate_a_key_gets_429_with_retry_after(keyfile: KeyFile) -> None:
    _, key = keyfile.create("slow", ["text"], rate_per_s=0.5, burst=2)
    _, other = keyfile.create("other", ["text"], rate_per_s=0.5, burst=2)
    client = _edge(keyfile)
    auth = {"Authorization": f"Bearer {key}"}
    assert [client.post("/v1/thing", headers=auth).status_code for _ in range(2)] == [200, 200]
    refused = client.post("/v1/thing", headers=auth)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["type"] == "urn:consort:problem:rate-limited"
    assert client.post("/v1/thing", headers={"X-API-Key": other}).status_code == 200


def test_every_answer_carries_the_security_headers_and_no_cors_by_default(
    keyfile: KeyFile,
) -> None:
    client = _edge(keyfile)
    origin = {"Origin": "https://evil.example"}
    for response in (client.get("/healthz", headers=origin), client.post("/v1/thing")):
        for name, value in SecurityHeadersMiddleware.HEADERS.items():
            assert response.headers[name.decode()] == value.decode()
        assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/thing", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_answers_only_the_configured_origins(keyfile: KeyFile) -> None:
    client = _edge(keyfile, cors_origins=["https://app.example"])
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    allowed = client.options("/v1/thing", headers={"Origin": "https://app.example", **ask})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options("/v1/thing", headers={"Origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in other.headers


def test_the_docs_page_runs_only_its_own_inline_script(keyfile: KeyFile) -> None:
    response = _edge(keyfile).get("/docs")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    (script,) = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy and "unsafe-inline" not in policy.split(";")[1]
    assert "frame-ancestors 'none'" in policy
    assert docs_page(gateway_app)[1].count("sha256-") == 1
