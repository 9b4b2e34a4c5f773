"""The web console's server side, in process: its files and their policy, the overview's
reading of the apps' metrics and the call graph. The page itself is tested in a real
browser (tests/e2e/test_web_console.py)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from apps.gateway.main import app as gateway_app
from apps.gateway.overview import call_edges, service_load, traced_calls, zipkin_base
from apps.gateway.routes.console import STATIC
from consort.contracts.overview import CallEdge
from consort.kit.errors import PROBLEM_JSON
from consort.kit.telemetry import Metrics

pytestmark = pytest.mark.unit

client = TestClient(gateway_app)


def test_the_page_and_its_modules_are_served_with_a_self_only_policy() -> None:
    page = client.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy  # no inline script or style anywhere
    assert client.get("/console", follow_redirects=False).status_code == 308
    # Every module the page loads, and every module they import, is served.
    wanted = set(re.findall(r'(?:src|href)="/console/([\w.-]+)"', page.text))
    for module in STATIC.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([\w.-]+)"', module.read_text()))
    assert {"app.js", "console.css", "api.js", "svg.js"} <= wanted
    for name in wanted:
        response = client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-security-policy"] == policy


def test_a_missing_file_is_a_404_problem_and_no_path_escapes_the_folder() -> None:
    for path in ("/console/nothing.js", "/console/..%2Fconsole.py", "/console/main.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == PROBLEM_JSON


def test_the_page_is_public_but_its_data_needs_a_key() -> None:
    assert client.get("/v1/ops/overview").status_code == 401
    assert client.get("/v1/ops/traces/" + "a" * 32).status_code == 401
    # No inline script, so the policy holds without hashes.
    assert "<script>" not in (STATIC / "index.html").read_text()


def test_the_overview_reads_requests_latency_and_the_process_from_metrics() -> None:
    metrics = Metrics("sentiment")
    metrics.requests.labels("/v1/sentiment", "POST", "200").inc(8)
    metrics.requests.labels("/v1/sentiment", "POST", "500").inc(2)
    metrics.requests.labels("/healthz", "GET", "200").inc(50)  # probes are not load
    metrics.requests.labels("/info", "GET", "200").inc(20)  # nor the console's own polls
    for seconds in (0.01,) * 9 + (0.4,):
        metrics.latency.labels("/v1/sentiment", "POST").observe(seconds)
    load = service_load(generate_latest(metrics.registry).decode())
    assert (load.requests, load.errors) == (10, 2)
    assert load.p50_ms is not None and load.p50_ms <= 25
    assert load.p99_ms is not None and load.p99_ms > 100
    assert load.cpu_seconds is not None and load.cpu_seconds > 0
    assert load.memory_bytes is not None and load.memory_bytes > 10 * 2**20
    assert load.started_at is not None and load.started_at > 1.7e9


def test_the_call_graph_is_the_gateways_calls_and_what_traces_add() -> None:
    traced = traced_calls(
        [
            {"parent": "orchestrator", "child": "nlp", "callCount": 4},
            {"parent": "gateway", "child": "sentiment", "callCount": 9},
            {"parent": "gateway", "child": "gateway", "callCount": 3},  # within itself
            {"parent": "somebody", "child": "nlp", "callCount": 1},  # not in the catalog
        ]
    )
    edges = call_edges(traced, ["gateway", "sentiment", "nlp", "orchestrator"], "gateway")
    assert edges == [
        CallEdge(caller="gateway", callee="nlp"),
        CallEdge(caller="gateway", callee="orchestrator"),
        CallEdge(caller="gateway", callee="sentiment", calls=9),
        CallEdge(caller="orchestrator", callee="nlp", calls=4),
    ]
    assert zipkin_base("http://127.0.0.1:9411/api/v2/spans") == "http://127.0.0.1:9411"
    assert zipkin_base(None) is None
