"""Anomaly detection through real sidecars: series actors, their state, reminders and events."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually

START = datetime(2026, 3, 1, tzinfo=UTC)


def series_id() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


def points(values: list[float], *, start: datetime = START, step_s: float = 60) -> list[dict]:
    return [
        {"timestamp": (start + timedelta(seconds=i * step_s)).isoformat(), "value": v}
        for i, v in enumerate(values)
    ]


def daily_cycle(n: int, spike_at: int | None = None) -> list[float]:
    """A season of 24 steps with a little deterministic noise, and one spike."""
    values = [100 + 20 * math.sin(2 * math.pi * i / 24) + 1.5 * math.sin(7.3 * i) for i in range(n)]
    if spike_at is not None:
        values[spike_at] += 60
    return values


def post_points(system: LocalSystem, series: str, body: dict[str, Any], **params: Any) -> Any:
    return httpx.post(
        f"{system.url('gateway')}/v1/metrics/{series}/points",
        headers=system.api_headers,
        json=body,
        params=params,
        timeout=30,
    )


def recent(system: LocalSystem, series: str) -> list[dict[str, Any]]:
    """The anomalies the gateway kept from `anomalies.detected` events of `series`."""
    response = httpx.get(
        f"{system.url('gateway')}/v1/anomalies",
        headers=system.api_headers,
        params={"series": series},
        timeout=10,
    )
    return list(response.json()["anomalies"])


def snapshot(system: LocalSystem, series: str) -> httpx.Response:
    return httpx.get(
        f"{system.url('gateway')}/v1/metrics/{series}", headers=system.api_headers, timeout=10
    )


def test_a_seasonal_spike_is_scored_published_and_reaches_subscribers(system: LocalSystem) -> None:
    series = series_id()
    config = {"detector": "stl", "period": 24, "step_s": 3600, "threshold": 5}
    values = daily_cycle(24 * 8, spike_at=24 * 7 + 5)
    history = points(values[: 24 * 7], step_s=3600)
    fresh = points(values, step_s=3600)[24 * 7 :]

    first = post_points(system, series, {"points": history, "config": config})
    assert first.status_code == 200, first.text
    statuses = [s["status"] for s in first.json()["scores"]]
    # Warming up until the first fit (2 seasons and a point), scored from then on.
    assert statuses[: 2 * 24 + 1] == ["warming_up"] * (2 * 24 + 1)
    assert set(statuses[2 * 24 + 1 :]) == {"scored"}
    assert first.json()["model"]["name"] == "stl-robust-z"

    scored = post_points(system, series, {"points": fresh}).json()["scores"]
    flagged = [i for i, s in enumerate(scored) if s["is_anomaly"]]
    assert flagged == [5]
    spike = scored[5]
    assert not spike["lower"] <= spike["value"] <= spike["upper"]
    assert spike["expected"] == pytest.approx(values[24 * 7 + 5] - 60, abs=6)

    # The anomaly left as an `anomalies.detected` event; the gateway keeps it.
    (event,) = eventually(lambda: recent(system, series), lambda found: len(found) == 1)
    assert event["value"] == pytest.approx(spike["value"])
    assert event["score"] == pytest.approx(spike["score"])
    assert datetime.fromisoformat(event["timestamp"]) == datetime.fromisoformat(
        fresh[5]["timestamp"]
    )


def test_a_level_shift_is_one_anomaly_and_one_event(system: LocalSystem) -> None:
    series = series_id()
    values = daily_cycle(24 * 10)
    for i in range(24 * 8, 24 * 10):
        values[i] += 80  # the level shifts for good at the ninth day
    config = {"detector": "stl", "period": 24, "step_s": 3600}
    sent = points(values, step_s=3600)
    response = post_points(system, series, {"points": sent, "config": config})
    assert response.status_code == 200, response.text
    flagged = [s for s in response.json()["scores"] if s["is_anomaly"]]
    shift_at = datetime.fromisoformat(sent[24 * 8]["timestamp"]).timestamp()
    assert len(flagged) > 5  # many anomalous points ...
    assert {s["anomaly_start"] for s in flagged} == {shift_at}  # ... one anomaly
    (event,) = eventually(lambda: recent(system, series), lambda found: len(found) == 1)
    assert datetime.fromisoformat(event["anomaly_start"]).timestamp() == shift_at
    time.sleep(3)  # and no other event follows
    assert len(recent(system, series)) == 1


def test_duplicates_change_nothing_and_late_points_are_rejected(system: LocalSystem) -> None:
    series = series_id()
    sent = points([float(v % 7) for v in range(30)])
    first = post_points(system, series, {"points": sent}).json()["scores"]
    before = snapshot(system, series).json()

    again = post_points(system, series, {"points": sent[-3:]}).json()["scores"]
    assert [s["status"] for s in again] == ["duplicate"] * 3
    for repeated, original in zip(again, first[-3:], strict=True):
        assert repeated["score"] == pytest.approx(original["score"])  # the first verdict
        assert repeated["is_anomaly"] == original["is_anomaly"]
    late = {**sent[10], "value": 99.0}  # an old timestamp with another value
    older = {"timestamp": (START - timedelta(minutes=5)).isoformat(), "value": 1.0}
    rejected = post_points(system, series, {"points": [late, older]}).json()["scores"]
    assert [s["status"] for s in rejected] == ["late", "late"]
    assert snapshot(system, series).json() == before


def test_points_sent_as_events_are_scored_by_the_actor(system: LocalSystem) -> None:
    series = series_id()
    sent = points([10.0 + (i % 5) for i in range(40)])
    halves = [sent[:20], sent[20:]]
    for half in halves:
        accepted = post_points(system, series, {"points": half}, wait="false")
        assert accepted.status_code == 202
        assert accepted.json()["points"] == 20

    found = eventually(
        lambda: snapshot(system, series),
        lambda r: r.status_code == 200 and r.json()["observed"] == 40,
    ).json()
    assert [p["value"] for p in found["points"]] == [p["value"] for p in sent]


def test_a_malformed_event_goes_to_the_dead_letter_topic(system: LocalSystem) -> None:
    event_id = f"poison-{uuid.uuid4().hex}"
    published = httpx.post(
        f"{system.sidecar_url('gateway')}/v1.0/publish/pubsub/metrics.observed",
        content=json.dumps(
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "test",
                "type": "consort.metrics.observed.v1",
                "datacontenttype": "application/json",
                "data": {"series": "has spaces", "points": [{"value": "NaN"}]},
            }
        ),
        headers={
            "content-type": "application/cloudevents+json",
            **system.sidecar_headers("gateway"),
        },
    )
    assert published.status_code == 204

    def dead_letter_ids() -> list[str]:
        response = httpx.get(
            f"{system.url('gateway')}/v1/ops/dead-letters/metrics.observed",
            headers=system.api_headers,
            timeout=10,
        )
        return [d["id"] for d in response.json()["dead_letters"]]

    eventually(dead_letter_ids, lambda ids: event_id in ids, deadline_s=30)


def test_the_refit_reminder_fires_while_points_arrive(system: LocalSystem) -> None:
    series = series_id()
    sent_at = datetime.now(UTC)
    # The STL detector fits by itself at the 10th point; the 20 after it wait for the
    # reminder.
    body = {"points": points([5.0 + i % 3 for i in range(30)]), "config": {"detector": "stl"}}
    assert post_points(system, series, body).status_code == 200
    fitted = datetime.fromisoformat(snapshot(system, series).json()["fitted_at"])
    assert fitted >= sent_at - timedelta(seconds=1)

    refit = eventually(
        lambda: datetime.fromisoformat(snapshot(system, series).json()["fitted_at"]),
        lambda at: at > fitted + timedelta(seconds=1),
        deadline_s=20,
    )
    assert refit > fitted


def test_series_state_survives_a_crash_of_the_anomaly_app(system: LocalSystem) -> None:
    series = series_id()
    sent = points(daily_cycle(60))
    config = {"period": 24, "step_s": 60}
    assert post_points(system, series, {"points": sent[:55], "config": config}).status_code == 200
    before = snapshot(system, series).json()

    system.stop_app("anomaly", kill=True)  # SIGKILL: nothing flushed on the way out
    try:
        system.start_app("anomaly")
        system.wait_app("anomaly")
        after = eventually(lambda: snapshot(system, series), lambda r: r.status_code == 200)
    finally:
        if "anomaly" not in {p.name for p in system.supervisor}:
            system.start_app("anomaly")
            system.wait_app("anomaly")
    # Everything but the time of the last fit, which the refit reminder may have moved.
    assert {**after.json(), "fitted_at": None} == {**before, "fitted_at": None}
    # And scoring goes on where it stopped: the next points are scored, not warming up.
    more = post_points(system, series, {"points": sent[55:]}).json()["scores"]
    assert {s["status"] for s in more} == {"scored"}
    assert snapshot(system, series).json()["observed"] == 60


def test_another_config_for_an_existing_series_is_a_conflict(system: LocalSystem) -> None:
    series = series_id()
    assert post_points(system, series, {"points": points([1.0, 2.0])}).status_code == 200
    response = post_points(system, series, {"points": points([3.0]), "config": {"period": 7}})
    assert response.status_code == 409
    assert "reset=true" in response.json()["detail"]
    # With reset the series starts over with the new config.
    reset = post_points(
        system, series, {"points": points([4.0]), "config": {"period": 5}, "reset": True}
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["scores"][0]["status"] == "warming_up"
    again = snapshot(system, series).json()
    assert again["config"]["period"] == 5 and again["observed"] == 1
    queued = post_points(system, series, {"points": points([5.0]), "reset": True}, wait="false")
    assert queued.status_code == 422 and "body.reset" in queued.text
    deleted = httpx.delete(
        f"{system.url('gateway')}/v1/metrics/{series}", headers=system.api_headers, timeout=10
    )
    assert deleted.status_code == 204
    assert snapshot(system, series).status_code == 404
    retried = post_points(system, series, {"points": points([3.0]), "config": {"period": 7}})
    assert retried.status_code == 200


def test_offline_detection_finds_the_spike(system: LocalSystem) -> None:
    values = daily_cycle(24 * 6, spike_at=24 * 5)
    response = httpx.post(
        f"{system.url('gateway')}/v1/anomalies/detect",
        headers=system.api_headers,
        json={"values": values, "detector": "stl"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["period"] == 24  # learnt from the values seen
    # One anomaly, at the spike (its neighbour, disturbed by it, may belong to it too).
    assert [e["start"] for e in result["events"]] == [24 * 5]
    assert result["anomalies"][0] == 24 * 5 and set(result["anomalies"]) <= {120, 121}


def test_offline_and_online_give_the_same_scores_for_the_same_points(
    system: LocalSystem,
) -> None:
    # Minutely points with every seventh missing: the spacing and the period are learnt
    # from the points seen, gaps respected, by the offline route as by the series' actor.
    values = daily_cycle(400, spike_at=350)
    kept = [i for i in range(400) if i % 7 != 3]
    sent = points([values[i] for i in kept])
    for point, i in zip(sent, kept, strict=True):
        point["timestamp"] = (START + timedelta(minutes=i)).isoformat()
    timestamps = [datetime.fromisoformat(p["timestamp"]).timestamp() for p in sent]
    offline = httpx.post(
        f"{system.url('gateway')}/v1/anomalies/detect",
        headers=system.api_headers,
        json={"values": [p["value"] for p in sent], "timestamps": timestamps, "detector": "stl"},
        timeout=30,
    )
    assert offline.status_code == 200, offline.text
    config = {"detector": "stl", "period": 0}
    online = post_points(system, series_id(), {"points": sent, "config": config})
    assert online.status_code == 200, online.text
    assert online.json()["scores"] == offline.json()["scores"]
    assert offline.json()["period"] == 24
    top = max(offline.json()["scores"], key=lambda s: abs(s["score"] or 0))
    assert top["timestamp"] == (START + timedelta(minutes=350)).timestamp()
    assert top["is_anomaly"]


def test_a_series_can_be_scored_by_another_detector_online_and_offline(
    system: LocalSystem,
) -> None:
    # A level shift scored by the spectral residual (not the default) through the series'
    # actor, and by the offline route: the same scores, the first anomaly at the shift
    # (while the shift is in its 64-point window, the spectrum flags a few more), one event
    # per anomaly.
    values = [100 + 1.5 * math.sin(7.3 * i) for i in range(300)]
    values[200:] = [v + 40 for v in values[200:]]
    series = series_id()
    sent = points(values)
    config = {"detector": "spectral-residual"}
    online = post_points(system, series, {"points": sent, "config": config})
    assert online.status_code == 200, online.text
    assert online.json()["model"]["name"] == "spectral-residual"
    scores = online.json()["scores"]
    starts = sorted({s["anomaly_start"] for s in scores if s["is_anomaly"]})
    shift_at = datetime.fromisoformat(sent[200]["timestamp"]).timestamp()
    assert starts[0] == shift_at and len(starts) <= 3
    assert not any(s["is_anomaly"] for s in scores[:200])
    offline = httpx.post(
        f"{system.url('gateway')}/v1/anomalies/detect",
        headers=system.api_headers,
        json={
            "values": values,
            "timestamps": [datetime.fromisoformat(p["timestamp"]).timestamp() for p in sent],
            "detector": "spectral-residual",
            "period": 1,
        },
        timeout=30,
    )
    assert offline.status_code == 200, offline.text
    assert offline.json()["model"]["name"] == "spectral-residual"
    assert offline.json()["scores"] == scores
    assert [e["start"] for e in offline.json()["events"]] == starts
    found = eventually(lambda: recent(system, series), lambda found: len(found) == len(starts))
    assert {e["model"]["name"] for e in found} == {"spectral-residual"}
    assert snapshot(system, series).json()["config"]["detector"] == "spectral-residual"


@pytest.mark.parametrize(
    ("path", "body", "field", "says"),
    [
        (
            "metrics/s1/points",
            {"points": [{"timestamp": START.isoformat(), "value": "high"}]},
            "body.points.0.value",
            "number",
        ),
        (
            "metrics/s1/points",
            {"points": [{"timestamp": START.isoformat(), "value": math.nan}]},
            "body.points.0.value",
            "finite",
        ),
        (
            "metrics/s1/points",
            {"points": [{"timestamp": "2026-03-01T00:00:00", "value": 1}]},
            "body.points.0.timestamp",
            "timezone",
        ),
        ("metrics/s1/points", {"points": []}, "body.points", "at least 1"),
        (
            "metrics/s1/points",
            {"points": points([1.0]), "config": {"detector": "prophet"}},
            "body.config.detector",
            "'spectral-residual'",
        ),
        ("anomalies/detect", {"values": [1, 2, 3], "detector": "x"}, "body.detector", "'diff'"),
        ("metrics/s1/points", {"points": points([1.0] * 10_001)}, "body.points", "10000"),
        (
            "metrics/s1/points",
            {"points": points([1.0]), "config": {"period": 1001}},
            "body.config.period",
            "1000",
        ),
        (
            "anomalies/detect",
            {"values": [1, 2, 3, 4], "period": 3},
            "body.values",
            "2 * period + 1",
        ),
        ("anomalies/detect", {"values": [1, 2]}, "body.values", "at least 3"),
        ("anomalies/detect", {"values": [1, 2, math.inf]}, "body.values", "finite"),
        (
            "anomalies/detect",
            {"values": [1, 2, 3], "timestamps": [0, 60]},
            "body.timestamps",
            "one each",
        ),
        (
            "anomalies/detect",
            {"values": [1, 2, 3], "timestamps": [0, 120, 60]},
            "body.timestamps",
            "older than",
        ),
    ],
)
def test_bad_input_is_a_clear_422(
    system: LocalSystem, path: str, body: dict[str, Any], field: str, says: str
) -> None:
    response = httpx.post(
        f"{system.url('gateway')}/v1/{path}",
        content=json.dumps(body),  # as sent by clients that write NaN and Infinity
        headers={"content-type": "application/json", **system.api_headers},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problems = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert field in problems, problems
    assert says in problems[field] or says in response.json()["detail"], problems


def test_a_series_id_that_cannot_name_an_actor_is_rejected(system: LocalSystem) -> None:
    response = httpx.get(
        f"{system.url('gateway')}/v1/metrics/{'x' * 201}", headers=system.api_headers, timeout=10
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.series"


def post_batch(system: LocalSystem, body: dict[str, Any], **params: Any) -> Any:
    return httpx.post(
        f"{system.url('gateway')}/v1/metrics/points",
        headers=system.api_headers,
        json=body,
        params=params,
        timeout=60,
    )


def test_a_batch_of_series_is_scored_by_each_series_actor(system: LocalSystem) -> None:
    ids = [series_id() for _ in range(3)]
    # The third series exists with period 24; the batch asks it for period 12: a conflict
    # that is its own outcome, not the batch's.
    conflicted = ids[2]
    first = post_points(system, conflicted, {"points": points([1.0]), "config": {"period": 24}})
    assert first.status_code == 200, first.text
    body = {
        "series": [
            {"series": ids[0], "points": points(daily_cycle(30)), "config": {"period": 24}},
            {"series": ids[1], "points": points(daily_cycle(10))},
            {
                "series": conflicted,
                "points": points([2.0], start=START + timedelta(hours=1)),
                "config": {"period": 12},
            },
        ]
    }
    response = post_batch(system, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["series"] for r in results] == ids  # in the order sent
    assert len(results[0]["scores"]) == 30 and len(results[1]["scores"]) == 10
    assert results[2]["scores"] is None and results[2]["problem"]["status"] == 409
    assert response.json()["points"] == 40
    # Each series' actor kept its own window.
    window = httpx.get(
        f"{system.url('gateway')}/v1/metrics/{ids[0]}", headers=system.api_headers, timeout=10
    ).json()
    assert len(window["points"]) == 30


def test_a_burst_of_batches_from_many_clients_is_scored_whole(system: LocalSystem) -> None:
    """24 clients send a batch of 16 series each, at once: 384 actor calls in flight from
    the anomaly app through its sidecar, each actor method reading and writing its state
    through that same sidecar. Every series of every batch is scored (none is reported
    unavailable because the calls waited on each other)."""
    clients, per_batch = 24, 16
    batches = [[series_id() for _ in range(per_batch)] for _ in range(clients)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            headers=system.api_headers, timeout=120, limits=httpx.Limits(max_connections=clients)
        ) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(
                            f"{system.url('gateway')}/v1/metrics/points",
                            json={
                                "series": [
                                    {"series": s, "points": points(daily_cycle(20))} for s in ids
                                ]
                            },
                        )
                        for ids in batches
                    )
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * clients, [r.text[:300] for r in responses]
    problems = [
        o["problem"]["detail"] for r in responses for o in r.json()["results"] if o["problem"]
    ]
    assert not problems, f"{len(problems)} of {clients * per_batch} series failed: {problems[:3]}"
    assert [r.json()["points"] for r in responses] == [per_batch * 20] * clients


def test_a_batch_over_its_limits_is_a_422_naming_the_limit(system: LocalSystem) -> None:
    same = series_id()
    twice = {"series": [{"series": same, "points": points([1.0])}] * 2}
    response = post_batch(system, twice)
    assert response.status_code == 422
    assert "at most once" in response.text
    many = {"series": [{"series": series_id(), "points": points([1.0] * 6000)} for _ in range(2)]}
    response = post_batch(system, many)
    assert response.status_code == 422
    assert "at most 10000 points" in response.text


def test_a_batch_published_without_waiting_is_scored_by_the_actors(system: LocalSystem) -> None:
    ids = [series_id() for _ in range(2)]
    body = {"series": [{"series": s, "points": points(daily_cycle(5))} for s in ids]}
    response = post_batch(system, body, wait="false")
    assert response.status_code == 202, response.text
    assert response.json() == {"series": 2, "points": 10}

    def windows() -> list[int]:
        sizes = []
        for s in ids:
            r = httpx.get(
                f"{system.url('gateway')}/v1/metrics/{s}", headers=system.api_headers, timeout=10
            )
            sizes.append(len(r.json()["points"]) if r.status_code == 200 else 0)
        return sizes

    eventually(windows, lambda sizes: sizes == [5, 5], deadline_s=30)
