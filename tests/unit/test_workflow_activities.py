"""The workflows' activities and decisions without a sidecar.

The services are the real `workflows.services.Services` over an in-memory sidecar: its
state store keeps first-write and etags (so the case store's compare-and-set runs for
real), invocations are answered by the real nlp and sentiment models (and canned vision,
anomaly and forecast answers), publications are recorded. The workflow generators are
driven as Dapr's durabletask drives them: each yielded task is answered by running the
activity it names and sending its (JSON round-tripped) result back in; an activity that
raises fails its task with `TaskFailedError`, as the engine does once retries are spent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dapr.ext.workflow._durabletask.internal.protos as pb
import pytest
from dapr.ext.workflow import TaskFailedError
from dapr.ext.workflow._durabletask.internal.shared import from_json, to_json
from dapr.ext.workflow._durabletask.task import CompletableTask, Task, WhenAllTask

from apps.nlp.analyzer import NlpAnalyzer
from apps.nlp.settings import DEFAULT_PIPELINE
from apps.sentiment.analyzer import SentimentAnalyzer
from consort.contracts.cases import CaseStatus
from consort.contracts.nlp import NlpRequest
from consort.contracts.sentiment import SentimentRequest
from consort.contracts.workflows import DECISION_EVENT, ImageRef, TriageOutcome
from consort.kit.dapr import EtagMismatch, Reply, Sidecar, StateItem
from consort.kit.settings import SidecarSettings
from workflows import cases, forecast_and_alert, review_triage
from workflows.services import Services

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0)  # the engine's clock: UTC without a zone
COMPLAINT = "The Acme kettle arrived cracked and now it leaks everywhere. Terrible!"
PRAISE = "Lovely kettle, boils fast and looks great. Very happy with it."
Handler = Callable[[Any, bytes | None], Reply]


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status=status, body=data, headers=headers or {})


class MemorySidecar(Sidecar):
    """A sidecar in memory: state with etags, invocations answered by handlers, and the
    events published recorded (what the activities' services use of daprd)."""

    def __init__(self, handlers: dict[tuple[str, str], Handler]) -> None:
        super().__init__(SidecarSettings())
        self.handlers = handlers
        self.state: dict[str, tuple[Any, int]] = {}
        self.invoked: list[tuple[str, str]] = []
        self.published: list[tuple[str, str, Any]] = []  # (topic, event id, data)

    async def invoke(self, app_id: str, method: str, **request: Any) -> Reply:
        self.invoked.append((app_id, method))
        handler = self.handlers.get((app_id, method))
        if handler is None:
            return reply({"title": "no such method"}, status=404)
        return handler(request.get("json"), request.get("data"))

    async def publish(self, pubsub: str, topic: str, data: Any, **event: Any) -> str:
        self.published.append((topic, event["event_id"], data))
        return str(event["event_id"])

    async def get_state(self, store: str, key: str) -> StateItem | None:
        if key not in self.state:
            return None
        value, version = self.state[key]
        return StateItem(key=key, value=json.loads(json.dumps(value)), etag=str(version))

    async def get_bulk_state(self, store: str, keys: list[str]) -> list[StateItem]:
        items = [await self.get_state(store, k) for k in keys]
        return [i for i in items if i is not None]

    async def save_state(
        self, store: str, key: str, value: Any, *, etag: str | None = None, **options: Any
    ) -> None:
        current = self.state.get(key)
        first_write = (options.get("options") or {}).get("concurrency") == "first-write"
        if (etag is not None and (current is None or str(current[1]) != etag)) or (
            first_write and etag is None and current is not None
        ):
            raise EtagMismatch(f"{key}: another writer was first", status=409)
        self.state[key] = (value, current[1] + 1 if current else 1)

    async def save_states(self, store: str, values: Any, *, ttl_s: int | None = None) -> None:
        for key, value in values.items():
            await self.save_state(store, key, value)

    async def delete_state(self, store: str, key: str) -> None:
        self.state.pop(key, None)


class FakeServices(Services):
    """The real services (their failure sorting included) over one in-memory sidecar."""

    def __init__(self, sidecar: MemorySidecar) -> None:
        super().__init__(SidecarSettings(), statestore="statestore", pubsub="pubsub", source="t")
        self.memory = sidecar

    def sidecar(self) -> Sidecar:
        return self.memory

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.memory.published]


