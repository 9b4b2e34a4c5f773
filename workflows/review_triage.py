"""review_triage: analyse a review, open a case for a complaint, wait for a decision.

    nlp_analyze ────────┐
    sentiment_score ────┼─> assess ─ not a complaint ─────────────────────> no_case
    vision_analyze? ────┘      └─ complaint ─> case_open ─> wait for `decision`
                                                 ├─ approve ─> evidence_redact? ─> case_close
                                                 ├─ dismiss ───────────────────> case_close
                                                 └─ timeout ─> case_escalate ─> wait again
                                                                 └─ timeout ──> case_close (expired)

Every activity retries under one policy. A permanent failure (retries spent, or an answer
retrying cannot change) after the case opened is compensated: `case_fail` removes the
evidence written so far and marks the case failed, then the workflow fails with the
original error. Before the case opens nothing has been written, so nothing is undone.

The workflow's code is replayed from its history after a crash, so it only decides:
times come from the context, everything else from activities, which record their results.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    TaskFailedError,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_all,
)
from pydantic import ValidationError

from consort.contracts.cases import (
    CASES_CLOSED,
    CASES_ESCALATED,
    CASES_OPENED,
    EXCERPT_CHARS,
    Case,
    CaseClosed,
    CaseEntry,
    CaseEscalated,
    CaseOpened,
    CaseOutcome,
    CaseStatus,
    Decision,
    DecisionIn,
    Evidence,
    ImageFindings,
)
from consort.contracts.nlp import NlpRequest, NlpResult
from consort.contracts.sentiment import SentimentRequest, SentimentResult
from consort.contracts.vision import ImageAnalysis
from consort.contracts.workflows import (
    DECISION_EVENT,
    REVIEW_TRIAGE,
    CaseClosing,
    CaseEscalation,
    CaseFailure,
    EvidenceRequest,
    ImageRef,
    ReviewTriageInput,
    ReviewTriageResult,
    TriageOutcome,
)
from workflows import cases
from workflows.complaints import Assessment, assess
from workflows.services import NonRetryableError, Services

log = logging.getLogger("workflows.review_triage")

NAME = REVIEW_TRIAGE
NLP_ANALYZE = "nlp_analyze"
SENTIMENT_SCORE = "sentiment_score"
VISION_ANALYZE = "vision_analyze"
CASE_OPEN = "case_open"
CASE_ESCALATE = "case_escalate"
EVIDENCE_REDACT = "evidence_redact"
CASE_CLOSE = "case_close"
CASE_FAIL = "case_fail"

#: What the workflow is doing, as its custom status (`step` in the API).
ANALYZING = "analyzing"
AWAITING_DECISION = "awaiting_decision"
ESCALATED = "escalated"
CLOSING = "closing"
COMPENSATING = "compensating"

Steps = Generator[Any, Any, Any]


def _now(ctx: DaprWorkflowContext) -> datetime:
    """The workflow's clock: the same on every replay."""
    return ctx.current_utc_datetime.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Dependencies:
    """What the workflow and its activities use, set by `configure` before they run."""

    services: Services
    #: The retry policy of every activity call (None: no retries).
    policy: RetryPolicy | None = None


_dependencies: Dependencies | None = None


def configure(services: Services, policy: RetryPolicy | None = None) -> None:
    """Give the workflow and its activities their services and retry policy.

    Args:
        services: how activities reach the other services and the state store.
        policy: the retry policy of every activity call.
    """
    global _dependencies
    _dependencies = Dependencies(services, policy)


def dependencies() -> Dependencies:
    """What `configure` set; a RuntimeError before it was called."""
    if _dependencies is None:
        raise RuntimeError(f"{NAME}: configure() was not called before its activities ran")
    return _dependencies


def register(runtime: WorkflowRuntime, services: Services, policy: RetryPolicy) -> None:
    """Configure review_triage and register it and its activities with `runtime`.

    Args:
        runtime: the app's workflow runtime (before it starts).
        services: how activities reach the other services and the state store.
        policy: the retry policy of every activity call.
    """
    configure(services, policy)
    runtime.register_workflow(review_triage, name=NAME)
    for name, activity in ACTIVITIES.items():
        runtime.register_activity(activity, name=name)


