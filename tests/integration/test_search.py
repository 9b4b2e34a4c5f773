"""The search service (Rust) through real sidecars: the gateway's `/v1/embeddings` and
`/v1/search/...` forward to it, its answers validate against the generated OpenAPI
documents, its index lives in the state store and survives a restart, and it consumes
`reviews.submitted` and publishes `reviews.duplicate-suspected` on the real broker.

A system of its own (gateway and search, with Redis, placement, scheduler, sentry and
Zipkin): the reviews pipeline needs no nlp or sentiment for search to index reviews.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from consort.contracts.events import REVIEWS_DUPLICATE_SUSPECTED, REVIEWS_SUBMITTED
from consort.contracts.search import (
    DIMENSIONS,
    EMBEDDING_MODEL,
    MAX_EMBED_TEXTS,
    MAX_K,
    ReviewDuplicateSuspected,
)
from consort.dev.observe import fetch_trace, span_tree
from consort.dev.runtime import REPO
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from tests.conftest import _systems
from tests.integration.helpers import eventually, needs_redis_streams

APPS = ["search", "gateway"]
OPENAPI = REPO / "contracts" / "openapi"
EVENT_SCHEMAS = REPO / "contracts" / "events"


@pytest.fixture(scope="module")
def search_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("search"),
        InfraPorts.free(),
        extra_env={"SEARCH_DUPLICATE_THRESHOLD": "0.85"},
    )
    _systems.append(local)
    try:
        local.start(APPS, deadline_s=120)
        yield local
    finally:
        local.stop()
        _systems.remove(local)


@pytest.fixture
def api(search_system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=search_system.url("gateway"), headers=search_system.api_headers, timeout=30
    ) as client:
        yield client


def direct(
    system: LocalSystem,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    **request: Any,
) -> httpx.Response:
    """Call the search service as the gateway's code does: through the gateway's sidecar."""
    return httpx.request(
        method,
        f"{system.sidecar_url('gateway')}/v1.0/invoke/search/method/{path.lstrip('/')}",
        headers={**system.sidecar_headers("gateway"), **(headers or {})},
        timeout=30,
        **request,
    )


def _schema(document: str, pointer: str) -> dict[str, Any]:
    doc = json.loads((OPENAPI / document).read_text())
    return {"$ref": pointer, "components": doc["components"]}


def assert_answer_validates(
    document: str, path: str, method: str, response: httpx.Response
) -> None:
    """The answer's body validates against the response schema its OpenAPI document gives
    for this path, method and status."""
    doc = json.loads((OPENAPI / document).read_text())
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{status} is not an answer of {method} {path}"
    content = operation["responses"][status].get("content", {})
    media = response.headers.get("content-type", "").split(";")[0]
    if not content:
        assert not response.content, response.text
        return
    assert media in content or "application/json" in content, (media, list(content))
    schema = (content.get(media) or content["application/json"]).get("schema")
    if not schema:  # the problem+json entries name the Problem model instead
        schema = operation["responses"][status].get("model") or {
            "$ref": "#/components/schemas/Problem"
        }
    jsonschema.validate(
        response.json(),
        {**schema, "components": doc["components"]},
        cls=jsonschema.Draft202012Validator,
    )


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- embeddings ---------------------------------------------------------------------------


def test_embeddings_through_the_gateway(api: httpx.Client, search_system: LocalSystem) -> None:
    texts = [
        "The battery died after two days.",
        "Battery life is terrible: it ran out within 48 hours.",
        "The delivery driver was friendly and on time.",
    ]
    response = api.post("/v1/embeddings", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert_answer_validates("gateway.json", "/v1/embeddings", "POST", response)
    body = response.json()
    assert body["model"] == EMBEDDING_MODEL.model_dump()
    assert body["dimensions"] == DIMENSIONS
    vectors = body["embeddings"]
    assert [len(v) for v in vectors] == [DIMENSIONS] * 3
    assert all(abs(norm(v) - 1) < 1e-4 for v in vectors)
    assert dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]) + 0.2
    assert all(0 < n <= 256 for n in body["tokens"])
    assert len(response.headers["x-trace-id"]) == 32

    # The service's own answer, through the sidecars, validates against its contract.
    own = direct(search_system, "POST", "v1/embeddings", json={"texts": texts[:1]})
    assert own.status_code == 200, own.text
    assert_answer_validates("search.json", "/v1/embeddings", "POST", own)
    assert own.json()["embeddings"][0] == pytest.approx(vectors[0], abs=1e-5)


def test_bad_input_is_a_problem_naming_the_field_and_the_limit(
    api: httpx.Client, search_system: LocalSystem
) -> None:
    too_many = {"texts": ["a text"] * (MAX_EMBED_TEXTS + 1)}
    for response, document, path in (
        (api.post("/v1/embeddings", json=too_many), "gateway.json", "/v1/embeddings"),
        (
            direct(search_system, "POST", "v1/embeddings", json=too_many),
            "search.json",
            "/v1/embeddings",
        ),
    ):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["errors"][0]["field"] == "body.texts"
        assert problem["errors"][0]["limit"] == MAX_EMBED_TEXTS
        assert problem["trace_id"]
        assert_answer_validates(document, path, "POST", response)

    # The service itself refuses what the gateway would (a client of its sidecar).
    long_text = direct(search_system, "POST", "v1/embeddings", json={"texts": ["x" * 5001]})
    assert long_text.status_code == 422
    assert long_text.json()["errors"][0] == {
        "field": "body.texts.0",
        "message": "String should have at most 5000 characters",
        "limit": 5000,
    }
    not_json = direct(
        search_system,
        "POST",
        "v1/embeddings",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert not_json.json()["type"] == "urn:consort:problem:malformed-json"
    bad_name = direct(search_system, "POST", "v1/collections/Bad!/query", json={"text": "x"})
    assert bad_name.status_code == 422
    assert bad_name.json()["errors"][0]["field"] == "path.name"
    bad_k = api.post("/v1/search/collections/faq/query", json={"text": "x", "k": MAX_K + 1})
    assert bad_k.status_code == 422
    assert bad_k.json()["errors"][0]["limit"] == MAX_K


def test_the_app_answers_its_own_sidecar_only(search_system: LocalSystem) -> None:
    response = httpx.post(
        f"{search_system.url('search')}/v1/embeddings", json={"texts": ["hello"]}, timeout=10
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:consort:problem:unauthorized"
    assert httpx.get(f"{search_system.url('search')}/healthz", timeout=5).status_code == 200


# -- collections --------------------------------------------------------------------------

FAQ = [
    {
        "id": "refund",
        "text": "How do I get my money back for an order?",
        "metadata": {"topic": "billing"},
    },
    {
        "id": "invoice",
        "text": "Where can I download an invoice for my purchase?",
        "metadata": {"topic": "billing"},
    },
    {
        "id": "password",
        "text": "I forgot my password and cannot log in.",
        "metadata": {"topic": "account"},
    },
    {
        "id": "shipping",
        "text": "How long does delivery take to Canada?",
        "metadata": {"topic": "shipping", "days": 7},
    },
]


def test_index_query_filter_and_delete(api: httpx.Client, search_system: LocalSystem) -> None:
    name = unique("faq")
    created = api.post(f"/v1/search/collections/{name}/documents", json={"documents": FAQ})
    assert created.status_code == 201, created.text
    assert_answer_validates(
        "gateway.json", "/v1/search/collections/{name}/documents", "POST", created
    )
    assert created.json()["count"] == len(FAQ)

    query = api.post(
        f"/v1/search/collections/{name}/query", json={"text": "I want a refund", "k": 2}
    )
    assert query.status_code == 200, query.text
    assert_answer_validates("gateway.json", "/v1/search/collections/{name}/query", "POST", query)
    matches = query.json()["matches"]
    assert [m["id"] for m in matches][0] == "refund"
    assert len(matches) == 2 and matches[0]["score"] > matches[1]["score"]
    assert matches[0]["metadata"] == {"topic": "billing"}

    own = direct(
        search_system, "POST", f"v1/collections/{name}/query", json={"text": "login problems"}
    )
    assert own.status_code == 200
    assert_answer_validates("search.json", "/v1/collections/{name}/query", "POST", own)
    assert own.json()["matches"][0]["id"] == "password"

    filtered = api.post(
        f"/v1/search/collections/{name}/query",
        json={"text": "I want a refund", "filter": {"topic": "shipping"}},
    ).json()["matches"]
    assert [m["id"] for m in filtered] == ["shipping"]

    # The same id again replaces the document (no second copy).
    again = api.post(
        f"/v1/search/collections/{name}/documents",
        json={"documents": [{"id": "refund", "text": "Refunds take five working days."}]},
    )
    assert again.status_code == 200 and again.json()["count"] == len(FAQ)

    assert api.delete(f"/v1/search/collections/{name}/documents/refund").status_code == 204
    assert api.delete(f"/v1/search/collections/{name}/documents/refund").status_code == 404
    info = api.get(f"/v1/search/collections/{name}")
    assert info.status_code == 200 and info.json()["count"] == len(FAQ) - 1
    assert api.delete(f"/v1/search/collections/{name}").status_code == 204
    missing = api.post(f"/v1/search/collections/{name}/query", json={"text": "refund"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert_answer_validates("gateway.json", "/v1/search/collections/{name}/query", "POST", missing)


def test_the_reviews_collection_is_written_by_events_only(api: httpx.Client) -> None:
    response = api.post(
        "/v1/search/collections/reviews/documents",
        json={"documents": [{"id": "x", "text": "sneaky"}]},
    )
    assert response.status_code == 409, response.text
    assert response.json()["type"] == "urn:consort:problem:collection-read-only"


def test_the_index_survives_a_restart(api: httpx.Client, search_system: LocalSystem) -> None:
    name = unique("restart")
    assert (
        api.post(f"/v1/search/collections/{name}/documents", json={"documents": FAQ}).status_code
        == 201
    )
    before = api.post(f"/v1/search/collections/{name}/query", json={"text": "shipping time"}).json()
    search_system.stop_app("search", kill=True)
    search_system.start_app("search")
    search_system.wait_app("search", deadline_s=60)
    after = eventually(
        lambda: api.post(f"/v1/search/collections/{name}/query", json={"text": "shipping time"}),
        lambda r: r.status_code == 200,
        deadline_s=30,
    ).json()
    assert [m["id"] for m in after["matches"]] == [m["id"] for m in before["matches"]]
    assert [m["score"] for m in after["matches"]] == pytest.approx(
        [m["score"] for m in before["matches"]], abs=1e-6
    )


# -- events -------------------------------------------------------------------------------


def stream(system: LocalSystem, topic: str) -> list[dict[str, Any]]:
    """Every CloudEvent on `topic`, read from its Redis stream (what the broker holds); the
    test skips from here on a profile whose broker keeps no events nobody subscribes to."""
    needs_redis_streams(system, topic)
    cli = shutil.which("redis-cli") or str(Path(system.runtime.redis_server).parent / "redis-cli")
    out = subprocess.run(
        [cli, "-p", str(system.ports.redis), "--raw", "XRANGE", topic, "-", "+"],
        capture_output=True,
        text=True,
        check=True,
        env=system.redis_cli_env(),
    ).stdout.splitlines()
    return [json.loads(v) for f, v in zip(out, out[1:], strict=False) if f == "data"]


def events_handled(system: LocalSystem) -> float:
    """How many reviews.submitted events the search app has handled (its /metrics)."""
    text = httpx.get(f"{system.url('search')}/metrics", timeout=5).text
    wanted = f'consort_events_total{{topic="{REVIEWS_SUBMITTED}",status="SUCCESS"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


def test_reviews_are_indexed_from_events_and_duplicates_reported(
    api: httpx.Client, search_system: LocalSystem
) -> None:
    tag = uuid.uuid4().hex[:6]
    first, dup, other = f"bat-{tag}", f"bat2-{tag}", f"ship-{tag}"
    submitted = api.post(
        "/v1/reviews",
        json={
            "reviews": [
                {
                    "id": first,
                    "text": "The battery dies after one day, really disappointing.",
                    "product": "phone",
                },
                {
                    "id": other,
                    "text": "Shipping was fast and the box arrived intact.",
                    "product": "phone",
                },
            ]
        },
    )
    assert submitted.status_code == 202, submitted.text
    # Submitted later: the near-duplicate of the first.
    assert (
        api.post(
            "/v1/reviews",
            json={
                "reviews": [
                    {
                        "id": dup,
                        "text": "Really disappointing: the battery dies after one day.",
                        "product": "phone",
                    }
                ]
            },
        ).status_code
        == 202
    )

    similar = eventually(
        lambda: api.get(f"/v1/reviews/{dup}/similar", params={"k": 2}),
        lambda r: r.status_code == 200 and bool(r.json()["matches"]),
        deadline_s=30,
    )
    assert_answer_validates("gateway.json", "/v1/reviews/{review_id}/similar", "GET", similar)
    matches = similar.json()["matches"]
    assert matches[0]["id"] == first, matches
    assert matches[0]["metadata"]["product"] == "phone"
    assert all(m["id"] != dup for m in matches)

    events = eventually(
        lambda: [
            e
            for e in stream(search_system, REVIEWS_DUPLICATE_SUSPECTED)
            if e["data"]["review_id"] == dup
        ],
        lambda found: bool(found),
        deadline_s=30,
    )
    event = events[0]
    assert event["id"] == f"{dup}:duplicate-suspected"
    assert event["type"] == "consort.reviews.duplicate-suspected.v1"
    assert event["source"] == "search"
    payload = ReviewDuplicateSuspected.model_validate(event["data"])
    assert payload.duplicate_of == first and payload.score >= 0.85
    schema = json.loads((EVENT_SCHEMAS / "reviews.duplicate-suspected.v1.schema.json").read_text())
    jsonschema.validate(event["data"], schema, cls=jsonschema.Draft202012Validator)
    # The earlier review is no duplicate of the later one, and the unrelated one is none.
    reported = {e["data"]["review_id"] for e in stream(search_system, REVIEWS_DUPLICATE_SUSPECTED)}
    assert first not in reported and other not in reported

    unknown = api.get("/v1/reviews/never-submitted/similar")
    assert unknown.status_code == 404


def test_a_redelivered_review_changes_nothing(
    api: httpx.Client, search_system: LocalSystem
) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = [f"a-{tag}", f"b-{tag}"]
    texts = [
        "The screen cracked in my pocket on day one.",
        "My screen cracked on the first day in my pocket.",
    ]
    envelope = lambda i: {  # noqa: E731
        "specversion": "1.0",
        "id": f"{ids[i]}:submitted",
        "source": "tests",
        "type": "consort.reviews.submitted.v1",
        "datacontenttype": "application/json",
        "data": {"review_id": ids[i], "text": texts[i], "submitted_at": f"2026-01-01T00:00:0{i}Z"},
    }
    publish = lambda body: httpx.post(  # noqa: E731
        f"{search_system.sidecar_url('gateway')}/v1.0/publish/pubsub/{REVIEWS_SUBMITTED}",
        content=json.dumps(body),
        headers={
            "content-type": "application/cloudevents+json",
            **search_system.sidecar_headers("gateway"),
        },
        timeout=5,
    )
    for body in (envelope(0), envelope(1), envelope(1), envelope(0)):
        assert publish(body).status_code == 204
    eventually(
        lambda: api.get(f"/v1/reviews/{ids[1]}/similar"),
        lambda r: r.status_code == 200 and bool(r.json()["matches"]),
        deadline_s=30,
    )

    def reported() -> list[dict[str, Any]]:
        return [
            e
            for e in stream(search_system, REVIEWS_DUPLICATE_SUSPECTED)
            if e["data"]["review_id"] in ids
        ]

    count = api.get("/v1/search/collections/reviews").json()["count"]
    handled = events_handled(search_system)
    assert publish(envelope(0)).status_code == 204
    eventually(lambda: events_handled(search_system), lambda n: n > handled, deadline_s=30)
    assert api.get("/v1/search/collections/reviews").json()["count"] == count

    events = eventually(reported, lambda found: len(found) >= 1, deadline_s=30)
    # Each delivery of b publishes the same event (same id: one event for consumers);
    # a, submitted first, is never a duplicate, whatever arrived in between.
    assert {e["id"] for e in events} == {f"{ids[1]}:duplicate-suspected"}
    assert {e["data"]["duplicate_of"] for e in events} == {ids[0]}


def test_a_poison_review_goes_to_the_dead_letter_topic(
    api: httpx.Client, search_system: LocalSystem
) -> None:
    event_id = f"poison-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{search_system.sidecar_url('gateway')}/v1.0/publish/pubsub/{REVIEWS_SUBMITTED}",
        content=json.dumps(
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "tests",
                "type": "consort.reviews.submitted.v1",
                "datacontenttype": "application/json",
                "data": {"review_id": "no/slashes", "text": " "},
            }
        ),
        headers={
            "content-type": "application/cloudevents+json",
            **search_system.sidecar_headers("gateway"),
        },
        timeout=5,
    )
    assert response.status_code == 204
    # As the gateway received it from the dead-letter topic (on every profile).
    eventually(
        lambda: [
            d["id"]
            for d in api.get(f"/v1/ops/dead-letters/{REVIEWS_SUBMITTED}").json()["dead_letters"]
        ],
        lambda ids: event_id in ids,
        deadline_s=30,
    )


# -- first-class: info, catalog, metrics, traces, logs ------------------------------------


def test_catalog_and_info_describe_it_like_any_app(
    api: httpx.Client, search_system: LocalSystem
) -> None:
    def entry_of_search() -> dict[str, Any]:
        catalog = api.get("/v1/catalog")
        assert catalog.status_code == 200
        found: dict[str, Any] = next(
            s for s in catalog.json()["services"] if s["app_id"] == "search"
        )
        return found

    # The catalog gives each app 2 s; on a loaded machine a first ask may miss.
    entry = eventually(entry_of_search, lambda e: e["status"] == "available", deadline_s=20)
    info = entry["info"]
    assert info["models"] == [EMBEDDING_MODEL.model_dump()]
    assert info["publishes"] == [REVIEWS_DUPLICATE_SUSPECTED]
    assert info["subscribes"] == [REVIEWS_SUBMITTED]
    assert info["sidecar"]["runtime_version"]
    assert {c["name"] for c in info["sidecar"]["components"]} >= {"statestore", "pubsub"}
    subscription = info["sidecar"]["subscriptions"][0]
    assert subscription["dead_letter_topic"] == f"{REVIEWS_SUBMITTED}.dead-letter"
    # What the Rust app tells daprd is what its contract declares (apps/search/openapi.py).
    from apps.search.openapi import dapr_subscribe

    served = httpx.get(
        f"{search_system.url('search')}/dapr/subscribe",
        headers=search_system.app_headers("search"),
        timeout=5,
    ).json()
    import asyncio

    assert served == asyncio.run(dapr_subscribe())


def test_metrics_and_readiness(api: httpx.Client, search_system: LocalSystem) -> None:
    api.post("/v1/embeddings", json={"texts": ["metrics please"]})
    text = httpx.get(f"{search_system.url('search')}/metrics", timeout=5).text
    assert 'consort_http_requests_total{route="/v1/embeddings",method="POST",status="200"}' in text
    assert "consort_model_inference_seconds_count" in text
    assert 'consort_app_info{app="search"' in text
    ready = httpx.get(f"{search_system.url('search')}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_its_spans_join_the_gateways_trace(api: httpx.Client, search_system: LocalSystem) -> None:
    response = api.post("/v1/embeddings", json={"texts": [unique("trace me")]})
    assert response.status_code == 200
    trace_id = response.headers["x-trace-id"]
    assert search_system.zipkin_url is not None
    wanted = {"gateway app", "gateway daprd", "search daprd", "search app"}

    def components(spans: list[dict[str, Any]]) -> set[str]:
        found: set[str] = set()
        todo = span_tree(spans)
        while todo:
            node = todo.pop()
            found.add(node.component)
            todo.extend(node.children)
        return found

    spans = eventually(
        lambda: fetch_trace(str(search_system.zipkin_url), trace_id),
        lambda spans: wanted <= components(spans),
        deadline_s=20,
    )
    roots = span_tree(spans)
    assert len(roots) == 1, [r.label for r in roots]
    ours = [
        s
        for s in spans
        if s["localEndpoint"]["serviceName"] == "search" and s.get("kind") == "SERVER"
    ]
    # Zipkin keeps span names in lower case.
    mine = [s for s in ours if s["name"] == "post /v1/embeddings"]
    assert len(mine) == 1, [s["name"] for s in spans]
    assert mine[0]["tags"]["http.route"] == "/v1/embeddings"
    assert mine[0]["tags"]["http.status_code"] == "200"
    # Its log lines carry the app id, and the trace id of the request they belong to.
    refused = api.post("/v1/search/collections/never-made/query", json={"text": "anything"})
    assert refused.status_code == 404
    trace_of_refusal = refused.json()["trace_id"]
    log_path = Path(search_system.supervisor.get("search").log_path)

    def entries() -> list[dict[str, Any]]:
        lines = log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    logged = eventually(
        entries, lambda es: any(e.get("trace_id") == trace_of_refusal for e in es), deadline_s=5
    )
    assert all(e["app_id"] == "search" for e in logged)
