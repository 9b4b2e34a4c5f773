"""nlp, text analysis and the event-driven review pipeline, through real sidecars."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from consort.contracts.events import REVIEWS_SUBMITTED
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually

REVIEW = "The battery is awful but the screen is gorgeous. I bought it from Apple in London."


@pytest.fixture
def api(system: LocalSystem) -> httpx.Client:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=15
    ) as client:
        yield client


def test_nlp_through_its_sidecar_gives_entities_with_offsets(system: LocalSystem) -> None:
    text = "Apple is looking at buying U.K. startup for $1 billion."
    response = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/invoke/nlp/method/v1/nlp",
        json={"text": text, "tokens": True},
        headers=system.sidecar_headers("gateway"),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    entities = {(e["text"], e["label"]) for e in body["entities"]}
    assert {("Apple", "ORG"), ("U.K.", "GPE"), ("$1 billion", "MONEY")} <= entities
    for entity in body["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert body["tokens"][0] == {
        "text": "Apple",
        "start": 0,
        "end": 5,
        "lemma": "Apple",
        "pos": "PROPN",
    }
    assert body["model"]["version"] == "3.8.0"


def test_text_analyze_gives_opposite_aspects(api: httpx.Client) -> None:
    response = api.post("/v1/text/analyze", json={"text": REVIEW})
    assert response.status_code == 200, response.text
    body = response.json()
    aspects = {a["aspect"]: a["label"] for a in body["aspects"]}
    assert aspects["battery"] == "negative"
    assert aspects["screen"] == "positive"
    assert "Apple" in aspects
    assert body["sentiment"]["model"]["name"] == "vader"
    assert body["nlp"]["tokens"] is None


def test_text_analyze_validates_like_its_parts(api: httpx.Client) -> None:
    response = api.post("/v1/text/analyze", json={"text": "x" * 5001})
    assert response.status_code == 422
    assert response.json()["errors"][0]["limit"] == 5000


def review_status(api: httpx.Client, review_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/reviews/{review_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_reviews_are_accepted_then_joined(api: httpx.Client) -> None:
    mine = f"review-{uuid.uuid4().hex[:8]}"
    response = api.post(
        "/v1/reviews",
        json={"reviews": [{"id": mine, "text": REVIEW, "product": "phone"}, {"text": "Fine."}]},
    )
    assert response.status_code == 202
    ids = response.json()["ids"]
    assert ids[0] == mine and len(ids) == 2
    done = eventually(lambda: review_status(api, mine), lambda r: r["status"] == "complete")
    assert done["product"] == "phone"
    assert {e["text"] for e in done["entities"]["entities"]} >= {"Apple", "London"}
    assert done["sentiment"]["label"] == "positive"
    assert {a["aspect"]: a["label"] for a in done["aspects"]}["battery"] == "negative"
    eventually(lambda: review_status(api, ids[1]), lambda r: r["status"] == "complete")


def test_resubmitting_a_review_does_not_analyze_it_again(
    api: httpx.Client, system: LocalSystem
) -> None:
    mine = f"again-{uuid.uuid4().hex[:8]}"
    api.post("/v1/reviews", json={"reviews": [{"id": mine, "text": REVIEW}]})
    first = eventually(lambda: review_status(api, mine), lambda r: r["status"] == "complete")
    assert api.post("/v1/reviews", json={"reviews": [{"id": mine, "text": REVIEW}]}).json() == {
        "ids": [mine]
    }
    time.sleep(1)  # a second analysis, if there were one, would land within this
    assert review_status(api, mine) == first
    log = system.supervisor.get("gateway").log_path.read_text()
    assert log.count(f"review {mine} complete") == 1


def test_unknown_review_is_a_404(api: httpx.Client) -> None:
    response = api.get("/v1/reviews/no-such-review")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reviews": []}, "body.reviews"),
        ({"reviews": [{"text": "ok"}] * 101}, "body.reviews"),
        ({"reviews": [{"id": "has space", "text": "ok"}]}, "body.reviews.0.id"),
        ({"reviews": [{"text": "x" * 5001}]}, "body.reviews.0.text"),
    ],
    ids=["none", "too-many", "bad-id", "too-long"],
)
def test_bad_submissions_are_422(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = api.post("/v1/reviews", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_a_poison_review_goes_to_the_dead_letter_topic(
    api: httpx.Client, system: LocalSystem
) -> None:
    event_id = f"poison-review-{uuid.uuid4()}"
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "tests",
        "type": "consort.reviews.submitted.v1",
        "datacontenttype": "application/json",
        "data": {
            "review_id": "too-long",
            "text": "x" * 6000,  # over the limit: nlp and sentiment both refuse it
            "submitted_at": datetime.now(UTC).isoformat(),
        },
    }
    response = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/publish/pubsub/{REVIEWS_SUBMITTED}",
        content=json.dumps(envelope),
        headers={
            "content-type": "application/cloudevents+json",
            **system.sidecar_headers("gateway"),
        },
    )
    assert response.status_code == 204

    def dead_ids() -> list[str]:
        body = api.get(f"/v1/ops/dead-letters/{REVIEWS_SUBMITTED}").json()
        return [d["id"] for d in body["dead_letters"]]

    eventually(dead_ids, lambda ids: event_id in ids)


def test_no_review_is_lost_or_doubled_when_nlp_is_killed(
    api: httpx.Client, system: LocalSystem
) -> None:
    batch = uuid.uuid4().hex[:6]
    ids = [f"k{batch}-{i}" for i in range(200)]
    texts = [f"Review {i}: the battery is awful but the screen is gorgeous." for i in range(200)]

    def submit(chunk: range) -> None:
        reviews = [{"id": ids[i], "text": texts[i]} for i in chunk]
        assert api.post("/v1/reviews", json={"reviews": reviews}).status_code == 202

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(submit, [range(i, i + 50) for i in range(0, 200, 50)]))
    system.stop_app("nlp", kill=True)  # SIGKILL while the reviews are in flight
    pending = [i for i in ids if review_status(api, i)["status"] == "pending"]
    assert pending, "nlp finished everything before it was killed: the test proves nothing"
    system.start_app("nlp")
    system.wait_app("nlp")

    def statuses() -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda i: review_status(api, i)["status"], ids))

    eventually(statuses, lambda s: s.count("complete") == 200, deadline_s=120)
    log = system.supervisor.get("gateway").log_path.read_text()
    assert all(log.count(f"review {i} complete") == 1 for i in ids)


def coalesced(system: LocalSystem, target: str) -> tuple[float, float]:
    """The gateway's trips to `target` so far, and the calls they carried (its /metrics)."""
    text = httpx.get(f"{system.url('gateway')}/metrics", timeout=5).text
    found = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f'consort_coalesced_call_items_{part}{{target="{target}"}}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found["count"], found["sum"]


def test_concurrent_requests_share_trips_and_each_gets_its_own_answer(
    api: httpx.Client, system: LocalSystem
) -> None:
    words = ("gorgeous", "awful")
    run = uuid.uuid4().hex
    texts = [f"Coalescing {run} sample {i}: the screen is {words[i % 2]}." for i in range(96)]

    def analyze(text: str) -> tuple[str, httpx.Response]:
        return text, api.post("/v1/text/analyze", json={"text": text})

    trips_before, calls_before = coalesced(system, "sentiment/v1/sentiment")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(analyze, texts))
    for text, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        # Each caller got the answer to its own text, not a neighbour's in the batch.
        assert body["sentiment"]["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        expected = "positive" if "gorgeous" in text else "negative"
        assert body["sentiment"]["label"] == expected, (text, body["sentiment"])
        sentences = body["nlp"]["sentences"]
        assert "".join(s["text"] for s in sentences).replace(" ", "") == text.replace(" ", "")
    trips, calls = coalesced(system, "sentiment/v1/sentiment")
    assert calls - calls_before == len(texts)
    # Sixteen clients at once: some trips carried several of their calls.
    assert trips - trips_before < len(texts), (trips - trips_before, calls - calls_before)