# -- the workflow ------------------------------------------------------------------------------
def review_triage(ctx: DaprWorkflowContext, raw: Any) -> Steps:
    """The workflow: analyse, assess, and for a complaint open a case and see it closed."""
    policy = dependencies().policy
    review = ReviewTriageInput.model_validate(raw)
    ctx.set_custom_status(ANALYZING)
    calls: list[Any] = [
        ctx.call_activity(
            NLP_ANALYZE, input=NlpRequest(text=review.text, tokens=True), retry_policy=policy
        ),
        ctx.call_activity(
            SENTIMENT_SCORE, input=SentimentRequest(text=review.text), retry_policy=policy
        ),
    ]
    if review.image is not None:
        calls.append(ctx.call_activity(VISION_ANALYZE, input=review.image, retry_policy=policy))
    results = yield when_all(calls)
    nlp = NlpResult.model_validate(results[0])
    sentiment = SentimentResult.model_validate(results[1])
    image = ImageFindings.model_validate(results[2]) if review.image is not None else None
    assessment = assess(review.text, review.product, nlp, sentiment)
    result = ReviewTriageResult(
        review_id=review.review_id,
        label=assessment.label,
        compound=assessment.compound,
        products=assessment.products,
        defects=assessment.defects,
        negative_aspects=assessment.negative_aspects,
        image=image,
        outcome=TriageOutcome.NO_CASE,
    )
    if not assessment.is_complaint:
        return result.model_dump(mode="json")

    draft = _draft_case(ctx, review, assessment, image)
    case = Case.model_validate(
        (yield ctx.call_activity(CASE_OPEN, input=draft, retry_policy=policy))
    )
    if not ctx.is_replaying:
        log.info("case %s opened for review %s", case.id, review.review_id)
    try:
        outcome, escalations = yield from _decide(ctx, review, case)
    except TaskFailedError as exc:
        # Compensate: no half-done case is left behind, then fail as the step did.
        ctx.set_custom_status(COMPENSATING)
        if not ctx.is_replaying:
            log.error("case %s failed, compensating: %s", case.id, exc)
        failure = CaseFailure(case_id=case.id, reason=str(exc)[:1000], at=_now(ctx))
        yield ctx.call_activity(CASE_FAIL, input=failure, retry_policy=policy)
        raise
    return result.model_copy(
        update={"case_id": case.id, "outcome": outcome, "escalations": escalations}
    ).model_dump(mode="json")


def _decide(
    ctx: DaprWorkflowContext, review: ReviewTriageInput, case: Case
) -> Generator[Any, Any, tuple[TriageOutcome, int]]:
    """Wait for a decision (escalating once when none comes), then close the case."""
    policy = dependencies().policy
    ctx.set_custom_status(AWAITING_DECISION)
    decision = yield from _await_decision(ctx, review.decision_timeout_s)
    escalations = 0
    if decision is None:
        escalations = 1
        escalation = CaseEscalation(case_id=case.id, level=1, at=_now(ctx))
        yield ctx.call_activity(CASE_ESCALATE, input=escalation, retry_policy=policy)
        if not ctx.is_replaying:
            log.warning("case %s escalated: no decision in time", case.id)
        ctx.set_custom_status(ESCALATED)
        decision = yield from _await_decision(ctx, review.escalated_timeout_s)
    ctx.set_custom_status(CLOSING)
    evidence: Evidence | None = None
    if decision is None:
        outcome = TriageOutcome.EXPIRED
    elif decision.decision is Decision.APPROVE:
        outcome = TriageOutcome.APPROVED
        if review.image is not None:
            request = EvidenceRequest(case_id=case.id, image=review.image)
            evidence = Evidence.model_validate(
                (yield ctx.call_activity(EVIDENCE_REDACT, input=request, retry_policy=policy))
            )
    else:
        outcome = TriageOutcome.DISMISSED
    closing = CaseClosing(
        case_id=case.id,
        outcome=CaseOutcome(outcome.value),
        decision=decision.decision if decision else None,
        by=decision.by if decision else None,
        note=decision.note if decision else None,
        evidence=evidence,
        at=_now(ctx),
    )
    yield ctx.call_activity(CASE_CLOSE, input=closing, retry_policy=policy)
    if not ctx.is_replaying:
        log.info("case %s closed: %s", case.id, outcome.value)
    return outcome, escalations


