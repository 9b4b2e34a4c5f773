"""The decisions the workflows make, without a sidecar: is a review a complaint (on the
real nlp and sentiment models' results), and does a forecast cross its bounds."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from apps.nlp.analyzer import NlpAnalyzer
from apps.nlp.settings import DEFAULT_PIPELINE
from apps.sentiment.analyzer import SentimentAnalyzer
from consort.contracts.anomaly import (
    MetricPoint,
    PointScore,
    ScoreStatus,
    SeriesConfig,
    SeriesSnapshot,
)
from consort.contracts.cases import (
    Case,
    CaseEntry,
    CaseOutcome,
    CaseStatus,
    Decision,
    Evidence,
    Priority,
)
from consort.contracts.common import ModelInfo
from consort.contracts.forecast import FittedModel, Interval, SeriesForecast
from consort.contracts.workflows import (
    MAX_TRIAGE_IMAGE_BASE64,
    AlertLevel,
    CaseClosing,
    ForecastRunRequest,
    OutlookStatus,
    ReviewTriageRequest,
    SeriesHistory,
    SeriesWatch,
)
from workflows import cases
from workflows.complaints import Assessment, assess
from workflows.outlooks import alerts, can_forecast, history_of, outlook, step_times


@pytest.fixture(scope="module")
def models() -> tuple[NlpAnalyzer, SentimentAnalyzer]:
    return NlpAnalyzer(DEFAULT_PIPELINE), SentimentAnalyzer()


def assessed(
    models: tuple[NlpAnalyzer, SentimentAnalyzer], text: str, product: str | None = None
) -> Assessment:
    nlp, sentiment = models
    return assess(text, product, nlp.analyze(text, tokens=True), sentiment.analyze(text))


# -- complaints --------------------------------------------------------------------------------
def test_a_negative_review_naming_defects_is_a_complaint(
    models: tuple[NlpAnalyzer, SentimentAnalyzer],
) -> None:
    found = assessed(
        models, "The Acme kettle arrived cracked and now it leaks everywhere. Terrible!"
    )
    assert found.is_complaint
    assert found.defects == ["crack", "leak"]  # lemmas: "cracked", "leaks"


def test_the_reviews_own_product_and_named_brands_are_products(
    models: tuple[NlpAnalyzer, SentimentAnalyzer],
) -> None:
    found = assessed(
        models, "My Samsung phone stopped working after a week. Very disappointed.", "Galaxy S9"
    )
    assert found.is_complaint
    assert found.products == ["Galaxy S9", "Samsung"]
    assert found.defects == ["stopped working"]  # a phrase lemmas would miss
    assert "phone" in found.negative_aspects


def test_a_negative_review_without_product_or_defect_is_not_a_complaint(
    models: tuple[NlpAnalyzer, SentimentAnalyzer],
) -> None:
    found = assessed(models, "The delivery was slow and the staff were rude.")
    assert found.label == "negative"
    assert (found.products, found.defects) == ([], [])
    assert not found.is_complaint
    assert found.negative_aspects == ["delivery", "staff"]


def test_defect_words_in_a_positive_review_open_nothing(
    models: tuple[NlpAnalyzer, SentimentAnalyzer],
) -> None:
    found = assessed(models, "No cracks, no leaks, this kettle is wonderful!")
    assert found.label == "positive" and found.defects == ["crack", "leak"]
    assert not found.is_complaint


def test_priority_is_high_for_strong_negatives_or_several_defects(
    models: tuple[NlpAnalyzer, SentimentAnalyzer],
) -> None:
    worst = assessed(models, "The screen is scratched and the battery is dead. Horrible!")
    assert worst.compound <= -0.6 and worst.priority is Priority.HIGH
    mild = assessed(models, "The lid is a bit loose.", "Acme kettle")
    assert mild.is_complaint and mild.defects == ["loose"]
    assert mild.compound > -0.6 and mild.priority is Priority.NORMAL


# -- outlooks ---------------------------------------------------------------------------------
START = datetime(2026, 1, 1, tzinfo=UTC)
LIBRARY = ModelInfo(name="statsmodels", version="0")


def snapshot(
    values: list[float], anomalous: set[int] = frozenset(), period: int = 24
) -> SeriesSnapshot:
    points = [
        MetricPoint(timestamp=START + timedelta(minutes=i), value=v) for i, v in enumerate(values)
    ]
    scores = [
        PointScore(
            timestamp=p.timestamp.timestamp(),
            value=p.value,
            status=ScoreStatus.SCORED,
            score=9.0 if i in anomalous else 0.5,
            is_anomaly=i in anomalous,
        )
        for i, p in enumerate(points)
    ]
    return SeriesSnapshot(
        series="s",
        config=SeriesConfig(period=period, step_s=60, threshold=5),
        points=points,
        scores=scores,
        anomalies=len(anomalous),
        observed=len(points),
        model=ModelInfo(name="detector", version="1"),
    )


def forecast(point: list[float], width: float = 5.0) -> SeriesForecast:
    return SeriesForecast(
        id="s",
        point=point,
        intervals=[
            Interval(level=95, lower=[p - width for p in point], upper=[p + width for p in point])
        ],
        model=FittedModel(name="ETS(A,N,N)"),
        library=LIBRARY,
        seconds=0.01,
    )


def test_history_keeps_the_latest_points_and_summarises_recent_scores() -> None:
    history = history_of(snapshot([float(i) for i in range(100)], anomalous={95, 40}), 50, 20)
    assert history.values == [float(i) for i in range(50, 100)]
    assert (history.period, history.step_s) == (24, 60)
    assert history.recent is not None
    # Only the anomaly among the latest 20 scores counts as recent.
    assert (history.recent.anomalies, history.recent.max_abs_score) == (1, 9.0)
    assert history.recent.last_timestamp == START + timedelta(minutes=99)
    assert step_times(history, 3) == [START + timedelta(minutes=m) for m in (100, 101, 102)]


def test_a_series_too_short_or_unknown_is_not_forecast() -> None:
    assert not can_forecast(history_of(snapshot([1.0, 2.0]), 100))
    assert not can_forecast(SeriesHistory(series="s", found=False))
    assert can_forecast(history_of(snapshot([1.0, 2.0, 3.0]), 100))


def test_the_point_forecast_crossing_a_bound_is_critical_its_interval_a_warning() -> None:
    history = history_of(snapshot([10.0] * 30, anomalous={29}), 100)
    times = step_times(history, 4)
    rising = forecast([10.0, 12.0, 14.0, 16.0])
    watch = SeriesWatch(series="s", upper=15.0, lower=6.0)
    upper, lower = alerts(watch, rising, times, history.recent)
    assert (upper.bound, upper.level, upper.step, upper.value) == (
        "upper",
        AlertLevel.CRITICAL,
        4,
        16.0,
    )
    assert upper.at == times[3] and upper.confirmed_by_anomalies
    # Only the interval (point - 5) reaches below 6, at the first step: a warning.
    assert (lower.bound, lower.level, lower.step, lower.value) == (
        "lower",
        AlertLevel.WARNING,
        1,
        5.0,
    )
    assert alerts(SeriesWatch(series="s", upper=100.0), rising, times, history.recent) == []
    assert alerts(SeriesWatch(series="s"), rising, times, history.recent) == []


def test_outlook_says_why_a_series_has_no_forecast() -> None:
    at = START + timedelta(days=1)
    watch = SeriesWatch(series="s", upper=1.0)
    unknown = outlook("run", watch, SeriesHistory(series="s", found=False), None, 3, at)
    assert unknown.status is OutlookStatus.UNKNOWN_SERIES and unknown.alerts == []
    short = outlook("run", watch, history_of(snapshot([1.0]), 10), None, 3, at)
    assert short.status is OutlookStatus.INSUFFICIENT_DATA
    full = outlook("run", watch, history_of(snapshot([1.0] * 10), 10), forecast([2.0] * 3), 3, at)
    assert full.status is OutlookStatus.FORECAST and full.model == "ETS(A,N,N)"
    assert len(full.timestamps) == 3 and full.alerts[0].step == 1


# -- contracts ----------------------------------------------------------------------------------
def test_a_triage_request_names_the_broken_field_and_its_limit() -> None:
    with pytest.raises(ValidationError) as bad_type:
        ReviewTriageRequest.model_validate(
            {"text": "x", "image": {"media_type": "image/gif", "data": "AAAA"}}
        )
    assert bad_type.value.errors()[0]["loc"] == ("image", "media_type")
    with pytest.raises(ValidationError) as not_base64:
        ReviewTriageRequest.model_validate(
            {"text": "x", "image": {"media_type": "image/png", "data": "not base64!"}}
        )
    assert not_base64.value.errors()[0]["loc"] == ("image", "data")
    with pytest.raises(ValidationError) as too_big:
        huge = base64.b64encode(b"\0" * (MAX_TRIAGE_IMAGE_BASE64 // 4 * 3 + 3)).decode()
        ReviewTriageRequest.model_validate(
            {"text": "x", "image": {"media_type": "image/png", "data": huge}}
        )
    error = too_big.value.errors()[0]
    assert (error["type"], error["ctx"]["max_length"]) == (
        "string_too_long",
        MAX_TRIAGE_IMAGE_BASE64,
    )


def test_watched_series_are_unique_and_their_bounds_ordered() -> None:
    with pytest.raises(ValidationError, match="lower must be below upper"):
        SeriesWatch(series="s", upper=1.0, lower=2.0)
    with pytest.raises(ValidationError, match="once"):
        ForecastRunRequest.model_validate({"series": [{"series": "s"}, {"series": "s"}]})
    with pytest.raises(ValidationError):
        SeriesWatch(series="has/slash")


# -- case transitions -----------------------------------------------------------------------------
def new_case() -> Case:
    return Case(
        id="triage-r1",
        review_id="r1",
        status=CaseStatus.OPEN,
        priority=Priority.NORMAL,
        products=[],
        defects=["crack"],
        negative_aspects=[],
        compound=-0.5,
        excerpt="cracked",
        opened_at=START,
        history=[CaseEntry(at=START, what="opened")],
    )


def test_each_transition_happens_once_however_often_it_runs() -> None:
    at = START + timedelta(hours=1)
    escalated = cases.escalated(new_case(), 1, at)
    assert escalated is not None and escalated.status is CaseStatus.ESCALATED
    assert cases.escalated(escalated, 1, at) is None  # a replayed escalation
    closing = CaseClosing(
        case_id="triage-r1", outcome=CaseOutcome.APPROVED, decision=Decision.APPROVE, at=at
    )
    closed = cases.closed(escalated, closing)
    assert closed is not None and (closed.status, closed.outcome) == ("closed", "approved")
    assert [h.what for h in closed.history] == ["opened", "escalated", "closed"]
    assert cases.closed(closed, closing) is None
    assert cases.escalated(closed, 2, at) is None  # a closed case is not escalated
    assert cases.terminated(closed, "stop", at) is None


def test_a_failure_overrides_and_drops_the_evidence_and_nothing_reopens_it() -> None:
    at = START + timedelta(hours=1)
    evidence = Evidence(key="evidence:triage-r1", media_type="image/png", faces_redacted=1, bytes=9)
    with_evidence = new_case().model_copy(update={"evidence": evidence})
    failed = cases.failed(with_evidence, "vision refused", at)
    assert failed is not None
    assert (failed.status, failed.outcome, failed.evidence) == ("failed", "failed", None)
    assert cases.failed(failed, "again", at) is None
    closing = CaseClosing(case_id="triage-r1", outcome=CaseOutcome.EXPIRED, at=at)
    assert cases.closed(failed, closing) is None
    terminated = cases.terminated(new_case(), "duplicate", at)
    assert terminated is not None and terminated.outcome is CaseOutcome.TERMINATED
