"""The recommender through real sidecars: it learns from events, counts an event once,
serves cold starts, drops poison to the dead-letter topic, swaps models under load, and
serves its persisted snapshot at once after a restart.

Every test uses its own users and items (a random prefix): the session's recommender
is shared, and what other tests taught it must not matter here.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consort.contracts.events import INTERACTIONS_RECORDED
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually

#: Learning, training and restarts take seconds on two shared cores.
DEADLINE_S = 30


@pytest.fixture
def api(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=10
    ) as client:
        yield client


@pytest.fixture
def ns() -> str:
    """A prefix for this test's users, items and event ids."""
    return f"t{uuid.uuid4().hex[:8]}"


def record(api: httpx.Client, interactions: list[dict[str, Any]]) -> list[str]:
    response = api.post("/v1/interactions", json={"interactions": interactions})
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


def model(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/v1/ops/recommender/model")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def weights(api: httpx.Client, user: str) -> dict[str, float]:
    response = api.get(f"/v1/users/{user}/interactions")
    assert response.status_code == 200, response.text
    return {i["item"]: i["weight"] for i in response.json()["items"]}


def recommend(api: httpx.Client, user: str, k: int = 5) -> dict[str, Any]:
    response = api.get(f"/v1/recommendations/{user}", params={"k": k})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def baskets(ns: str, users: int, items: list[str], *, first: int = 0) -> list[dict[str, Any]]:
    """`users` users who each bought every one of `items` (ids `<ns>-<user>-<item>`)."""
    return [
        {
            "id": f"{ns}-{u}-{item}",
            "user": f"{ns}-u{u}",
            "item": f"{ns}-{item}",
            "kind": "purchase",
        }
        for u in range(first, first + users)
        for item in items
    ]


def wait_learnt(api: httpx.Client, user: str, items: int) -> dict[str, float]:
    return eventually(lambda: weights(api, user), lambda w: len(w) >= items, DEADLINE_S)


def record_and_learn(api: httpx.Client, interactions: list[dict[str, Any]]) -> None:
    """Record interactions and wait until the recommender has learnt every one (events
    are consumed concurrently, so not in the order they were sent)."""
    record(api, interactions)
    wanted: dict[str, set[str]] = {}
    for i in interactions:
        wanted.setdefault(i["user"], set()).add(i["item"])
    for user, items in wanted.items():
        eventually(lambda u=user: set(weights(api, u)), lambda seen, i=items: i <= seen, DEADLINE_S)


def retrain(api: httpx.Client) -> dict[str, Any]:
    """Retrain now and wait until the new models serve and their snapshot is saved."""
    response = api.post("/v1/ops/recommender/retrain")
    assert response.status_code == 202, response.text
    wanted = response.json()["next_version"]
    return eventually(
        lambda: model(api),
        lambda m: m["version"] >= wanted and m["snapshot"] and m["snapshot"]["version"] >= wanted,
        DEADLINE_S,
    )


def settled(api: httpx.Client) -> dict[str, Any]:
    """The model status once everything learnt is trained and saved (no retraining due)."""
    status = model(api)
    if status["events_since_training"] or status["training"]:
        status = retrain(api)
    return eventually(
        lambda: model(api),
        lambda m: (
            not m["training"]
            and m["events_since_training"] == 0
            and m["snapshot"] is not None
            and m["snapshot"]["version"] == m["version"]
        ),
        DEADLINE_S,
    )


def restart_recommender(system: LocalSystem) -> None:
    """SIGKILL the recommender and its sidecar, as a crash would, and start them again."""
    system.stop_app("recommender", kill=True)
    system.start_app("recommender")
    system.wait_app("recommender", deadline_s=DEADLINE_S)


# -- learning ----------------------------------------------------------------------------------
def test_recommendations_learn_from_events(api: httpx.Client, ns: str) -> None:
    # Nine users bought a, b and c; a tenth bought a and b: c is what it lacks.
    record_and_learn(api, baskets(ns, 9, ["a", "b", "c"]) + baskets(ns, 1, ["a", "b"], first=9))
    user = f"{ns}-u9"

    def top(body: dict[str, Any]) -> list[str]:
        return [i["item"] for i in body["items"]]

    body = eventually(
        lambda: recommend(api, user, k=1), lambda b: top(b) == [f"{ns}-c"], DEADLINE_S
    )
    assert body["cold_start"] is False
    (item,) = body["items"]
    assert item["reason"] in {"item-knn", "als", "hybrid"}
    assert item["because"] and set(item["because"]) <= {f"{ns}-a", f"{ns}-b"}
    # Items already seen are left out unless asked for.
    seen = api.get(f"/v1/recommendations/{user}", params={"k": 3, "include_seen": True}).json()
    assert {f"{ns}-a", f"{ns}-b"} <= {i["item"] for i in seen["items"]}

    similar = api.get(f"/v1/items/{ns}-a/similar", params={"k": 2}).json()
    assert similar["items"][0] == {
        "item": f"{ns}-b",
        "similarity": pytest.approx(1.0),
        "reason": "item-knn",
    }
    assert similar["items"][1]["item"] == f"{ns}-c"


def test_basket_completion_names_support_confidence_and_lift(api: httpx.Client, ns: str) -> None:
    # 8 of the 10 baskets with x and y also hold z; z appears nowhere else.
    record_and_learn(
        api,
        baskets(ns, 8, ["x", "y", "z"])
        + baskets(ns, 2, ["x", "y"], first=8)
        + baskets(ns, 5, ["w"], first=10),
    )
    status = retrain(api)
    response = api.post("/v1/baskets/complete", json={"items": [f"{ns}-x", f"{ns}-y"], "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] >= status["version"]
    assert body["rules"] > 0
    suggestion = next(s for s in body["suggestions"] if s["item"] == f"{ns}-z")
    transactions = status["users"]
    assert suggestion["confidence"] == pytest.approx(0.8)
    assert suggestion["support"] == pytest.approx(8 / transactions)
    assert suggestion["lift"] == pytest.approx(0.8 * transactions / 8)
    assert set(suggestion["because"]) <= {f"{ns}-x", f"{ns}-y"} and suggestion["because"]


def test_scheduled_retraining_picks_up_new_events(api: httpx.Client, ns: str) -> None:
    before = settled(api)
    record_and_learn(api, baskets(ns, 3, ["p", "q"]))
    # No retrain is asked for: the schedule (every 4 s in the tests) trains them in.
    after = eventually(
        lambda: model(api),
        lambda m: m["version"] > before["version"] and m["events_since_training"] == 0,
        DEADLINE_S,
    )
    assert after["events"] >= before["events"] + 6
    assert after["als"]["users"] >= before["users"] + 3


# -- idempotency -------------------------------------------------------------------------------
def test_an_event_id_sent_twice_counts_once(
    api: httpx.Client, system: LocalSystem, ns: str
) -> None:
    user = f"{ns}-u"
    first = {"id": f"{ns}-1", "user": user, "item": f"{ns}-a", "kind": "view", "weight": 2.0}
    log = system.supervisor.get("recommender").log_path
    assert record(api, [first]) == [f"{ns}-1"]
    wait_learnt(api, user, 1)
    assert record(api, [first]) == [f"{ns}-1"]
    eventually(log.read_text, lambda text: f"{ns}-1 already applied" in text, DEADLINE_S)
    assert weights(api, user) == {f"{ns}-a": 2.0}


def test_racing_duplicates_count_once(api: httpx.Client, system: LocalSystem, ns: str) -> None:
    user = f"{ns}-u"
    event = {
        "specversion": "1.0",
        "id": f"{ns}-race",
        "source": "tests",
        "type": "consort.interactions.recorded.v1",
        "datacontenttype": "application/json",
        "data": {
            "user": user,
            "item": f"{ns}-a",
            "kind": "purchase",
            "time": "2025-01-01T00:00:00Z",
        },
    }
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: publish(system, event), range(8)))
    log = system.supervisor.get("recommender").log_path
    eventually(
        log.read_text, lambda text: text.count(f"{ns}-race already applied") == 7, DEADLINE_S
    )
    assert weights(api, user) == {f"{ns}-a": 5.0}  # one purchase


def test_without_an_id_the_same_content_and_time_is_one_event(
    api: httpx.Client, system: LocalSystem, ns: str
) -> None:
    sent = {"user": f"{ns}-u", "item": f"{ns}-a", "time": "2025-01-01T12:00:00+00:00"}
    (one,) = record(api, [sent])
    (again,) = record(api, [sent])
    (later,) = record(api, [{**sent, "time": "2025-01-01T12:00:01+00:00"}])
    assert one == again != later
    log = system.supervisor.get("recommender").log_path
    eventually(log.read_text, lambda text: f"{one} already applied" in text, DEADLINE_S)
    eventually(lambda: weights(api, f"{ns}-u"), lambda w: w == {f"{ns}-a": 2.0}, DEADLINE_S)


# -- cold start and bad input ----------------------------------------------------------------------
def test_an_unknown_user_gets_popular_items(api: httpx.Client, ns: str) -> None:
    record_and_learn(api, baskets(ns, 2, ["a"]))
    body = recommend(api, f"{ns}-nobody", k=4)
    assert body["cold_start"] is True
    assert len(body["items"]) == 4
    assert {i["reason"] for i in body["items"]} == {"popular"}
    assert all(i["because"] == [] for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_concurrent_users_each_get_their_own_recommendations(
    api: httpx.Client, system: LocalSystem, ns: str
) -> None:
    record_and_learn(api, baskets(ns, 4, ["a", "b", "c"]))
    users = [f"{ns}-u{i % 4}" if i % 2 else f"{ns}-new{i}" for i in range(64)]
    ks = [1 + i % 7 for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda uk: recommend(api, *uk), zip(users, ks, strict=True)))
    for user, k, body in zip(users, ks, answers, strict=True):
        # Whether its request went alone or with others, each is answered for itself.
        assert body["user"] == user
        assert body["cold_start"] is user.startswith(f"{ns}-new"), body
        assert len(body["items"]) <= k
        if body["cold_start"]:
            assert body["items"] and {i["reason"] for i in body["items"]} == {"popular"}
        alone = recommend(api, user, k)
        if alone["model_version"] == body["model_version"]:  # no retraining in between
            assert alone == body


def test_a_batch_with_one_bad_request_is_422_naming_it(system: LocalSystem) -> None:
    response = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/invoke/recommender/method/v1/recommend/batch",
        json={"requests": [{"user": "ann", "k": 3}, {"user": "bob", "k": 1000}]},
        headers=system.sidecar_headers("gateway"),
        timeout=10,
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"].endswith("requests.1.k") and error["limit"] == 100, error


def test_an_unknown_item_has_no_similar_items(api: httpx.Client, ns: str) -> None:
    response = api.get(f"/v1/items/{ns}-never/similar")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert f"{ns}-never" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "field", "limit"),
    [
        ("/v1/recommendations/someone?k=0", "query.k", 1),
        ("/v1/recommendations/someone?k=101", "query.k", 100),
        ("/v1/items/a/similar?k=1000", "query.k", 100),
        (f"/v1/recommendations/{'u' * 201}", "path.user", 200),
    ],
    ids=["k-zero", "k-too-large", "similar-k-too-large", "user-too-long"],
)
def test_bad_reads_are_422_naming_field_and_limit(
    api: httpx.Client, path: str, field: str, limit: int
) -> None:
    response = api.get(path)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    (problem,) = response.json()["errors"]
    assert problem["field"] == field
    assert problem["limit"] == limit


