"""The orchestrator's contract: durable workflows, their inputs, results and events.

`review_triage` analyses one review (nlp, sentiment and, with an image, vision, in
parallel), opens a case for a complaint and waits for a person's decision.
`forecast_and_alert` forecasts tracked metric series on a schedule and publishes each
outlook as `forecasts.published`, with alerts where the forecast crosses a bound.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consort.contracts.anomaly import SERIES_ID_PATTERN
from consort.contracts.cases import (
    INSTANCE_ID_PATTERN,
    CaseOutcome,
    Decision,
    Evidence,
    ImageFindings,
)
from consort.contracts.forecast import MAX_HORIZON, ForecastModel, Interval
from consort.contracts.reviews import REVIEW_ID_PATTERN
from consort.contracts.sentiment import SentimentLabel, Text
from consort.contracts.vision import IMAGE_MEDIA_TYPES

#: Workflow names, as registered with the workflow runtime.
REVIEW_TRIAGE = "review_triage"
FORECAST_AND_ALERT = "forecast_and_alert"
#: The event of every forecast_and_alert outlook (see `consort.contracts.events.TOPICS`).
FORECASTS_PUBLISHED = "forecasts.published"
#: The external event a review_triage workflow waits for.
DECISION_EVENT = "decision"
#: Largest image a review may carry into a workflow (decoded). Workflows keep only its hash:
#: the image itself waits in the state store until the workflow needs it.
MAX_TRIAGE_IMAGE_BYTES = 2 * 1024 * 1024
#: The same limit on the base64 text of the image.
MAX_TRIAGE_IMAGE_BASE64 = 4 * math.ceil(MAX_TRIAGE_IMAGE_BYTES / 3)
#: Largest start request (an image at its limit, in base64, with the text around it).
MAX_TRIAGE_REQUEST_BYTES = MAX_TRIAGE_IMAGE_BASE64 + 64 * 1024
#: Longest a person may be given to decide (each of the two waits).
MAX_DECISION_TIMEOUT_S = 30 * 24 * 3600
#: Most series one forecast_and_alert run watches.
MAX_WATCHED_SERIES = 50


# -- review_triage ---------------------------------------------------------------------------
class ImageIn(BaseModel):
    """An image attached to a review, base64-encoded."""

    model_config = ConfigDict(extra="forbid")

    media_type: str = Field(description=f"One of {', '.join(IMAGE_MEDIA_TYPES)}.")
    data: str = Field(
        min_length=4,
        max_length=MAX_TRIAGE_IMAGE_BASE64,
        description=f"The image, base64 (at most {MAX_TRIAGE_IMAGE_BYTES} bytes decoded).",
    )

    @field_validator("media_type")
    @classmethod
    def _known_type(cls, media_type: str) -> str:
        if media_type.lower() not in IMAGE_MEDIA_TYPES:
            raise ValueError(f"must be one of {', '.join(IMAGE_MEDIA_TYPES)}")
        return media_type.lower()

    @field_validator("data")
    @classmethod
    def _base64(cls, data: str) -> str:
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("must be standard base64") from exc
        return data

    def decoded(self) -> bytes:
        return base64.b64decode(self.data)


class ReviewTriageRequest(BaseModel):
    """A review to triage. With `review_id`, starting again is idempotent: the workflow
    `triage-<review_id>` is answered as it stands instead of starting twice."""

    model_config = ConfigDict(extra="forbid")

    review_id: str | None = Field(default=None, pattern=REVIEW_ID_PATTERN)
    text: Text
    product: str | None = Field(default=None, max_length=200)
    image: ImageIn | None = None
    decision_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DECISION_TIMEOUT_S,
        description="How long a person has to decide before the case is escalated "
        "(default: the orchestrator's setting).",
    )
    escalated_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DECISION_TIMEOUT_S,
        description="How long an escalated case waits before it expires "
        "(default: the orchestrator's setting).",
    )


class ImageRef(BaseModel):
    """An image held in the orchestrator's state store under `image:<sha256>`."""

    sha256: str = Field(min_length=64, max_length=64)
    media_type: str
    bytes: int = Field(ge=1, le=MAX_TRIAGE_IMAGE_BYTES)


class ReviewTriageInput(BaseModel):
    """The input of a review_triage workflow (what its history records)."""

    review_id: str = Field(pattern=REVIEW_ID_PATTERN)
    text: Text
    product: str | None = None
    image: ImageRef | None = None
    decision_timeout_s: float = Field(gt=0, le=MAX_DECISION_TIMEOUT_S)
    escalated_timeout_s: float = Field(gt=0, le=MAX_DECISION_TIMEOUT_S)


