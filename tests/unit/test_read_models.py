"""Event-fed read models and the once-only bookkeeping behind them (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime

from apps.gateway.stats import TextStats, apply_event
from consort.contracts.common import ModelInfo
from consort.contracts.events import TextsAnalyzed, dead_letter
from consort.contracts.sentiment import SentimentLabel
from consort.events import Subscription, Tracked, _apply, _settle


def event(label: SentimentLabel, cached: bool = False) -> TextsAnalyzed:
    return TextsAnalyzed(
        text_sha256="f" * 64,
        chars=3,
        label=label,
        compound=0.0,
        cached=cached,
        model=ModelInfo(name="vader", version="3.3.2"),
        analyzed_at=datetime.now(UTC),
    )


def test_stats_count_by_label_model_and_cache() -> None:
    stats = TextStats()
    stats = apply_event(stats, event(SentimentLabel.POSITIVE))
    stats = apply_event(stats, event(SentimentLabel.NEGATIVE, cached=True))
    assert stats.total == 2
    assert stats.cached == 1
    assert stats.by_label[SentimentLabel.POSITIVE] == 1
    assert stats.by_label[SentimentLabel.NEUTRAL] == 0
    assert stats.by_model == {"vader@3.3.2": 2}


def test_apply_event_leaves_its_input_alone() -> None:
    before = TextStats()
    apply_event(before, event(SentimentLabel.POSITIVE))
    assert before.total == 0


def test_an_applied_event_is_in_flight_until_settled() -> None:
    tracked = _apply(
        None, "e1", TextStats, lambda s: apply_event(s or TextStats(), event("neutral"))
    )
    assert tracked.in_flight == ["e1"]
    assert TextStats.model_validate(tracked.value).total == 1
    settled = _settle(tracked, "e1")
    assert settled is not None and settled.in_flight == []
    assert _settle(settled, "e1") is None  # nothing left to write


def test_in_flight_ids_of_other_events_survive() -> None:
    tracked = Tracked(value=TextStats().model_dump(), in_flight=["a", "b"])
    settled = _settle(tracked, "a")
    assert settled is not None and settled.in_flight == ["b"]


def test_subscriptions_declare_their_dead_letter_topic() -> None:
    spec = Subscription("pubsub", "texts.analyzed", "/events/x").as_dapr()
    assert spec == {
        "pubsubname": "pubsub",
        "topic": "texts.analyzed",
        "routes": {"default": "/events/x"},
        "deadLetterTopic": dead_letter("texts.analyzed"),
    }
    assert dead_letter("texts.analyzed") == "texts.analyzed.dead-letter"