@pytest.mark.parametrize(
    ("path", "body", "field", "limit"),
    [
        ("/v1/interactions", {"interactions": []}, "body.interactions", 1),
        (
            "/v1/interactions",
            {"interactions": [{"user": "u", "item": "i"}] * 1001},
            "body.interactions",
            1000,
        ),
        (
            "/v1/interactions",
            {"interactions": [{"user": "u", "item": "i", "weight": 0}]},
            "body.interactions.0.weight",
            0,
        ),
        (
            "/v1/interactions",
            {"interactions": [{"user": "u", "item": "i", "kind": "like"}]},
            "body.interactions.0.kind",
            None,
        ),
        (
            "/v1/interactions",
            {"interactions": [{"user": "", "item": "i"}]},
            "body.interactions.0.user",
            1,
        ),
        (
            "/v1/interactions",
            {"interactions": [{"user": "u", "item": "i", "time": "2025-01-01T00:00:00"}]},
            "body.interactions.0.time",
            None,
        ),
        ("/v1/baskets/complete", {"items": []}, "body.items", 1),
        ("/v1/baskets/complete", {"items": ["a"], "k": 0}, "body.k", 1),
    ],
    ids=[
        "no-interactions",
        "too-many",
        "weight-zero",
        "unknown-kind",
        "empty-user",
        "naive-time",
        "empty-basket",
        "basket-k-zero",
    ],
)
def test_bad_writes_are_422_naming_field_and_limit(
    api: httpx.Client, path: str, body: dict[str, Any], field: str, limit: int | None
) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problems = {p["field"]: p for p in response.json()["errors"]}
    assert field in problems
    assert problems[field].get("limit") == limit


