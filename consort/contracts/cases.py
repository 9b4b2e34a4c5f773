"""Cases: what the orchestrator opens for a complaint that needs a person's decision.

A case is opened by a `review_triage` workflow when a negative review names a product or
a defect; its id is the workflow's instance id, so one workflow has at most one case. It
waits for a decision (`approve` or `dismiss`); past its deadline it is escalated, and past
the escalated deadline it expires. A permanent failure after it opened marks it `failed`.

    open --decision--> closed (approved | dismissed)
      \\--timeout--> escalated --decision--> closed
                         \\--timeout--> closed (expired)
    open | escalated --permanent failure--> failed
    open | escalated --workflow terminated--> closed (terminated)
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

#: Events of a case's life (see `consort.contracts.events.TOPICS`).
CASES_OPENED = "cases.opened"
CASES_ESCALATED = "cases.escalated"
CASES_CLOSED = "cases.closed"
#: Workflow instance ids (and so case ids): letters, digits, `-`, `_`, `.`, `:`.
INSTANCE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
#: Longest excerpt of the review a case keeps.
EXCERPT_CHARS = 280


class CaseStatus(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    CLOSED = "closed"
    FAILED = "failed"


class Decision(StrEnum):
    """What a person decided about a case."""

    APPROVE = "approve"
    DISMISS = "dismiss"


class CaseOutcome(StrEnum):
    """How a case ended."""

    APPROVED = "approved"
    DISMISSED = "dismissed"
    EXPIRED = "expired"
    FAILED = "failed"
    TERMINATED = "terminated"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"


class ImageFindings(BaseModel):
    """What the vision service found in a review's image."""

    sha256: str
    faces: int = Field(ge=0, description="Faces detected (they are blurred in evidence).")
    text: list[str] = Field(description="Lines of text read in the image (labels, serials).")
    sharpness: float | None = Field(default=None, description="Variance of the Laplacian.")


class Evidence(BaseModel):
    """The review's image attached to an approved case, every face blurred."""

    key: str = Field(description="State key of the redacted image (the orchestrator's).")
    media_type: str
    faces_redacted: int = Field(ge=0)
    bytes: int = Field(ge=0)


class CaseEntry(BaseModel):
    """One step in a case's life; each step is recorded once, however often it ran."""

    at: datetime
    what: str = Field(examples=["opened", "escalated", "closed", "failed"])
    detail: str | None = None


class Case(BaseModel):
    """A complaint waiting for (or closed by) a person's decision."""

    id: str = Field(pattern=INSTANCE_ID_PATTERN, description="The workflow's instance id.")
    review_id: str
    status: CaseStatus
    priority: Priority
    product: str | None = Field(default=None, description="The product the review is about.")
    products: list[str] = Field(description="Products named: the review's field and entities.")
    defects: list[str] = Field(description="Defect words found (lemmas): `crack`, `leak`, ...")
    negative_aspects: list[str] = Field(description="Aspects spoken of negatively.")
    compound: float = Field(ge=-1, le=1, description="The review's sentiment.")
    excerpt: str = Field(max_length=EXCERPT_CHARS)
    image: ImageFindings | None = None
    opened_at: datetime
    escalations: int = Field(default=0, ge=0)
    decision: Decision | None = None
    decided_by: str | None = None
    note: str | None = None
    outcome: CaseOutcome | None = None
    closed_at: datetime | None = None
    evidence: Evidence | None = None
    failure: str | None = Field(default=None, description="Why the case failed, when it did.")
    history: list[CaseEntry]


class CaseList(BaseModel):
    """Cases, most recently opened first."""

    cases: list[Case]


# -- events ----------------------------------------------------------------------------------
class CaseOpened(BaseModel):
    """Data of `cases.opened`. CloudEvent id: `<case id>:opened`."""

    case_id: str
    review_id: str
    priority: Priority
    product: str | None = None
    defects: list[str]
    compound: float
    opened_at: datetime


class CaseEscalated(BaseModel):
    """Data of `cases.escalated`: nobody decided in time. CloudEvent id:
    `<case id>:escalated:<level>`."""

    case_id: str
    level: int = Field(ge=1)
    escalated_at: datetime


class CaseClosed(BaseModel):
    """Data of `cases.closed`: approved, dismissed, expired, terminated or failed.
    CloudEvent id: `<case id>:closed`."""

    case_id: str
    outcome: CaseOutcome
    decision: Decision | None = None
    closed_at: datetime
    reason: str | None = Field(default=None, description="For a failed case: why.")


class DecisionIn(BaseModel):
    """A person's decision on a case, raised to its workflow as the `decision` event."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    by: str | None = Field(default=None, max_length=100, description="Who decided.")
    note: str | None = Field(default=None, max_length=1000)
