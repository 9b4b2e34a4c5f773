"""Event-fed read models and the once-only bookkeeping behind them (pure functions)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from apps.gateway.read_models import (
    apply_event,
    counted,
    dead_letter_of,
    kept_anomalies,
    kept_dead_letters,
)
from consort.contracts.anomaly import AnomaliesDetected
from consort.contracts.common import ModelInfo
from consort.contracts.events import TextsAnalyzed, dead_letter
from consort.contracts.gateway import DeadLetters, RecentAnomalies, TextStats
from consort.contracts.sentiment import SentimentLabel
from consort.kit.dapr import EtagMismatch, Sidecar, StateItem
from consort.kit.events import Bulk, Subscription, Tracked, _settle, apply_many, deliveries


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


def test_counting_starts_from_nothing_and_takes_events_in_order() -> None:
    assert counted(None, []) == TextStats()
    stats = counted(None, [event(SentimentLabel.POSITIVE), event(SentimentLabel.POSITIVE)])
    assert (stats.total, stats.by_label[SentimentLabel.POSITIVE]) == (2, 2)
    more = counted(stats, [event(SentimentLabel.NEUTRAL, cached=True)])
    assert (more.total, more.cached, stats.total) == (3, 1, 2)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def anomaly(series: str, minute: int) -> AnomaliesDetected:
    at = T0.replace(minute=minute)
    return AnomaliesDetected(
        series=series,
        timestamp=at,
        value=9.0,
        expected=1.0,
        lower=0.0,
        upper=2.0,
        score=8.0,
        threshold=3.0,
        model=ModelInfo(name="detector", version="1"),
        detected_at=at,
    )


def test_recent_anomalies_are_newest_first_and_capped() -> None:
    first = kept_anomalies(None, [anomaly("a", 1), anomaly("b", 3), anomaly("c", 2)], kept=10)
    assert [a.series for a in first.anomalies] == ["b", "c", "a"]
    # A later batch goes before what was kept; the oldest fall off past `kept`.
    second = kept_anomalies(first, [anomaly("d", 5), anomaly("e", 4)], kept=4)
    assert [a.series for a in second.anomalies] == ["d", "e", "b", "c"]
    assert len(first.anomalies) == 3
    assert kept_anomalies(RecentAnomalies(anomalies=[]), [], kept=5).anomalies == []


def test_a_dead_letter_is_filed_under_the_topic_it_failed_on() -> None:
    envelope = {"id": "e1", "topic": "texts.analyzed.dead-letter", "data": {"x": 1}}
    letter = dead_letter_of(envelope, T0)
    assert (letter.id, letter.topic, letter.received_at) == ("e1", "texts.analyzed", T0)
    assert letter.event == envelope
    # Neither id nor topic: kept all the same, as "unknown", for an operator to look at.
    odd = dead_letter_of({"data": 1}, T0)
    assert (odd.id, odd.topic) == ("", "unknown")


def test_dead_letters_keep_the_newest_first_up_to_the_limit() -> None:
    letters = [dead_letter_of({"id": f"e{i}", "topic": "t.dead-letter"}, T0) for i in range(4)]
    kept: DeadLetters | None = None
    for letter in letters:
        kept = kept_dead_letters(kept, letter, kept=3)
    assert kept is not None and kept.topic == "t"
    assert [d.id for d in kept.dead_letters] == ["e3", "e2", "e1"]


class StateDouble:
    """In-memory state with the etag and first-write rules of Dapr's Redis store, standing
    in for the sidecar's state API so the bookkeeping's crash paths can be exercised."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[Any, int]] = {}

    # The kit's compare-and-set, run against this double's get_state and save_state.
    save_over = Sidecar.save_over
    update_state = Sidecar.update_state

    async def get_state(self, store: str, key: str) -> StateItem | None:
        if key not in self.data:
            return None
        value, version = self.data[key]
        return StateItem(key, value, str(version))

    async def get_bulk_state(self, store: str, keys: list[str]) -> list[StateItem]:
        return [StateItem(k, self.data[k][0], str(self.data[k][1])) for k in keys if k in self.data]

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        options: dict[str, str] | None = None,
        metadata: Any = None,
    ) -> None:
        current = self.data.get(key)
        if etag is not None and (current is None or str(current[1]) != etag):
            raise EtagMismatch("stale etag", status=409)
        if options and options.get("concurrency") == "first-write" and etag is None and current:
            raise EtagMismatch("failed to set key", status=500)
        self.data[key] = (value, (current[1] if current else 0) + 1)

    async def save_states(
        self, store: str, values: dict[str, Any], *, ttl_s: int | None = None
    ) -> None:
        for key, value in values.items():
            current = self.data.get(key)
            self.data[key] = (value, (current[1] if current else 0) + 1)