def publish(system: LocalSystem, envelope: dict[str, Any]) -> None:
    """Publish a CloudEvent as an external producer would, through a real sidecar."""
    response = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/publish/pubsub/{INTERACTIONS_RECORDED}",
        content=json.dumps(envelope),
        headers={
            "content-type": "application/cloudevents+json",
            **system.sidecar_headers("gateway"),
        },
        timeout=5,
    )
    assert response.status_code == 204, response.text


VALID = {"kind": "view", "time": "2025-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "data",
    [
        {"user": "{ns}-u", **VALID},
        {"user": "{ns}-u", "item": "{ns}-i", **VALID, "kind": "stare"},
        {"user": "{ns}-u", "item": "{ns}-i", **VALID, "weight": -1},
        {"user": "{ns}-u", "item": "{ns}-i", "kind": "view", "time": "yesterday"},
        "not an object",
    ],
    ids=["no-item", "unknown-kind", "negative-weight", "bad-time", "not-an-object"],
)
def test_a_malformed_event_goes_to_the_dead_letter_topic(
    api: httpx.Client, system: LocalSystem, ns: str, data: Any
) -> None:
    if isinstance(data, dict):
        data = {k: v.format(ns=ns) if isinstance(v, str) else v for k, v in data.items()}
    poison = {
        "specversion": "1.0",
        "id": f"{ns}-poison",
        "source": "tests",
        "type": "consort.interactions.recorded.v1",
        "datacontenttype": "application/json",
        "data": data,
    }
    publish(system, poison)

    def dead_ids() -> list[str]:
        body = api.get(f"/v1/ops/dead-letters/{INTERACTIONS_RECORDED}").json()
        return [d["id"] for d in body["dead_letters"]]

    eventually(dead_ids, lambda ids: poison["id"] in ids, DEADLINE_S)
    assert weights(api, f"{ns}-u") == {}