@dataclass
class FakeContext:
    """The parts of `DaprWorkflowContext` the workflows use, recording what they ask."""

    instance_id: str
    current_utc_datetime: datetime = NOW
    is_replaying: bool = False
    statuses: list[str] = field(default_factory=list)
    pending: dict[Task[Any], tuple[str, Any]] = field(default_factory=dict)

    def set_custom_status(self, status: str) -> None:
        self.statuses.append(status)

    def call_activity(self, name: str, *, input: Any = None, retry_policy: Any = None) -> Task[Any]:
        task: CompletableTask[Any] = CompletableTask()
        # What the engine hands the activity: the input as JSON.
        self.pending[task] = (name, from_json(to_json(input)))
        return task

    def wait_for_external_event(self, name: str, *, timeout: datetime) -> Task[Any]:
        task: CompletableTask[Any] = CompletableTask()
        self.pending[task] = (f"event:{name}", timeout)
        return task


@dataclass
class Run:
    """One driven workflow: its result (or failure) and the activities it ran, in order."""

    result: Any = None
    failure: Exception | None = None
    activities: list[str] = field(default_factory=list)


def drive(
    workflow: Callable[[Any, Any], Generator[Any, Any, Any]],
    ctx: FakeContext,
    raw: Any,
    activities: dict[str, Callable[[Any, Any], Any]],
    decisions: list[dict[str, Any] | None] | None = None,
) -> Run:
    """Run `workflow` to its end as the engine would, answering each task it yields.

    Args:
        workflow: the workflow generator function.
        ctx: the fake context.
        raw: the workflow's input (as JSON).
        activities: the activity functions by registered name.
        decisions: what each wait for a decision gets, in order (None: the timeout).
    """
    waits = list(decisions or [])
    run = Run()

    def answer(task: Task[Any]) -> Any:
        name, given = ctx.pending.pop(task)
        if name == f"event:{DECISION_EVENT}":
            decision = waits.pop(0) if waits else None
            if decision is None:
                ctx.current_utc_datetime = given  # the timer fired at the deadline
                raise TimeoutError
            return decision
        run.activities.append(name)
        try:
            result = asyncio.run(activities[name](None, given))
        except Exception as exc:  # the engine's permanent failure of the task
            details = pb.TaskFailureDetails(errorType=type(exc).__name__, errorMessage=str(exc))
            raise TaskFailedError(f"{name} failed: {exc}", details) from exc
        return from_json(to_json(result))

    steps = workflow(ctx, raw)
    sent: Any = None
    thrown: Exception | None = None
    while True:
        try:
            task = steps.throw(thrown) if thrown else steps.send(sent)
        except StopIteration as stop:
            run.result = stop.value
            return run
        except Exception as exc:
            run.failure = exc
            return run
        sent, thrown = None, None
        try:
            tasks = task.get_tasks() if isinstance(task, WhenAllTask) else None
            sent = [answer(t) for t in tasks] if tasks is not None else answer(task)
        except Exception as exc:
            thrown = exc


# -- review_triage -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models() -> tuple[NlpAnalyzer, SentimentAnalyzer]:
    return NlpAnalyzer(DEFAULT_PIPELINE), SentimentAnalyzer()


@pytest.fixture
def services(models: tuple[NlpAnalyzer, SentimentAnalyzer]) -> FakeServices:
    nlp, sentiment = models

    def analyze_text(body: Any, _: bytes | None) -> Reply:
        request = NlpRequest.model_validate(body)
        return reply(nlp.analyze(request.text, tokens=request.tokens).model_dump(mode="json"))

    def score(body: Any, _: bytes | None) -> Reply:
        text = SentimentRequest.model_validate(body).text
        return reply(sentiment.analyze(text).model_dump(mode="json"))

    def analyze_image(_: Any, data: bytes | None) -> Reply:
        image = {"format": "png", "width": 4, "height": 4, "bytes": len(data or b""), "sha256": "x"}
        found = {"image": image, "models": [], "text": None}
        return reply({**found, "faces": None, "quality": None})

    def redact(_: Any, data: bytes | None) -> Reply:
        return reply(b"blurred:" + (data or b""), headers={"x-faces-redacted": "1"})

    sidecar = MemorySidecar(
        {
            ("nlp", "v1/nlp"): analyze_text,
            ("sentiment", "v1/sentiment"): score,
            ("vision", "v1/images/analyze"): analyze_image,
            ("vision", "v1/images/redact"): redact,
        }
    )
    fake = FakeServices(sidecar)
    review_triage.configure(fake)
    return fake


