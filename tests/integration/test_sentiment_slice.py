"""The first slice, through real sidecars: gateway -> Dapr -> Dapr -> sentiment."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from consort.contracts.events import TEXTS_ANALYZED
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually, unique_text


@pytest.fixture
def api(system: LocalSystem) -> httpx.Client:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=10
    ) as client:
        yield client


def stats(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/v1/text/stats")
    assert response.status_code == 200
    return response.json()


def publish(system: LocalSystem, envelope: dict[str, Any]) -> None:
    """Publish a CloudEvent as a producer would, through a real sidecar and the broker."""
    response = httpx.post(
        f"{system.sidecar_url('sentiment')}/v1.0/publish/pubsub/{TEXTS_ANALYZED}",
        content=json.dumps(envelope),
        headers={
            "content-type": "application/cloudevents+json",
            **system.sidecar_headers("sentiment"),
        },
        timeout=5,
    )
    assert response.status_code == 204, response.text


def analyzed_event(event_id: str, **data: Any) -> dict[str, Any]:
    payload = {
        "text_sha256": "a" * 64,
        "chars": 12,
        "label": "negative",
        "compound": -0.5,
        "cached": False,
        "model": {"name": "vader", "version": "3.3.2"},
        "analyzed_at": datetime.now(UTC).isoformat(),
        **data,
    }
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "tests",
        "type": "consort.texts.analyzed.v1",
        "datacontenttype": "application/json",
        "data": payload,
    }


def test_gateway_reaches_sentiment_through_dapr(api: httpx.Client) -> None:
    response = api.post(
        "/v1/text/sentiment", json={"text": "The battery is awful. But the screen is gorgeous!"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "vader", "version": "3.3.2"}
    assert [s["label"] for s in body["sentences"]] == ["negative", "positive"]
    assert body["sentences"][1]["start"] == 22
    assert len(response.headers["x-trace-id"]) == 32


def test_sentiment_answers_through_its_own_sidecar(system: LocalSystem) -> None:
    # The gateway's sidecar invokes sentiment by app id alone: name resolution works.
    response = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/invoke/sentiment/method/v1/sentiment",
        json={"text": "I love it"},
        headers=system.sidecar_headers("gateway"),
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["label"] == "positive"


def test_batch_keeps_order(api: httpx.Client) -> None:
    texts = ["Terrible, awful, broken.", "It is a table.", "Absolutely wonderful!"]
    response = api.post("/v1/text/sentiment/batch", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()["results"]] == ["negative", "neutral", "positive"]


def test_second_identical_request_is_served_from_state(
    api: httpx.Client, system: LocalSystem
) -> None:
    text = unique_text()
    first = api.post("/v1/text/sentiment", json={"text": text}).json()
    assert first["cached"] is False
    # This instance serves it from memory at once; the state store's shared cache (for
    # replicas and restarts) has it under the documented key within the write-behind's
    # 100 ms, read here through Dapr.
    second = api.post("/v1/text/sentiment", json={"text": text}).json()
    key = f"sentiment:3.3.2:{first['text_sha256']}"
    stored = eventually(
        lambda: httpx.get(
            f"{system.sidecar_url('sentiment')}/v1.0/state/statestore/{key}",
            headers=system.sidecar_headers("sentiment"),
        ),
        lambda r: r.status_code == 200,
        deadline_s=5,
    )
    assert stored.json()["compound"] == first["compound"]
    assert second["cached"] is True
    assert {k: v for k, v in second.items() if k != "cached"} == {
        k: v for k, v in first.items() if k != "cached"
    }


def test_each_analysis_is_delivered_as_an_event(api: httpx.Client) -> None:
    before = stats(api)
    assert api.post("/v1/text/sentiment", json={"text": unique_text()}).status_code == 200
    after = eventually(lambda: stats(api), lambda s: s["total"] >= before["total"] + 1)
    assert after["by_model"]["vader@3.3.2"] >= before["by_model"].get("vader@3.3.2", 0) + 1


def own_model() -> tuple[dict[str, str], str]:
    """A model version no other event names, so its count in the stats is this test's
    alone (announcements of earlier tests may still be arriving, batched)."""
    version = f"test-{uuid.uuid4().hex[:8]}"
    return {"name": "vader", "version": version}, f"vader@{version}"


def test_a_redelivered_event_changes_nothing(api: httpx.Client, system: LocalSystem) -> None:
    model, key = own_model()
    event = analyzed_event(f"redelivery-{uuid.uuid4()}", model=model)
    publish(system, event)
    eventually(lambda: stats(api), lambda s: s["by_model"].get(key) == 1)
    publish(system, event)  # the broker hands the same event out again
    log = system.supervisor.get("gateway").log_path
    eventually(log.read_text, lambda text: f"{event['id']} already applied" in text)
    assert stats(api)["by_model"][key] == 1


def test_racing_duplicates_count_once(api: httpx.Client, system: LocalSystem) -> None:
    model, key = own_model()
    event = analyzed_event(f"race-{uuid.uuid4()}", label="neutral", compound=0.0, model=model)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: publish(system, event), range(8)))
    log = system.supervisor.get("gateway").log_path
    eventually(log.read_text, lambda text: text.count(f"{event['id']} already applied") == 7)
    assert stats(api)["by_model"][key] == 1


def test_a_poison_event_goes_to_the_dead_letter_topic(
    api: httpx.Client, system: LocalSystem
) -> None:
    poison = analyzed_event(f"poison-{uuid.uuid4()}", label="ecstatic")
    publish(system, poison)

    def dead_ids() -> list[str]:
        body = api.get(f"/v1/ops/dead-letters/{TEXTS_ANALYZED}").json()
        return [d["id"] for d in body["dead_letters"]]

    eventually(dead_ids, lambda ids: poison["id"] in ids)
    assert "ecstatic" not in stats(api)["by_label"]  # never counted


@pytest.mark.parametrize(
    ("body", "field", "limit"),
    [
        ({"text": ""}, "body.text", 1),
        ({"text": "   \n "}, "body.text", None),
        ({"text": "a" * 5001}, "body.text", 5000),
        ({"text": 42}, "body.text", None),
        ({}, "body.text", None),
        ({"text": "fine", "lang": "en"}, "body.lang", None),
    ],
    ids=["empty", "blank", "too-long", "wrong-type", "missing", "unknown-field"],
)
def test_bad_text_is_a_422_naming_field_and_limit(
    api: httpx.Client, body: dict[str, Any], field: str, limit: int | None
) -> None:
    response = api.post("/v1/text/sentiment", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["trace_id"] == response.headers["x-trace-id"]
    (error,) = problem["errors"]
    assert error["field"] == field
    assert error.get("limit") == limit
    assert field in problem["detail"]


@pytest.mark.parametrize(
    ("texts", "limit"),
    [([], 1), (["ok"] * 65, 64), (["ok", ""], 1)],
    ids=["none", "65", "one-empty"],
)
def test_bad_batch_is_a_422_with_its_limit(api: httpx.Client, texts: list[str], limit: int) -> None:
    response = api.post("/v1/text/sentiment/batch", json={"texts": texts})
    assert response.status_code == 422
    assert response.json()["errors"][0]["limit"] == limit


def test_a_body_over_the_limit_is_a_413(api: httpx.Client) -> None:
    response = api.post(
        "/v1/text/sentiment",
        content=json.dumps({"text": "a" * 1_100_000}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0] == {
        "field": "body",
        "message": "must be at most 1048576 bytes",
        "limit": 1048576,
    }


def test_a_streamed_body_over_the_limit_is_a_413(api: httpx.Client) -> None:
    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"text": "'
        for _ in range(300):
            yield b"a" * 4096
        yield b'"}'

    response = api.post(
        "/v1/text/sentiment", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_non_json_is_a_415_and_malformed_json_a_400(api: httpx.Client) -> None:
    plain = api.post("/v1/text/sentiment", content="hello", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    assert "application/json" in plain.json()["detail"]
    broken = api.post(
        "/v1/text/sentiment", content="{nope", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["title"] == "Malformed JSON"


def test_unknown_route_is_a_problem(api: httpx.Client) -> None:
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