# -- model swaps and restarts --------------------------------------------------------------------
def test_models_swap_under_load_without_a_failed_request(api: httpx.Client, ns: str) -> None:
    record_and_learn(api, baskets(ns, 6, ["a", "b", "c"]) + baskets(ns, 1, ["a"], first=6))
    user = f"{ns}-u6"
    start = model(api)["version"]
    stop = threading.Event()
    answers: list[tuple[int, int | None]] = []

    def load(path: str) -> None:
        with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(path)
                except httpx.HTTPError:
                    answers.append((0, None))  # no answer at all: a failure too
                    continue
                version = response.json().get("model_version") if response.is_success else None
                answers.append((response.status_code, version))

    paths = [f"/v1/recommendations/{user}?k=3", f"/v1/items/{ns}-a/similar?k=2"] * 2
    threads = [threading.Thread(target=load, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()

    def served_more(count: int) -> None:
        wanted = len(answers) + count
        eventually(lambda: len(answers), lambda n: n >= wanted, DEADLINE_S)

    try:
        for round_ in range(3):
            served_more(30)
            record(api, baskets(ns, 1, ["b", "c"], first=100 + round_))
            final = retrain(api)["version"]
        # Keep the load on until the last version has served some of it.
        eventually(lambda: [v for _, v in answers[-20:]], lambda vs: final in vs, DEADLINE_S)
        served_more(30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    statuses = [status for status, _ in answers]
    assert len(statuses) >= 120
    assert set(statuses) == {200}
    versions = {v for _, v in answers if v is not None}
    assert min(versions) >= start
    assert max(versions) >= start + 3
    assert len(versions) >= 3


def test_a_restarted_recommender_serves_its_snapshot_at_once(
    api: httpx.Client, system: LocalSystem, ns: str
) -> None:
    record_and_learn(api, baskets(ns, 5, ["a", "b", "c"]) + baskets(ns, 1, ["a", "b"], first=5))
    user = f"{ns}-u5"
    before = settled(api)
    recommendations = recommend(api, user)
    similar = api.get(f"/v1/items/{ns}-a/similar").json()
    assert recommendations["model_version"] == before["version"]

    restart_recommender(system)

    after = model(api)
    assert after["restored"] is True
    assert after["last_training_s"] is None  # served without retraining
    assert after["version"] == before["version"]
    assert after["snapshot"] == before["snapshot"]
    assert (after["events"], after["users"], after["items"]) == (
        before["events"],
        before["users"],
        before["items"],
    )
    assert recommend(api, user) == recommendations
    assert api.get(f"/v1/items/{ns}-a/similar").json() == similar


def test_interactions_learnt_after_the_snapshot_survive_a_crash(
    api: httpx.Client, system: LocalSystem, ns: str
) -> None:
    settled(api)
    sent = baskets(ns, 2, ["a", "b"])
    record_and_learn(api, sent)
    learnt = weights(api, f"{ns}-u1")

    restart_recommender(system)

    # The journal gave them back (unless a scheduled snapshot took them first)...
    assert weights(api, f"{ns}-u1") == learnt
    # ...with their event ids: sending them again changes nothing.
    log = system.supervisor.get("recommender").log_path
    record(api, sent)
    eventually(
        log.read_text,
        lambda text: all(f"{e['id']} already applied" in text for e in sent),
        DEADLINE_S,
    )
    assert weights(api, f"{ns}-u1") == learnt == {f"{ns}-a": 5.0, f"{ns}-b": 5.0}


# -- bounded training (last: the catalogue it teaches cuts every later mining short) --------------
def test_a_pathological_catalogue_serves_the_new_als_and_reports_the_cut(
    api: httpx.Client, ns: str
) -> None:
    # Two users who share 120 items: every subset of them is a frequent item set.
    shared = [f"shared-{i}" for i in range(120)]
    record_and_learn(api, baskets(ns, 2, shared) + baskets(ns, 3, ["a", "b"], first=2))
    before = model(api)["version"]
    started = time.monotonic()
    status = retrain(api)
    took = time.monotonic() - started

    report = status["last_training"]
    assert report["outcome"] == "cut-short", report
    assert "rule mining cut short" in report["reason"] and "cap of" in report["reason"]
    assert report["version"] == status["version"] > before
    assert set(report["refreshed"]) == {"als", "rules"}
    assert 0 < report["rules_mined"] == status["rules"]
    assert report["duration_s"] <= took < DEADLINE_S
    # The new ALS serves, and knows this test's items (the old one had never seen them).
    body = recommend(api, f"{ns}-u2", k=3)
    assert body["model_version"] >= report["version"]
    assert body["items"][0]["reason"] == "als", body
    # The partial rules serve too: the pairs came first.
    response = api.post("/v1/baskets/complete", json={"items": [f"{ns}-shared-0"], "k": 3})
    assert response.status_code == 200, response.text
    assert len(response.json()["suggestions"]) == 3