def count(ids: list[str]) -> Any:
    return lambda stats, new: TextStats(total=(stats.total if stats else 0) + len(new))


def run_apply(state: StateDouble, ids: list[str]) -> tuple[TextStats | None, set[str]]:
    return asyncio.run(
        apply_many(state, "s", event_ids=ids, key="k", model=TextStats, update=count(ids))  # type: ignore[arg-type]
    )


def test_each_event_id_counts_once_across_and_within_deliveries() -> None:
    state = StateDouble()
    value, applied = run_apply(state, ["a", "b", "a"])
    assert value is not None and value.total == 2 and applied == {"a", "b"}
    value, applied = run_apply(state, ["b", "c"])
    assert value is not None and value.total == 3 and applied == {"c"}
    assert Tracked.model_validate(state.data["k"][0]).in_flight == []
    assert {"applied:a", "applied:b", "applied:c"} <= set(state.data)


def test_a_delivery_that_crashed_after_applying_is_finished_not_repeated() -> None:
    state = StateDouble()
    # The first delivery applied "a" and died before writing its marker.
    state.data["k"] = (
        Tracked(value=TextStats(total=1).model_dump(), in_flight=["a"]).model_dump(),
        1,
    )
    value, applied = run_apply(state, ["a"])
    assert applied == set()
    assert value is not None and value.total == 1
    assert "applied:a" in state.data
    assert Tracked.model_validate(state.data["k"][0]).in_flight == []


def test_settling_keeps_other_events_in_flight() -> None:
    tracked = Tracked(value=TextStats().model_dump(), in_flight=["a", "b"])
    settled = _settle(tracked, {"a"})
    assert settled is not None and settled.in_flight == ["b"]
    assert _settle(settled, {"a"}) is None  # nothing left to write


def test_deliveries_read_bulk_and_single_envelopes() -> None:
    bulk = {
        "entries": [{"entryId": "1", "event": {"id": "x"}}, {"entryId": "2", "event": {"id": "y"}}]
    }
    assert deliveries(bulk) == [("1", {"id": "x"}), ("2", {"id": "y"})]
    assert deliveries({"id": "z"}) == [(None, {"id": "z"})]


def test_subscriptions_declare_their_dead_letter_topic() -> None:
    spec = Subscription("pubsub", "texts.analyzed", "/events/x").as_dapr()
    bulk = Subscription("pubsub", "t", "/r", bulk=Bulk(50, 10)).as_dapr()["bulkSubscribe"]
    assert bulk == {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 10}
    assert spec == {
        "pubsubname": "pubsub",
        "topic": "texts.analyzed",
        "routes": {"default": "/events/x"},
        "deadLetterTopic": dead_letter("texts.analyzed"),
    }
    assert dead_letter("texts.analyzed") == "texts.analyzed.dead-letter"


def test_a_tracked_value_is_stored_as_a_json_string_so_floats_keep_every_digit() -> None:
    # Dapr's Redis state store rounds JSON numbers to 6 digits after the point; a string
    # passes through it untouched.
    value = {"small": 1.234567891234e-9, "long": 117.9209411939993, "n": [0.1, 1e-12]}
    stored = Tracked(value=value, in_flight=["a"]).model_dump()
    assert isinstance(stored["value"], str)
    assert Tracked.model_validate(stored).value == value
    # And a value stored before, as a JSON object, still reads.
    assert Tracked.model_validate({"value": value, "in_flight": []}).value == value