class TriageOutcome(StrEnum):
    """How a triage ended (a permanent failure fails the workflow instead)."""

    NO_CASE = "no_case"
    APPROVED = "approved"
    DISMISSED = "dismissed"
    EXPIRED = "expired"


class ReviewTriageResult(BaseModel):
    """The output of a review_triage workflow."""

    review_id: str
    label: SentimentLabel
    compound: float
    products: list[str]
    defects: list[str]
    negative_aspects: list[str]
    image: ImageFindings | None = None
    case_id: str | None = Field(default=None, description="The case, when one was opened.")
    outcome: TriageOutcome
    escalations: int = 0


# -- managing workflows ----------------------------------------------------------------------
class WorkflowStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"
    PENDING = "pending"
    SUSPENDED = "suspended"
    STALLED = "stalled"
    UNKNOWN = "unknown"


#: Statuses a workflow never leaves.
TERMINAL_STATUSES = frozenset(
    {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED}
)


class WorkflowStarted(BaseModel):
    """A workflow was started (202), or one with this id already exists (200)."""

    id: str = Field(pattern=INSTANCE_ID_PATTERN)
    workflow: str
    created: bool = Field(description="False when the instance existed already.")


class WorkflowFailure(BaseModel):
    type: str
    message: str


class WorkflowInfo(BaseModel):
    """A workflow instance as the workflow engine holds it."""

    id: str
    workflow: str
    status: WorkflowStatus
    step: str | None = Field(
        default=None, description="What it is doing (its custom status): analyzing, ..."
    )
    created_at: datetime
    updated_at: datetime
    input: Any = None
    output: Any = None
    failure: WorkflowFailure | None = None


class WorkflowStepKind(StrEnum):
    ACTIVITY = "activity"
    TIMER = "timer"
    EVENT = "event"
    CHILD = "child"


class WorkflowStepStatus(StrEnum):
    SCHEDULED = "scheduled"  # an activity or child workflow not finished yet
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"  # a timer not fired yet
    FIRED = "fired"
    RECEIVED = "received"  # an event raised to it


class WorkflowStep(BaseModel):
    """One step of a workflow's history, as its engine recorded it."""

    name: str = Field(description="The activity, event or child workflow; a timer's purpose.")
    kind: WorkflowStepKind
    status: WorkflowStepStatus
    started_at: datetime
    ended_at: datetime | None = Field(default=None, description="None while it runs.")
    until: datetime | None = Field(default=None, description="When a timer fires.")


class WorkflowRun(BaseModel):
    """A workflow instance with the steps of its history."""

    id: str
    workflow: str
    status: WorkflowStatus
    step: str | None = Field(default=None, description="Its custom status: analyzing, ...")
    created_at: datetime
    updated_at: datetime
    steps: list[WorkflowStep]


class WorkflowList(BaseModel):
    """Workflow instances the engine holds, most recently created first."""

    workflows: list[WorkflowRun]
    held: int = Field(description="Instances the engine holds in all (any status, unpurged).")


#: The statuses `GET /v1/workflows?status=running` lists: those not finished.
UNFINISHED_STATUSES = frozenset(
    {
        WorkflowStatus.RUNNING,
        WorkflowStatus.PENDING,
        WorkflowStatus.SUSPENDED,
        WorkflowStatus.STALLED,
    }
)