def triage_input(text: str, image: ImageRef | None = None) -> dict[str, Any]:
    return {
        "review_id": "r1",
        "text": text,
        "product": "Acme kettle",
        "image": image.model_dump(mode="json") if image else None,
        "decision_timeout_s": 60,
        "escalated_timeout_s": 30,
    }


def triage(
    services: FakeServices, text: str, decisions: list[Any], image: bool = False
) -> tuple[Run, FakeContext]:
    ref = None
    if image:
        store = services.statestore
        ref = asyncio.run(cases.save_image(services.memory, store, b"png", "image/png", 60))
    ctx = FakeContext("triage-r1")
    raw = triage_input(text, ref)
    run = drive(review_triage.review_triage, ctx, raw, review_triage.ACTIVITIES, decisions)
    return run, ctx


def stored_case(services: FakeServices, case_id: str = "triage-r1") -> Any:
    return asyncio.run(cases.get_case(services.memory, services.statestore, case_id))


def test_the_registered_names_are_those_running_instances_were_recorded_under() -> None:
    registered: dict[str, Any] = {}

    class Runtime:
        def register_workflow(self, fn: Any, *, name: str) -> None:
            registered[name] = fn

        def register_activity(self, fn: Any, *, name: str) -> None:
            registered[name] = fn

    services = FakeServices(MemorySidecar({}))
    review_triage.register(Runtime(), services, None)  # type: ignore[arg-type]
    forecast_and_alert.register(Runtime(), services, None, 50)  # type: ignore[arg-type]
    assert sorted(registered) == sorted(
        [
            "review_triage",
            "nlp_analyze",
            "sentiment_score",
            "vision_analyze",
            "case_open",
            "case_escalate",
            "evidence_redact",
            "case_close",
            "case_fail",
            "forecast_and_alert",
            "series_read",
            "series_forecast",
            "outlook_publish",
        ]
    )
    assert registered["case_open"] is review_triage.case_open
    assert forecast_and_alert.dependencies().max_points == 50


def test_an_activity_before_configure_says_so() -> None:
    review_triage._dependencies = None
    with pytest.raises(RuntimeError, match="configure"):
        asyncio.run(review_triage.nlp_analyze(None, {"text": "hi"}))  # type: ignore[arg-type]


def test_praise_ends_without_a_case(services: FakeServices) -> None:
    run, ctx = triage(services, PRAISE, [])
    assert run.failure is None
    assert run.result["outcome"] == TriageOutcome.NO_CASE.value
    assert run.activities == ["nlp_analyze", "sentiment_score"]
    assert services.topics() == [] and stored_case(services) is None
    assert ctx.statuses == ["analyzing"]


def test_a_complaint_opens_a_case_and_a_dismissal_closes_it(services: FakeServices) -> None:
    run, ctx = triage(services, COMPLAINT, [{"decision": "dismiss", "by": "ana"}])
    assert run.failure is None, run.failure
    assert run.result["outcome"] == TriageOutcome.DISMISSED.value
    assert run.result["case_id"] == "triage-r1"
    assert run.activities == ["nlp_analyze", "sentiment_score", "case_open", "case_close"]
    case = stored_case(services)
    assert case.status is CaseStatus.CLOSED and case.decided_by == "ana"
    assert case.defects == ["crack", "leak"] and case.product == "Acme kettle"
    assert services.topics() == ["cases.opened", "cases.closed"]
    assert ctx.statuses == ["analyzing", "awaiting_decision", "closing"]


def test_an_approval_redacts_the_image_as_the_cases_evidence(services: FakeServices) -> None:
    run, _ = triage(services, COMPLAINT, [{"decision": "approve", "by": "ana"}], image=True)
    assert run.failure is None, run.failure
    assert run.result["outcome"] == TriageOutcome.APPROVED.value
    assert run.activities[-2:] == ["evidence_redact", "case_close"]
    assert "vision_analyze" in run.activities
    case = stored_case(services)
    assert case.evidence is not None and case.evidence.faces_redacted == 1
    evidence = services.memory.state[case.evidence.key][0]
    assert evidence["media_type"] == "image/png"


