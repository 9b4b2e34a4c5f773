"""Traces, metrics, readiness, status and the catalog, read from the running system."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx

from consort.dev.observe import fetch_trace, span_tree
from consort.dev.profiles import component_types
from consort.dev.runtime import REPO
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually, unique_text


def components_of(spans: list[dict[str, Any]]) -> set[str]:
    return {node.component for node in _walk(span_tree(spans))}


def _walk(nodes: list[Any]) -> list[Any]:
    out = []
    for node in nodes:
        out.append(node)
        out.extend(_walk(node.children))
    return out


def whole(spans: list[dict[str, Any]]) -> bool:
    """Every span's parent has reached Zipkin too (each process exports in its own time,
    so a child can arrive before its parent)."""
    ids = {s["id"] for s in spans}
    return all(s.get("parentId") in ids for s in spans if s.get("parentId"))


def traced_request(system: LocalSystem) -> tuple[str, list[dict[str, Any]]]:
    """One gateway request, and its trace once the apps and both sidecars reported."""
    response = httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment",
        headers=system.api_headers,
        json={"text": unique_text()},
        timeout=10,
    )
    assert response.status_code == 200
    trace_id = response.headers["x-trace-id"]
    assert system.zipkin_url is not None
    wanted = {"gateway app", "gateway daprd", "sentiment daprd", "sentiment app"}
    spans = eventually(
        lambda: fetch_trace(str(system.zipkin_url), trace_id),
        lambda spans: (
            wanted <= components_of(spans)
            and any(s["name"] == "post /events/texts-analyzed" for s in spans)
            and whole(spans)
        ),
        deadline_s=20,
    )
    return trace_id, spans


def test_one_request_is_one_trace_across_apps_and_sidecars(system: LocalSystem) -> None:
    trace_id, spans = traced_request(system)
    assert {s["traceId"] for s in spans} == {trace_id}
    roots = span_tree(spans)
    assert len(roots) == 1, [r.label for r in roots]  # one tree, no orphans
    assert roots[0].label == "post /v1/text/sentiment"
    assert any(s["name"] == "model.infer" for s in spans)  # the app's own span


def test_a_published_event_links_producer_and_consumer(system: LocalSystem) -> None:
    _, spans = traced_request(system)
    by_id = {s["id"]: s for s in spans}
    consumer = next(s for s in spans if s["name"] == "post /events/texts-analyzed")
    assert consumer["localEndpoint"]["serviceName"] == "gateway"
    ancestors = []
    parent = by_id.get(consumer.get("parentId", ""))
    while parent is not None:
        ancestors.append(parent)
        parent = by_id.get(parent.get("parentId", ""))
    # The delivery descends from the sentiment app's publish call.
    assert any(
        a["localEndpoint"]["serviceName"] == "sentiment" and "publish" in a["name"]
        for a in ancestors
    ), [a["name"] for a in ancestors]


def test_a_problem_carries_the_trace_that_recorded_it(system: LocalSystem) -> None:
    response = httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment", headers=system.api_headers, json={"text": ""}
    )
    problem = response.json()
    assert response.status_code == 422
    spans = eventually(
        lambda: fetch_trace(str(system.zipkin_url), problem["trace_id"]), lambda s: bool(s)
    )
    assert spans[0]["tags"]["http.status_code"] == "422"


def test_apps_and_sidecars_expose_metrics(system: LocalSystem) -> None:
    httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment/batch",
        headers=system.api_headers,
        json={"texts": [unique_text(), unique_text()]},
        timeout=10,
    )
    text = httpx.get(f"{system.url('sentiment')}/metrics").text
    assert 'consort_model_inference_seconds_count{model="vader@3.3.2"}' in text
    assert 'consort_model_batch_size_bucket{le="2.0",model="vader@3.3.2"}' in text
    assert 'route="/v1/sentiment/batch"' in text
    sidecar_metrics = httpx.get(
        f"http://127.0.0.1:{system.run_file.app('sentiment').metrics_port}/metrics"
    ).text
    assert "dapr_http_server_request_count" in sidecar_metrics


def test_readiness_waits_for_the_sidecar(system: LocalSystem) -> None:
    system.stop_app("sentiment", sidecar_only=True)
    try:
        response = httpx.get(f"{system.url('sentiment')}/readyz")
        assert response.status_code == 503
        assert "sidecar" in response.json()["detail"]
        assert httpx.get(f"{system.url('sentiment')}/healthz").status_code == 200
    finally:
        system.start_sidecar("sentiment")
        system.wait_app("sentiment")
    assert httpx.get(f"{system.url('sentiment')}/readyz").status_code == 200
    # Callers reach it again once their sidecars reconnect to its internal gRPC port (the
    # same port as before: gRPC's reconnect backoff takes about a second).
    eventually(
        lambda: (
            httpx.post(
                f"{system.url('gateway')}/v1/text/sentiment",
                headers=system.api_headers,
                json={"text": "back"},
                timeout=10,
            ).status_code
        ),
        lambda status: status == 200,
        deadline_s=15,
    )


def test_catalog_reads_the_running_system(system: LocalSystem) -> None:
    response = httpx.get(
        f"{system.url('gateway')}/v1/catalog", headers=system.api_headers, timeout=10
    )
    assert response.status_code == 200
    services = {s["app_id"]: s for s in response.json()["services"]}
    assert set(services) == {
        "gateway",
        "nlp",
        "sentiment",
        "vision",
        "forecast",
        "anomaly",
        "recommender",
        "orchestrator",
        "search",
    }
    assert {s["status"] for s in services.values()} == {"available"}
    orchestrator = services["orchestrator"]["info"]
    assert set(orchestrator["publishes"]) == {
        "cases.opened",
        "cases.escalated",
        "cases.closed",
        "forecasts.published",
    }
    assert orchestrator["subscribes"] == ["anomalies.detected"]
    sentiment = services["sentiment"]["info"]
    assert sentiment["models"] == [{"name": "vader", "version": "3.3.2"}]
    assert {"method": "POST", "path": "/v1/sentiment"} in sentiment["routes"]
    assert set(sentiment["publishes"]) == {"texts.analyzed", "reviews.sentiment-scored"}
    assert sentiment["sidecar"]["runtime_version"] == "1.18.3"
    components = {(c["name"], c["type"]) for c in sentiment["sidecar"]["components"]}
    # The profile's backends (docs/profiles.md), as the sidecar loaded them.
    declared = component_types(system.run_file.sidecar.resources_paths)
    assert {(n, declared[n]) for n in ("statestore", "pubsub")} <= components
    gateway = services["gateway"]["info"]
    assert {"method": "GET", "path": "/v1/catalog"} in gateway["routes"]
    assert "texts.analyzed" in gateway["subscribes"]
    subscription = next(
        s for s in gateway["sidecar"]["subscriptions"] if s["topic"] == "texts.analyzed"
    )
    assert subscription["dead_letter_topic"] == "texts.analyzed.dead-letter"


def test_status_and_trace_commands_read_the_running_system(system: LocalSystem) -> None:
    trace_id, _ = traced_request(system)
    system.write_endpoints(["gateway", "nlp", "sentiment", "vision", "forecast"])
    env = {**os.environ, "CONSORT_RUN_DIR_ROOT": str(system.run_dir), "COLUMNS": "200"}

    def consort(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "consort", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    status = consort("status", "--once")
    assert "sentiment" in status and "ready" in status and "vader 3.3.2" in status
    waterfall = consort("trace", trace_id)
    assert "post /v1/text/sentiment" in waterfall
    assert "sentiment daprd" in waterfall and "model.infer" in waterfall
