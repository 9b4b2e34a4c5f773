"""The web console's server side, in process: its files and their policy, the overview's
reading of the apps' metrics and the call graph. The page itself is tested in a real
browser (tests/e2e/test_web_console.py)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from apps.gateway.calls import kit as gateway_kit
from apps.gateway.main import app as gateway_app
from apps.gateway.overview import call_edges, service_totals, traced_calls, zipkin_base
from apps.gateway.routes.console import STATIC
from apps.gateway.sampler import app_scrape
from apps.gateway.samples import (
    InstanceScrape,
    Sample,
    Totals,
    increase,
    recent,
    series,
    topic_flow,
    window,
)
from consort.contracts.overview import CallEdge
from consort.dev.system import instance_state
from consort.kit.errors import PROBLEM_JSON
from consort.kit.events import Delivery, count_deliveries, deliveries, delivery_response
from consort.kit.metrics_text import bucket_quantiles, event_counts, pubsub_counts
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
    text = generate_latest(metrics.registry).decode()
    load = service_totals([app_scrape("sentiment", "sentiment", text, None)])
    assert load is not None
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


# -- the load samples: differences of counters --------------------------------------------------
def scrape(name: str = "sentiment", app_id: str = "sentiment", **fields: Any) -> InstanceScrape:
    return InstanceScrape(app_id=app_id, name=name, **fields)


def buckets(fast: float, slow: float) -> dict[float, float]:
    """A histogram of `fast` requests under 10 ms and `slow` between 0.25 and 0.5 s."""
    return {0.01: fast, 0.25: fast, 0.5: fast + slow, math.inf: fast + slow}


def test_an_increase_is_a_difference_unless_the_counter_was_reset() -> None:
    assert increase(10, 25) == 15
    assert increase(None, 7) == 7  # first seen: what it counted since its start
    assert increase(30, 4) == 4  # went down: a restart, and 4 since
    assert increase(30, 40, restarted=True) == 40
    assert increase(3, None) is None


def test_a_window_has_the_rate_error_share_and_percentiles_of_its_own_requests() -> None:
    # Since start: 1000 fast requests. In the 10 s window: 90 fast and 10 slow, 5 failed.
    older = Sample(
        100.0,
        {
            "sentiment": scrape(
                requests=1000, errors=1, buckets=buckets(1000, 0), cpu_s=50.0, started_at=1.0
            )
        },
    )
    newer = Sample(
        110.0,
        {
            "sentiment": scrape(
                requests=1100,
                errors=6,
                buckets=buckets(1090, 10),
                cpu_s=52.5,
                memory_bytes=2e8,
                started_at=1.0,
            )
        },
    )
    w = window(older, newer, "sentiment")
    assert w is not None
    assert w.requests_per_s == pytest.approx(10.0)
    assert w.error_rate == pytest.approx(0.05)
    assert w.p50_ms is not None and w.p50_ms <= 10  # the fast ones
    # The 99th of the window's 100 is a slow one; over the life it would be a fast one.
    assert w.p99_ms is not None and 250 < w.p99_ms <= 500
    assert bucket_quantiles(buckets(1090, 10))[1] <= 10
    assert w.cpu_percent == pytest.approx(25.0)
    assert w.memory_bytes == 2e8


def test_a_restart_in_the_window_counts_what_the_new_process_served() -> None:
    older = Sample(
        0.0, {"sentiment": scrape(requests=500, buckets=buckets(500, 0), started_at=1.0)}
    )
    newer = Sample(5.0, {"sentiment": scrape(requests=20, buckets=buckets(20, 0), started_at=3.0)})
    w = window(older, newer, "sentiment")
    assert w is not None and w.requests_per_s == pytest.approx(4.0)
    assert w.p99_ms is not None and w.p99_ms <= 10


def test_instances_add_up_and_one_without_a_baseline_is_left_out() -> None:
    older = Sample(0.0, {"nlp": scrape("nlp", "nlp", requests=10, started_at=1.0)})
    newer = Sample(
        10.0,
        {
            "nlp": scrape("nlp", "nlp", requests=30, started_at=1.0),
            # started inside the window: all of its 10 count
            "nlp-1": scrape("nlp-1", "nlp", requests=10, started_at=5.0),
            # running before the window but not sampled then: no difference to take
            "nlp-2": scrape("nlp-2", "nlp", requests=999, started_at=-50.0),
        },
    )
    w = window(older, newer, "nlp")
    assert w is not None and w.requests_per_s == pytest.approx(3.0)
    # An instance not read in the sample before (a timeout) gives no jump of its lifetime.
    unread = Sample(5.0, {"nlp": scrape("nlp", "nlp", started_at=1.0)})
    gap = window(unread, newer, "nlp")
    assert gap is not None and gap.requests_per_s == pytest.approx(2.0)  # nlp-1's 10 in 5 s
    assert window(older, newer, "vision") is None
    points = series([older, newer, newer], "nlp")
    assert [t for t, _ in points] == [10.0]  # the same sample twice is no window


def test_recent_reaches_back_to_the_last_sample_at_least_that_old() -> None:
    samples = [
        Sample(float(t), {"a": scrape("a", "a", requests=float(t))}) for t in range(0, 100, 5)
    ]
    w = recent(samples, "a", 60)
    assert w is not None and w.seconds == 60
    assert recent(samples[:1], "a", 60) is None


def test_topic_flow_is_published_less_finished_with_dead_letters_over_restarts() -> None:
    totals = Totals()
    gateway = {("published", "reviews.submitted", "success"): 10.0}
    sentiment = {
        ("delivered", "reviews.submitted", "success"): 6.0,
        ("delivered", "reviews.submitted", "retry"): 2.0,
    }
    totals.add(
        Sample(
            0.0,
            {
                "gateway": scrape("gateway", "gateway", sidecar_started_at=1.0, pubsub=gateway),
                "sentiment": scrape(sidecar_started_at=1.0, pubsub=sentiment),
            },
        )
    )
    flow = topic_flow(totals, "reviews.submitted", ["sentiment", "nlp"])
    assert flow.published == 10
    by_app = {c.app_id: c for c in flow.consumers}
    assert by_app["sentiment"].lag == 4 and by_app["sentiment"].retries == 2
    assert by_app["nlp"].lag == 10  # a subscriber that finished nothing yet
    # sentiment's sidecar restarts: its counters start again, the totals go on.
    gateway = {("published", "reviews.submitted", "success"): 12.0}
    sentiment = {
        ("delivered", "reviews.submitted", "success"): 5.0,
        ("delivered", "reviews.submitted", "drop"): 1.0,
    }
    dead = {("delivered", "reviews.submitted.dead-letter", "success"): 1.0}
    totals.add(
        Sample(
            5.0,
            {
                "gateway": scrape(
                    "gateway", "gateway", sidecar_started_at=1.0, pubsub={**gateway, **dead}
                ),
                "sentiment": scrape(sidecar_started_at=4.0, pubsub=sentiment),
            },
        )
    )
    flow = topic_flow(totals, "reviews.submitted", ["sentiment"])
    assert flow.published == 12
    assert {c.app_id: c.lag for c in flow.consumers} == {"sentiment": 0}  # 6 + 6 finished
    assert flow.dead_letters == 1
    # Published in batches, the events are not counted: no lag to tell.
    batch = {("batches", "texts.analyzed", "success"): 3.0}
    totals.add(Sample(6.0, {"sentiment": scrape(sidecar_started_at=4.0, pubsub=batch)}))
    texts = topic_flow(totals, "texts.analyzed", ["gateway"])
    assert texts.batches == 3 and [c.lag for c in texts.consumers] == [None]


def test_a_bulk_consumer_is_counted_by_its_app_or_not_at_all() -> None:
    totals = Totals()
    published = {("published", "reviews.submitted", "success"): 5.0}
    batches = {("delivered_batches", "reviews.submitted", "success"): 2.0}
    handled = {
        ("handled", "reviews.submitted", "success"): 4.0,
        ("handled", "reviews.submitted", "drop"): 1.0,
    }
    totals.add(
        Sample(
            0.0,
            {
                "gateway": scrape("gateway", "gateway", sidecar_started_at=1.0, pubsub=published),
                "nlp": scrape(
                    "nlp",
                    "nlp",
                    started_at=1.0,
                    sidecar_started_at=1.0,
                    pubsub=batches,
                    events=handled,
                ),
                "search": scrape("search", "search", sidecar_started_at=1.0, pubsub=batches),
            },
        )
    )
    flow = {
        c.app_id: c for c in topic_flow(totals, "reviews.submitted", ["nlp", "search"]).consumers
    }
    assert (flow["nlp"].delivered, flow["nlp"].lag) == (5, 0)  # its own count, per event
    assert (flow["search"].delivered, flow["search"].lag) == (None, None)  # batches only
    # The app restarts: its own counter starts again, the total goes on.
    handled = {("handled", "reviews.submitted", "success"): 1.0}
    totals.add(Sample(5.0, {"nlp": scrape("nlp", "nlp", started_at=4.0, events=handled)}))
    nlp = topic_flow(totals, "reviews.submitted", ["nlp"]).consumers[0]
    assert nlp.delivered == 6 and nlp.lag == 0


def test_pubsub_counts_read_daprds_counters() -> None:
    topic = 'component="pubsub",topic="reviews.submitted"'
    text = "\n".join(
        [
            "# TYPE dapr_component_pubsub_egress_count counter",
            f'dapr_component_pubsub_egress_count{{{topic},success="true"}} 3',
            f'dapr_component_pubsub_egress_count{{{topic},success="false"}} 1',
            "# TYPE dapr_component_pubsub_egress_bulk_count counter",
            f'dapr_component_pubsub_egress_bulk_count{{{topic},success="true"}} 2',
            "# TYPE dapr_component_pubsub_ingress_count counter",
            f'dapr_component_pubsub_ingress_count{{{topic},process_status="success"}} 2',
            "# TYPE dapr_component_pubsub_ingress_bulk_event_count counter",
            f'dapr_component_pubsub_ingress_bulk_event_count{{{topic},process_status="SUCCESS"}} 5',
            "",
        ]
    )
    assert pubsub_counts(text) == {
        ("published", "reviews.submitted", "success"): 3,
        ("published", "reviews.submitted", "failure"): 1,
        ("batches", "reviews.submitted", "success"): 2,
        ("delivered", "reviews.submitted", "success"): 2,
        # daprd counts bulk deliveries, not their events: batches
        ("delivered_batches", "reviews.submitted", "success"): 5,
    }
    app = "\n".join(
        [
            "# TYPE consort_events_total counter",
            'consort_events_total{topic="reviews.submitted",status="SUCCESS"} 4',
            'consort_events_total{topic="reviews.submitted",status="DROP"} 1',
            "",
        ]
    )
    assert event_counts(app) == {
        ("handled", "reviews.submitted", "success"): 4,
        ("handled", "reviews.submitted", "drop"): 1,
    }


def test_an_instance_is_as_well_as_the_worse_of_its_app_and_sidecar() -> None:
    ready = {"state": "ready", "pid": 1}
    assert instance_state([ready, ready]) == "ready"
    assert instance_state([ready, {"state": "restarting", "pid": None}]) == "restarting"
    assert instance_state([{"state": "ready", "pid": None}, ready]) == "exited"
    assert instance_state([None, ready]) == "stopped"


def test_the_kit_counts_each_answered_event_by_topic_and_outcome() -> None:
    metrics = Metrics("nlp")
    count_deliveries(metrics.events)
    try:
        body = {"topic": "reviews.submitted", "entries": [{"entryId": "a"}, {"entryId": "b"}]}
        [(a, _), (b, _)] = deliveries(body)
        delivery_response({a: Delivery.SUCCESS, b: Delivery.DROP})
        text = generate_latest(metrics.registry).decode()
        assert event_counts(text) == {
            ("handled", "reviews.submitted", "success"): 1,
            ("handled", "reviews.submitted", "drop"): 1,
        }
    finally:
        count_deliveries(gateway_kit.metrics.events)  # the imported gateway's, as before