def test_a_malformed_decision_is_ignored_and_the_next_one_counts(services: FakeServices) -> None:
    run, _ = triage(services, COMPLAINT, [{"decision": "maybe"}, {"decision": "dismiss"}])
    assert run.result["outcome"] == TriageOutcome.DISMISSED.value


def test_no_decision_escalates_then_expires_at_the_workflows_own_times(
    services: FakeServices,
) -> None:
    run, ctx = triage(services, COMPLAINT, [None, None])
    assert run.result["outcome"] == TriageOutcome.EXPIRED.value
    assert run.result["escalations"] == 1
    assert run.activities[-2:] == ["case_escalate", "case_close"]
    case = stored_case(services)
    assert case.escalations == 1 and case.status is CaseStatus.CLOSED
    # Each deadline runs from the workflow's clock: 60 s to escalate, 30 s more to expire.
    assert case.closed_at == (NOW + timedelta(seconds=90)).replace(tzinfo=UTC)
    assert services.topics() == ["cases.opened", "cases.escalated", "cases.closed"]
    assert ctx.statuses[-2:] == ["escalated", "closing"]


def test_a_decision_after_the_escalation_still_closes_the_case(services: FakeServices) -> None:
    run, _ = triage(services, COMPLAINT, [None, {"decision": "approve"}])
    assert run.result["outcome"] == TriageOutcome.APPROVED.value
    assert run.result["escalations"] == 1


def test_a_permanent_failure_after_the_case_opened_is_compensated(
    services: FakeServices,
) -> None:
    # vision refuses the redaction: an answer retrying cannot change.
    services.memory.handlers[("vision", "v1/images/redact")] = lambda _, __: reply(
        {"title": "unsupported"}, status=415
    )
    run, ctx = triage(services, COMPLAINT, [{"decision": "approve"}], image=True)
    assert isinstance(run.failure, TaskFailedError)
    assert run.failure.details.error_type == "NonRetryableError"
    assert run.activities[-2:] == ["evidence_redact", "case_fail"]
    case = stored_case(services)
    assert case.status is CaseStatus.FAILED and case.evidence is None
    assert "415" in (case.failure or "")
    assert services.topics() == ["cases.opened", "cases.closed"]
    assert ctx.statuses[-1] == "compensating"


def test_a_permanent_failure_before_the_case_writes_nothing(services: FakeServices) -> None:
    services.memory.handlers[("nlp", "v1/nlp")] = lambda _, __: reply({"not": "nlp"})
    run, _ = triage(services, COMPLAINT, [])
    assert isinstance(run.failure, TaskFailedError)
    assert "outside its contract" in str(run.failure)
    assert "case_fail" not in run.activities
    assert stored_case(services) is None and services.topics() == []


def test_case_activities_run_twice_change_and_announce_once_by_event_id(
    services: FakeServices,
) -> None:
    run, _ = triage(services, COMPLAINT, [{"decision": "dismiss"}])
    case = run.result["case_id"]
    closing = {"case_id": case, "outcome": "dismissed", "at": NOW.isoformat() + "Z"}
    again = asyncio.run(review_triage.case_close(None, closing))  # type: ignore[arg-type]
    assert again["outcome"] == "dismissed"
    ids = [event_id for _, event_id, _ in services.memory.published]
    assert ids.count(f"{case}:closed") == 2  # republished under the same id: dropped


def test_an_image_past_its_time_to_live_fails_vision_at_once(services: FakeServices) -> None:
    gone = {"sha256": "0" * 64, "media_type": "image/png", "bytes": 3}
    with pytest.raises(Exception, match="no longer kept") as failure:
        asyncio.run(review_triage.vision_analyze(None, gone))  # type: ignore[arg-type]
    assert type(failure.value).__name__ == "NonRetryableError"


def test_a_service_down_is_retryable(services: FakeServices) -> None:
    services.memory.handlers[("sentiment", "v1/sentiment")] = lambda _, __: reply({}, 503)
    with pytest.raises(Exception, match="503") as failure:
        asyncio.run(review_triage.sentiment_score(None, {"text": "ok"}))  # type: ignore[arg-type]
    assert type(failure.value).__name__ == "ServiceUnavailable"