class TerminateIn(BaseModel):
    """Why a workflow is terminated (kept as its output)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


# -- forecast_and_alert ----------------------------------------------------------------------
class SeriesWatch(BaseModel):
    """A tracked series and the bounds its forecast must stay within."""

    model_config = ConfigDict(extra="forbid")

    series: str = Field(pattern=SERIES_ID_PATTERN, examples=["checkout.latency-ms"])
    upper: float | None = Field(default=None, description="Alert when forecast above this.")
    lower: float | None = Field(default=None, description="Alert when forecast below this.")

    @model_validator(mode="after")
    def _ordered(self) -> SeriesWatch:
        if self.upper is not None and self.lower is not None and self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class ForecastRunRequest(BaseModel):
    """Series to forecast now, each compared with its bounds."""

    model_config = ConfigDict(extra="forbid")

    series: list[SeriesWatch] = Field(min_length=1, max_length=MAX_WATCHED_SERIES)
    horizon: int = Field(default=12, ge=1, le=MAX_HORIZON, description="Steps ahead.")
    model: ForecastModel = Field(
        default=ForecastModel.ETS, description="The forecast service's model (ETS: fast)."
    )

    @field_validator("series")
    @classmethod
    def _unique(cls, series: list[SeriesWatch]) -> list[SeriesWatch]:
        names = [s.series for s in series]
        if len(set(names)) != len(names):
            raise ValueError("each series may be watched once")
        return series


class ForecastSchedule(ForecastRunRequest):
    """A forecast_and_alert run every `every_s` seconds (a Dapr job on the scheduler)."""

    every_s: int = Field(ge=1, le=7 * 24 * 3600, description="Seconds between runs.")


class ForecastScheduleInfo(BaseModel):
    """The schedule of forecast_and_alert (None when there is none) and its latest runs."""

    schedule: ForecastSchedule | None = None
    recent_runs: list[str] = Field(default_factory=list, description="Newest first.")


class ForecastRunInput(ForecastRunRequest):
    """The input of a forecast_and_alert workflow."""

    model_config = ConfigDict(extra="ignore")


class RecentScores(BaseModel):
    """What the anomaly detector saw in a series' most recent points."""

    points: int = Field(description="Points of the window the forecast was fitted on.")
    recent: int = Field(description="How many of the latest points the figures below cover.")
    anomalies: int = Field(description="Anomalous points among the recent ones.")
    max_abs_score: float | None = Field(description="Largest |robust z| among them.")
    threshold: float = Field(description="The detector's |z| threshold for the series.")
    last_timestamp: datetime
    last_value: float


class SeriesHistory(BaseModel):
    """What forecast_and_alert reads of one series from the anomaly service."""

    series: str
    found: bool = Field(description="False when the anomaly service knows no such series.")
    values: list[float] = Field(default_factory=list, description="Oldest first.")
    period: int = 1
    step_s: float | None = None
    recent: RecentScores | None = None


class AlertLevel(StrEnum):
    """critical: the point forecast crosses a bound. warning: only its 95 % interval does."""

    CRITICAL = "critical"
    WARNING = "warning"


class Alert(BaseModel):
    """The first forecast step at which the forecast crosses a bound."""

    bound: str = Field(examples=["upper", "lower"])
    limit: float
    level: AlertLevel
    step: int = Field(ge=1, description="Steps ahead, 1 = the next point.")
    at: datetime | None = Field(default=None, description="When that step falls.")
    value: float = Field(description="The forecast (point, or interval end) at that step.")
    confirmed_by_anomalies: bool = Field(
        description="The detector also flagged recent points: the crossing continues them."
    )


class OutlookStatus(StrEnum):
    FORECAST = "forecast"
    UNKNOWN_SERIES = "unknown_series"
    INSUFFICIENT_DATA = "insufficient_data"


class SeriesOutlook(BaseModel):
    """Data of `forecasts.published`: one series' forecast beside its recent anomaly
    scores, with its alerts. CloudEvent id: `<run id>:<series>`."""

    run_id: str
    series: str
    status: OutlookStatus
    generated_at: datetime
    horizon: int
    step_s: float | None = None
    timestamps: list[datetime] = Field(default_factory=list)
    point: list[float] = Field(default_factory=list)
    intervals: list[Interval] = Field(default_factory=list)
    model: str | None = Field(default=None, description="The fitted model, e.g. ETS(A,N,N).")
    recent: RecentScores | None = None
    upper: float | None = None
    lower: float | None = None
    alerts: list[Alert] = Field(default_factory=list)


class ForecastRunResult(BaseModel):
    """The output of a forecast_and_alert workflow."""

    run_id: str
    outlooks: list[SeriesOutlook]
    alerts: int = Field(description="Alerts across every series.")


# -- activity payloads (inside the orchestrator: what workflow histories record) -------------
class CaseEscalation(BaseModel):
    case_id: str
    level: int = Field(ge=1)
    at: datetime


class EvidenceRequest(BaseModel):
    case_id: str
    image: ImageRef


class CaseClosing(BaseModel):
    case_id: str
    outcome: CaseOutcome
    decision: Decision | None = None
    by: str | None = None
    note: str | None = None
    evidence: Evidence | None = None
    at: datetime


class CaseFailure(BaseModel):
    case_id: str
    reason: str
    at: datetime


class SeriesRead(BaseModel):
    series: str = Field(pattern=SERIES_ID_PATTERN)
    max_points: int = Field(ge=3)


class Published(BaseModel):
    event_id: str