def _await_decision(
    ctx: DaprWorkflowContext, timeout_s: float
) -> Generator[Any, Any, DecisionIn | None]:
    """The first valid decision before the deadline, or None when none came."""
    deadline = ctx.current_utc_datetime + timedelta(seconds=timeout_s)
    while True:
        try:
            raw = yield ctx.wait_for_external_event(DECISION_EVENT, timeout=deadline)
        except TimeoutError:
            return None
        try:
            return DecisionIn.model_validate(raw)
        except ValidationError as exc:
            if not ctx.is_replaying:
                log.warning("%s: ignored a malformed decision: %s", ctx.instance_id, exc)


# -- activities --------------------------------------------------------------------------------
async def nlp_analyze(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Sentences, tokens and entities of the review (the nlp service)."""
    services = dependencies().services
    request = NlpRequest.model_validate(raw)
    result = await services.call_model(
        services.targets.nlp, "v1/nlp", NlpResult, json=request.model_dump(mode="json")
    )
    return result.model_dump(mode="json")


async def sentiment_score(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """The review's sentiment, with its aspects (the sentiment service)."""
    services = dependencies().services
    request = SentimentRequest.model_validate(raw)
    result = await services.call_model(
        services.targets.sentiment, "v1/sentiment", SentimentResult, json=request.model_dump()
    )
    return result.model_dump(mode="json")


async def vision_analyze(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Faces, text and sharpness of the review's image (the vision service)."""
    services = dependencies().services
    ref = ImageRef.model_validate(raw)
    data = await _image(ref)
    analysis = await services.call_model(
        services.targets.vision,
        "v1/images/analyze",
        ImageAnalysis,
        data=data,
        params={"features": "faces,text,quality"},
        headers={"content-type": ref.media_type},
        timeout_s=services.vision_timeout_s,
    )
    return ImageFindings(
        sha256=ref.sha256,
        faces=len(analysis.faces.faces) if analysis.faces else 0,
        text=[line.text for line in analysis.text.lines] if analysis.text else [],
        sharpness=analysis.quality.sharpness if analysis.quality else None,
    ).model_dump(mode="json")


async def case_open(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Store the drafted case (once) and announce it on `cases.opened`."""
    services = dependencies().services
    case, _ = await cases.open_case(
        services.sidecar(), services.statestore, Case.model_validate(raw)
    )
    # Published on every run of this activity: if an earlier run stored the case and
    # died before publishing, this is the only announcement; if it did publish, the
    # same event id lets consumers drop the repeat.
    await services.publish(
        CASES_OPENED,
        CaseOpened(
            case_id=case.id,
            review_id=case.review_id,
            priority=case.priority,
            product=case.product,
            defects=case.defects,
            compound=case.compound,
            opened_at=case.opened_at,
        ),
        event_id=f"{case.id}:opened",
    )
    return case.model_dump(mode="json")


async def case_escalate(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Escalate the case to a level (once per level) and announce it on `cases.escalated`."""
    escalation = CaseEscalation.model_validate(raw)
    case = await _update(
        escalation.case_id, lambda c: cases.escalated(c, escalation.level, escalation.at)
    )
    await dependencies().services.publish(
        CASES_ESCALATED,
        CaseEscalated(case_id=case.id, level=escalation.level, escalated_at=escalation.at),
        event_id=f"{case.id}:escalated:{escalation.level}",
    )
    return case.model_dump(mode="json")


async def evidence_redact(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Keep the review's image with its faces blurred (the vision service) as evidence."""
    services = dependencies().services
    request = EvidenceRequest.model_validate(raw)
    data = await _image(request.image)
    reply = await services.call(
        services.targets.vision,
        "v1/images/redact",
        data=data,
        headers={"content-type": request.image.media_type},
        timeout_s=services.vision_timeout_s,
    )
    key = await cases.save_evidence(
        services.sidecar(),
        services.statestore,
        request.case_id,
        reply.body,
        request.image.media_type,
    )
    return Evidence(
        key=key,
        media_type=request.image.media_type,
        faces_redacted=int(reply.headers.get("x-faces-redacted", "0")),
        bytes=len(reply.body),
    ).model_dump(mode="json")


async def case_close(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """Close the case with its outcome (once) and announce it on `cases.closed`."""
    closing = CaseClosing.model_validate(raw)
    case = await _update(closing.case_id, lambda c: cases.closed(c, closing))
    await _announce_closed(case)
    return case.model_dump(mode="json")


async def case_fail(ctx: WorkflowActivityContext, raw: Any) -> dict[str, Any]:
    """The compensation: remove the case's evidence, mark it failed, announce it closed."""
    services = dependencies().services
    failure = CaseFailure.model_validate(raw)
    # Undo what the failed steps wrote, then record the failure.
    await cases.delete_evidence(services.sidecar(), services.statestore, failure.case_id)
    case = await _update(failure.case_id, lambda c: cases.failed(c, failure.reason, failure.at))
    await _announce_closed(case)
    return case.model_dump(mode="json")


#: The activities by the names they are registered (and recorded in histories) under.
ACTIVITIES: dict[str, Callable[[WorkflowActivityContext, Any], Awaitable[dict[str, Any]]]] = {
    NLP_ANALYZE: nlp_analyze,
    SENTIMENT_SCORE: sentiment_score,
    VISION_ANALYZE: vision_analyze,
    CASE_OPEN: case_open,
    CASE_ESCALATE: case_escalate,
    EVIDENCE_REDACT: evidence_redact,
    CASE_CLOSE: case_close,
    CASE_FAIL: case_fail,
}


# -- helpers of the activities -----------------------------------------------------------------
async def _image(ref: ImageRef) -> bytes:
    services = dependencies().services
    data = await cases.load_image(services.sidecar(), services.statestore, ref)
    if data is None:
        raise NonRetryableError(
            f"image {ref.sha256} is no longer kept (ORCHESTRATOR_IMAGE_TTL_S passed)"
        )
    return data


async def _update(case_id: str, change: Callable[[Case], Case | None]) -> Case:
    services = dependencies().services
    try:
        case, _ = await cases.update_case(services.sidecar(), services.statestore, case_id, change)
    except cases.CaseNotFound as exc:  # retrying cannot bring a deleted case back
        raise NonRetryableError(f"case {case_id} does not exist") from exc
    return case


async def _announce_closed(case: Case) -> None:
    if case.outcome is None or case.closed_at is None:
        return
    await dependencies().services.publish(
        CASES_CLOSED,
        CaseClosed(
            case_id=case.id,
            outcome=case.outcome,
            decision=case.decision,
            closed_at=case.closed_at,
            reason=case.failure,
        ),
        event_id=f"{case.id}:closed",
    )


def _draft_case(
    ctx: DaprWorkflowContext,
    review: ReviewTriageInput,
    assessment: Assessment,
    image: ImageFindings | None,
) -> Case:
    opened_at = _now(ctx)
    return Case(
        id=ctx.instance_id,
        review_id=review.review_id,
        status=CaseStatus.OPEN,
        priority=assessment.priority,
        product=review.product or (assessment.products[0] if assessment.products else None),
        products=assessment.products,
        defects=assessment.defects,
        negative_aspects=assessment.negative_aspects,
        compound=assessment.compound,
        excerpt=review.text[:EXCERPT_CHARS],
        image=image,
        opened_at=opened_at,
        history=[CaseEntry(at=opened_at, what="opened")],
    )