# -- forecast_and_alert ------------------------------------------------------------------------
def series_snapshot(series: str, values: list[float]) -> dict[str, Any]:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    points = [
        {"timestamp": (start + timedelta(minutes=i)).isoformat(), "value": v}
        for i, v in enumerate(values)
    ]
    scores = [
        {
            "timestamp": (start + timedelta(minutes=i)).timestamp(),
            "value": v,
            "status": "scored",
            "score": 0.5,
            "is_anomaly": False,
        }
        for i, v in enumerate(values)
    ]
    return {
        "series": series,
        "config": {"period": 24, "step_s": 60, "threshold": 5},
        "points": points,
        "scores": scores,
        "anomalies": 0,
        "observed": len(values),
        "model": {"name": "detector", "version": "1"},
    }


def forecast_answer(series: str, point: list[float]) -> dict[str, Any]:
    return {
        "forecasts": [
            {
                "id": series,
                "point": point,
                "intervals": [
                    {"level": 95, "lower": [p - 1 for p in point], "upper": [p + 1 for p in point]}
                ],
                "model": {"name": "ETS(A,N,N)"},
                "library": {"name": "statsmodels", "version": "0"},
                "seconds": 0.01,
            }
        ]
    }


@pytest.fixture
def forecasting() -> FakeServices:
    requests: list[Any] = []

    def forecast(body: Any, _: bytes | None) -> Reply:
        requests.append(body)
        (series,) = body["series"]
        rising = {"latency": [10.0, 20.0, 30.0], "errors": [1.0, 1.0, 1.0]}
        return reply(forecast_answer(series["id"], rising[series["id"]]))

    sidecar = MemorySidecar(
        {
            ("anomaly", "v1/metrics/latency"): lambda _, __: reply(
                series_snapshot("latency", [10.0] * 30)
            ),
            ("anomaly", "v1/metrics/errors"): lambda _, __: reply(
                series_snapshot("errors", [1.0] * 30)
            ),
            ("forecast", "v1/forecasts"): forecast,
        }
    )
    fake = FakeServices(sidecar)
    fake.forecast_requests = requests  # type: ignore[attr-defined]
    forecast_and_alert.configure(fake, max_points=20)
    return fake


def test_forecast_and_alert_publishes_each_outlook_and_alerts_on_a_crossed_bound(
    forecasting: FakeServices,
) -> None:
    ctx = FakeContext("run-1")
    raw = {
        "series": [{"series": "latency", "upper": 25.0}, {"series": "errors", "upper": 5.0}],
        "horizon": 3,
        "model": "ets",
    }
    run = drive(forecast_and_alert.forecast_and_alert, ctx, raw, forecast_and_alert.ACTIVITIES)
    assert run.failure is None, run.failure
    assert run.activities == [
        "series_read",
        "series_read",
        "series_forecast",
        "series_forecast",
        "outlook_publish",
        "outlook_publish",
    ]
    # Fitted on the latest `max_points` points only.
    assert [len(r["series"][0]["values"]) for r in forecasting.forecast_requests] == [20, 20]  # type: ignore[attr-defined]
    assert run.result["alerts"] >= 1
    by_series = {o["series"]: o for o in run.result["outlooks"]}
    assert by_series["latency"]["alerts"] and not by_series["errors"]["alerts"]
    published = forecasting.memory.published
    assert [(topic, event_id) for topic, event_id, _ in published] == [
        ("forecasts.published", "run-1:latency"),
        ("forecasts.published", "run-1:errors"),
    ]
    assert ctx.statuses == ["reading", "forecasting", "publishing"]


def test_an_unknown_series_is_published_without_a_forecast(forecasting: FakeServices) -> None:
    ctx = FakeContext("run-2")
    raw = {"series": [{"series": "nowhere", "upper": 1.0}], "horizon": 3}
    run = drive(forecast_and_alert.forecast_and_alert, ctx, raw, forecast_and_alert.ACTIVITIES)
    assert run.failure is None, run.failure
    assert run.activities == ["series_read", "outlook_publish"]
    (found,) = run.result["outlooks"]
    assert found["alerts"] == [] and run.result["alerts"] == 0
    assert ctx.statuses == ["reading", "publishing"]
