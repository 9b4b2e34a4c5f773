"""Durable workflows through the gateway, the orchestrator and real sidecars, placement and
scheduler: review_triage (decisions, escalation, expiry, compensation), forecast_and_alert
(on demand, on a Dapr job, on an anomaly), and crashes of the orchestrator and of a service.
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from PIL import Image
from skimage import data as samples

from consort.dev.cli import main as cli
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually, needs_redis_streams

COMPLAINT = "The Acme kettle arrived cracked and now it leaks everywhere. Terrible!"
PRAISE = "Lovely kettle, boils fast and looks great. Very happy!"
#: Long enough that no test sees it pass unless it means to.
NEVER_S = 600


@pytest.fixture
def api(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=30
    ) as client:
        yield client


def astronaut_jpeg() -> str:
    """scikit-image's astronaut (one face), as base64 JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buffer, "JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def start(api: httpx.Client, text: str = COMPLAINT, **fields: Any) -> str:
    body = {"review_id": f"t-{uuid.uuid4().hex[:12]}", "text": text, **fields}
    response = api.post("/v1/workflows/review-triage", json=body)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started == {
        "id": f"triage-{body['review_id']}",
        "workflow": "review_triage",
        "created": True,
    }
    return str(started["id"])


def workflow(api: httpx.Client, wid: str) -> dict[str, Any]:
    response = api.get(f"/v1/workflows/{wid}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_step(api: httpx.Client, wid: str, step: str, deadline_s: float = 30) -> dict[str, Any]:
    return eventually(
        lambda: workflow(api, wid),
        lambda w: w["step"] == step or w["status"] != "running",
        deadline_s,
    )


def wait_done(api: httpx.Client, wid: str, deadline_s: float = 60) -> dict[str, Any]:
    return eventually(lambda: workflow(api, wid), lambda w: w["status"] != "running", deadline_s)


def decide(api: httpx.Client, wid: str, decision: str, by: str = "tester") -> None:
    response = api.post(
        f"/v1/workflows/{wid}/events/decision", json={"decision": decision, "by": by}
    )
    assert response.status_code == 202, response.text


def case(api: httpx.Client, wid: str) -> dict[str, Any]:
    response = api.get(f"/v1/cases/{wid}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def events(system: LocalSystem, topic: str) -> list[dict[str, Any]]:
    """Every CloudEvent on `topic`, read from its Redis stream (what the broker holds)."""
    needs_redis_streams(system, topic)
    cli = shutil.which("redis-cli") or str(system.runtime.redis_server.parent / "redis-cli")
    out = subprocess.run(
        [cli, "-p", str(system.ports.redis), "--raw", "XRANGE", topic, "-", "+"],
        capture_output=True,
        text=True,
        check=True,
        env=system.redis_cli_env(),
    ).stdout.splitlines()
    return [
        json.loads(value) for field, value in zip(out, out[1:], strict=False) if field == "data"
    ]


def history(system: LocalSystem, wid: str) -> list[Any]:
    """The workflow engine's history of one instance (through the orchestrator's sidecar)."""
    port = system.run_file.app("orchestrator").dapr_grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = stubs.TaskHubSidecarServiceStub(channel).GetInstanceHistory(
            pb.GetInstanceHistoryRequest(instanceId=wid),
            metadata=list(system.sidecar_headers("orchestrator").items()),
            timeout=10,
        )
    return list(reply.events)


def task_events(system: LocalSystem, wid: str, activity: str) -> list[str]:
    """What became of each attempt of `activity`: `scheduled`, `failed`, `completed`."""
    events_ = history(system, wid)
    names = {e.eventId: e.taskScheduled.name for e in events_ if e.HasField("taskScheduled")}
    found = []
    for e in events_:
        kind = e.WhichOneof("eventType")
        if kind == "taskScheduled" and e.taskScheduled.name == activity:
            found.append("scheduled")
        elif kind == "taskFailed" and names.get(e.taskFailed.taskScheduledId) == activity:
            found.append("failed")
        elif kind == "taskCompleted" and names.get(e.taskCompleted.taskScheduledId) == activity:
            found.append("completed")
    return found


def sidecar_state(system: LocalSystem, key: str) -> httpx.Response:
    return httpx.get(
        f"{system.sidecar_url('orchestrator')}/v1.0/state/statestore/{key}",
        headers=system.sidecar_headers("orchestrator"),
    )


# -- review_triage ---------------------------------------------------------------------------
def test_a_positive_review_completes_without_a_case(api: httpx.Client) -> None:
    wid = start(api, PRAISE)
    done = wait_done(api, wid)
    assert done["status"] == "completed"
    assert done["output"]["outcome"] == "no_case"
    assert done["output"]["label"] == "positive"
    assert done["output"]["case_id"] is None
    assert api.get(f"/v1/cases/{wid}").status_code == 404


@pytest.mark.parametrize("decision", ["approve", "dismiss"])
def test_a_complaint_opens_a_case_that_a_decision_closes(
    system: LocalSystem, api: httpx.Client, decision: str
) -> None:
    wid = start(api, product="Acme kettle", decision_timeout_s=NEVER_S)
    waiting = wait_step(api, wid, "awaiting_decision")
    assert waiting["status"] == "running"
    opened = case(api, wid)
    assert opened["status"] == "open"
    assert opened["product"] == "Acme kettle"
    assert {"crack", "leak"} <= set(opened["defects"])
    assert wid in [c["id"] for c in api.get("/v1/cases", params={"status": "open"}).json()["cases"]]
    announced = [e for e in events(system, "cases.opened") if e["data"]["case_id"] == wid]
    assert {e["id"] for e in announced} == {f"{wid}:opened"}

    decide(api, wid, decision, by="ann")
    done = wait_done(api, wid)
    assert done["status"] == "completed"
    outcome = {"approve": "approved", "dismiss": "dismissed"}[decision]
    assert done["output"]["outcome"] == outcome
    closed = case(api, wid)
    assert (closed["status"], closed["outcome"], closed["decided_by"]) == ("closed", outcome, "ann")
    assert [h["what"] for h in closed["history"]] == ["opened", "closed"]
    assert wid not in [c["id"] for c in api.get("/v1/cases?status=open").json()["cases"]]
    closings = [e for e in events(system, "cases.closed") if e["data"]["case_id"] == wid]
    assert {e["data"]["outcome"] for e in closings} == {outcome}


def test_no_decision_in_time_escalates_then_expires(system: LocalSystem, api: httpx.Client) -> None:
    wid = start(api, decision_timeout_s=1, escalated_timeout_s=1)
    done = wait_done(api, wid)
    assert done["status"] == "completed"
    assert (done["output"]["outcome"], done["output"]["escalations"]) == ("expired", 1)
    expired = case(api, wid)
    assert (expired["status"], expired["outcome"], expired["escalations"]) == (
        "closed",
        "expired",
        1,
    )
    assert [h["what"] for h in expired["history"]] == ["opened", "escalated", "closed"]
    escalations = [e for e in events(system, "cases.escalated") if e["data"]["case_id"] == wid]
    assert {e["id"] for e in escalations} == {f"{wid}:escalated:1"}


def test_an_escalated_case_still_takes_a_decision_and_keeps_the_image_redacted(
    system: LocalSystem, api: httpx.Client
) -> None:
    image = {"media_type": "image/jpeg", "data": astronaut_jpeg()}
    wid = start(api, image=image, decision_timeout_s=1, escalated_timeout_s=NEVER_S)
    escalated = wait_step(api, wid, "escalated")
    assert escalated["status"] == "running"
    assert case(api, wid)["status"] == "escalated"
    decide(api, wid, "approve")
    done = wait_done(api, wid)
    assert done["status"] == "completed", done["failure"]
    assert (done["output"]["outcome"], done["output"]["escalations"]) == ("approved", 1)
    assert done["output"]["image"]["faces"] == 1
    approved = case(api, wid)
    evidence = approved["evidence"]
    assert evidence["faces_redacted"] == 1 and evidence["media_type"] == "image/jpeg"
    # The redacted image is in the orchestrator's state, and it is not the original.
    stored = sidecar_state(system, evidence["key"])
    assert stored.status_code == 200
    assert stored.json()["data"] != image["data"]
    assert len(base64.b64decode(stored.json()["data"])) == evidence["bytes"]


def test_a_permanent_failure_after_the_case_opened_is_compensated(
    system: LocalSystem, api: httpx.Client
) -> None:
    """The review's image is gone when the approval comes (its time to live passed, here
    by deleting it): the redaction cannot succeed, so the case is marked failed, nothing
    of the evidence is left, and the workflow fails with the reason."""
    image = {"media_type": "image/jpeg", "data": astronaut_jpeg()}
    wid = start(api, image=image, decision_timeout_s=NEVER_S)
    waiting = wait_step(api, wid, "awaiting_decision")
    sha = waiting["input"]["image"]["sha256"]
    sidecar = system.sidecar_url("orchestrator")
    deleted = httpx.delete(
        f"{sidecar}/v1.0/state/statestore/image:{sha}",
        headers=system.sidecar_headers("orchestrator"),
    )
    assert deleted.status_code == 204
    decide(api, wid, "approve")
    done = wait_done(api, wid)
    assert done["status"] == "failed"
    assert "no longer kept" in done["failure"]["message"]
    failed = case(api, wid)
    assert (failed["status"], failed["outcome"], failed["evidence"]) == ("failed", "failed", None)
    assert "no longer kept" in failed["failure"]
    assert [h["what"] for h in failed["history"]] == ["opened", "failed"]
    assert sidecar_state(system, f"evidence:{wid}").status_code == 204
    assert task_events(system, wid, "evidence_redact") == ["scheduled", "failed"]  # not retried
    closings = [e for e in events(system, "cases.closed") if e["data"]["case_id"] == wid]
    assert {e["data"]["outcome"] for e in closings} == {"failed"}


def test_a_permanent_failure_before_the_case_writes_nothing(api: httpx.Client) -> None:
    """vision refuses an image that is not one (a 4xx: retrying cannot help)."""
    not_an_image = base64.b64encode(b"\x89PNG\r\n\x1a\n but not really a PNG").decode()
    wid = start(api, image={"media_type": "image/png", "data": not_an_image})
    done = wait_done(api, wid)
    assert done["status"] == "failed"
    assert "vision refused" in done["failure"]["message"]
    assert api.get(f"/v1/cases/{wid}").status_code == 404


def test_starting_again_with_the_same_review_id_answers_the_same_workflow(
    api: httpx.Client,
) -> None:
    body = {"review_id": f"t-{uuid.uuid4().hex[:12]}", "text": PRAISE}
    first = api.post("/v1/workflows/review-triage", json=body)
    again = api.post("/v1/workflows/review-triage", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {**first.json(), "created": False}


def test_workflow_management_answers_problems(api: httpx.Client) -> None:
    unknown = api.get("/v1/workflows/triage-nobody-knows-this")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert (
        api.post(
            "/v1/workflows/triage-nobody-knows-this/events/decision", json={"decision": "approve"}
        ).status_code
        == 404
    )
    bad = api.post("/v1/workflows/x/events/decision", json={"decision": "maybe"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "body.decision"
    too_long = api.post(
        "/v1/workflows/review-triage", json={"text": "x", "decision_timeout_s": 10**9}
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "body.decision_timeout_s"

    wid = start(api, decision_timeout_s=NEVER_S)
    wait_step(api, wid, "awaiting_decision")
    assert api.delete(f"/v1/workflows/{wid}").status_code == 409  # still running
    terminated = api.post(f"/v1/workflows/{wid}/terminate", json={"reason": "duplicate"})
    assert terminated.status_code == 202
    eventually(lambda: workflow(api, wid)["status"], lambda s: s == "terminated")
    assert (case(api, wid)["status"], case(api, wid)["outcome"]) == ("closed", "terminated")
    late = api.post(f"/v1/workflows/{wid}/events/decision", json={"decision": "approve"})
    assert late.status_code == 409
    assert api.delete(f"/v1/workflows/{wid}").status_code == 204
    assert api.get(f"/v1/workflows/{wid}").status_code == 404
    assert case(api, wid)["outcome"] == "terminated"  # the case outlives the purge


# -- durability ---------------------------------------------------------------------------------
def test_fifty_workflows_survive_a_killed_orchestrator_exactly_once(
    system: LocalSystem, api: httpx.Client
) -> None:
    batch = uuid.uuid4().hex[:8]
    reviews = [f"k{batch}-{n}" for n in range(50)]
    ids = [f"triage-{r}" for r in reviews]

    def begin(review_id: str) -> int:
        body = {"review_id": review_id, "text": COMPLAINT, "decision_timeout_s": NEVER_S}
        return api.post("/v1/workflows/review-triage", json=body).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(begin, reviews)) == {202}
    ours = set(ids)

    def open_cases() -> set[str]:
        listed = api.get("/v1/cases", params={"status": "open", "limit": 500}).json()["cases"]
        return {c["id"] for c in listed} & ours

    # SIGKILL right after the last start is accepted: the workflows are then being
    # analysed, opening their cases, or waiting for a decision (none can complete).
    system.stop_app("orchestrator", kill=True)
    # Its workflows live on in Redis and the scheduler while nothing runs them.
    system.start_app("orchestrator")
    system.wait_app("orchestrator")

    eventually(open_cases, lambda found: found == ours, 120)
    for wid in ids:
        decide(api, wid, "approve")
    finished = [wait_done(api, wid, 120) for wid in ids]
    assert {w["status"] for w in finished} == {"completed"}
    assert {w["output"]["outcome"] for w in finished} == {"approved"}
    for wid in ids:
        history_ = [h["what"] for h in case(api, wid)["history"]]
        assert history_ == ["opened", "closed"], (wid, history_)
        assert [e.WhichOneof("eventType") for e in history(system, wid)].count(
            "executionCompleted"
        ) == 1
    listed = [c["id"] for c in api.get("/v1/cases", params={"limit": 500}).json()["cases"]]
    assert sorted(i for i in listed if i in ours) == sorted(ids)  # one case each, no copies
    opened = [e for e in events(system, "cases.opened") if e["data"]["case_id"] in ours]
    # Delivery is at least once: a case_open that ran again publishes again, with the
    # same event id, which consumers drop. One id per case, every case announced.
    assert {e["id"] for e in opened} == {f"{wid}:opened" for wid in ids}


def test_a_service_killed_mid_workflow_is_retried_until_it_returns(
    system: LocalSystem, api: httpx.Client
) -> None:
    image = {"media_type": "image/jpeg", "data": astronaut_jpeg()}
    wid = start(api, image=image, decision_timeout_s=NEVER_S)
    wait_step(api, wid, "awaiting_decision")
    system.stop_app("vision", kill=True)
    try:
        decide(api, wid, "approve")  # approval redacts the image through vision
        eventually(
            lambda: task_events(system, wid, "evidence_redact"),
            lambda attempts: attempts.count("failed") >= 2,
            30,
        )
        assert workflow(api, wid)["status"] == "running"
    finally:
        system.start_app("vision")
        system.wait_app("vision")
    done = wait_done(api, wid, 90)
    assert done["status"] == "completed", done["failure"]
    assert done["output"]["outcome"] == "approved"
    attempts = task_events(system, wid, "evidence_redact")
    assert attempts[-1] == "completed" and attempts.count("failed") >= 2
    assert case(api, wid)["evidence"]["faces_redacted"] == 1


# -- forecast_and_alert -------------------------------------------------------------------------
def feed(api: httpx.Client, series: str, values: list[float], start: datetime) -> None:
    points = [
        {"timestamp": (start + timedelta(minutes=i)).isoformat(), "value": v}
        for i, v in enumerate(values)
    ]
    body = {"points": points, "config": {"period": 24, "step_s": 60}}
    response = api.post(f"/v1/metrics/{series}/points", json=body)
    assert response.status_code == 200, response.text


def rising(n: int) -> list[float]:
    """A daily cycle over a rising trend: ETS forecasts it to keep rising."""
    return [100 + 10 * math.sin(2 * math.pi * i / 24) + 0.5 * i for i in range(n)]


def test_forecast_and_alert_publishes_outlooks_and_alerts_on_bounds(
    system: LocalSystem, api: httpx.Client
) -> None:
    series = f"wf-{uuid.uuid4().hex[:8]}"
    feed(api, series, rising(120), datetime(2026, 1, 1, tzinfo=UTC))
    body = {
        "series": [
            {"series": series, "upper": 165.0, "lower": 0.0},
            {"series": f"{series}-never-fed"},
        ],
        "horizon": 12,
    }
    response = api.post("/v1/workflows/forecast-and-alert", json=body)
    assert response.status_code == 202, response.text
    run = response.json()["id"]
    done = wait_done(api, run)
    assert done["status"] == "completed", done["failure"]
    fed, unknown = done["output"]["outlooks"]
    assert (fed["status"], unknown["status"]) == ("forecast", "unknown_series")
    assert len(fed["point"]) == 12 and fed["model"].startswith("ETS")
    assert fed["timestamps"][0] == "2026-01-01T02:00:00Z"  # the step after the last point
    assert fed["recent"]["points"] == 120 and fed["recent"]["anomalies"] == 0
    # The trend crosses the upper bound within the horizon; the lower bound is never near.
    (alert,) = fed["alerts"]
    assert (alert["bound"], alert["level"]) == ("upper", "critical")
    assert (
        fed["point"][alert["step"] - 1] > 165 >= max(fed["point"][: alert["step"] - 1], default=0)
    )
    assert done["output"]["alerts"] == 1
    published = {e["id"]: e for e in events(system, "forecasts.published")}
    assert published[f"{run}:{series}"]["data"]["alerts"] == fed["alerts"]
    assert published[f"{run}:{series}-never-fed"]["data"]["status"] == "unknown_series"


def test_the_schedule_runs_forecasts_and_an_anomaly_runs_one_at_once(
    system: LocalSystem, api: httpx.Client
) -> None:
    series = f"wf-{uuid.uuid4().hex[:8]}"
    first = datetime(2026, 2, 1, tzinfo=UTC)
    feed(api, series, rising(120), first)
    path = "/v1/workflows/forecast-and-alert/schedule"
    schedule = {"series": [{"series": series, "upper": 1000.0}], "horizon": 6, "every_s": 2}
    try:
        put = api.put(path, json=schedule)
        assert put.status_code == 200, put.text
        stored = api.get(path).json()["schedule"]
        assert stored == put.json()["schedule"]
        assert (stored["every_s"], stored["series"][0]["series"]) == (2, series)
        runs = eventually(
            lambda: api.get(path).json()["recent_runs"], lambda found: len(found) >= 2, 30
        )
        for run in runs[:2]:
            done = wait_done(api, run)
            assert done["status"] == "completed", done["failure"]
            assert [o["series"] for o in done["output"]["outlooks"]] == [series]

        # Slow the schedule down, then send an anomalous point: the anomaly starts a run
        # for its series at once, named for the series and the schedule period.
        schedule["every_s"] = 3600
        assert api.put(path, json=schedule).status_code == 200
        spike_at = first + timedelta(minutes=120)
        feed_spike = {"points": [{"timestamp": spike_at.isoformat(), "value": 10_000.0}]}
        scored = api.post(f"/v1/metrics/{series}/points", json=feed_spike).json()
        assert scored["scores"][0]["is_anomaly"] is True
        period = int(spike_at.timestamp()) // 3600 * 3600
        run = f"forecast-and-alert-{series}-{period}"
        eventually(lambda: api.get(f"/v1/workflows/{run}").status_code, lambda s: s == 200, 30)
        done = wait_done(api, run)
        assert done["status"] == "completed", done["failure"]
        (outlook,) = done["output"]["outlooks"]
        assert outlook["recent"]["anomalies"] >= 1
    finally:
        assert api.delete(path).status_code == 204
    assert api.get(path).json()["schedule"] is None


# -- the CLI ------------------------------------------------------------------------------------
def test_the_cli_lists_shows_and_approves_a_case(
    system: LocalSystem,
    api: httpx.Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    gateway = ["--gateway", system.url("gateway"), "--api-key", system.api_key]
    wid = start(api, product="Acme kettle", decision_timeout_s=NEVER_S)
    wait_step(api, wid, "awaiting_decision")
    capsys.readouterr()
    assert cli(["workflows", "list", *gateway]) == 0
    assert wid in capsys.readouterr().out
    assert cli(["workflows", "show", wid, *gateway]) == 0
    shown = capsys.readouterr().out
    assert "awaiting_decision" in shown and "case: open" in shown
    assert cli(["workflows", "approve", wid, "--by", "cli", *gateway]) == 0
    assert wait_done(api, wid)["output"]["outcome"] == "approved"
    assert case(api, wid)["decided_by"] == "cli"
    assert cli(["workflows", "approve", wid, *gateway]) == 1  # it is finished: a 409
    assert "409" in capsys.readouterr().err
