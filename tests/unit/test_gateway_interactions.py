"""Interactions as events (pure): each one's CloudEvent id, and the events published."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.gateway.interactions import event_id, recorded
from consort.contracts.recommender import InteractionIn, InteractionKind

pytestmark = pytest.mark.unit

WHEN = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_event_ids_are_given_derived_from_content_and_time_or_random() -> None:
    given = InteractionIn(id="order-7:line-2", user="u", item="i")
    assert event_id(given) == "order-7:line-2"
    timed = InteractionIn(user="u", item="i", time=WHEN)
    assert event_id(timed) == event_id(InteractionIn(user="u", item="i", time=WHEN))
    assert event_id(timed) != event_id(InteractionIn(user="u", item="i", time=WHEN, weight=2))
    untimed = InteractionIn(user="u", item="i")
    assert event_id(untimed) != event_id(untimed)


def test_recorded_events_keep_the_order_and_take_now_when_no_time_was_given() -> None:
    sent = [
        InteractionIn(id="a", user="u1", item="i1", kind=InteractionKind.PURCHASE, time=WHEN),
        InteractionIn(id="b", user="u2", item="i2"),
    ]
    ids, events = recorded(sent, NOW)
    assert ids == ["a", "b"]
    assert events["a"].time == WHEN and events["a"].kind is InteractionKind.PURCHASE
    assert events["b"].time == NOW and (events["b"].user, events["b"].item) == ("u2", "i2")


def test_an_id_given_twice_is_one_event_the_last_one_sent() -> None:
    sent = [
        InteractionIn(id="dup", user="u", item="first"),
        InteractionIn(id="dup", user="u", item="second"),
    ]
    ids, events = recorded(sent, NOW)
    assert ids == ["dup", "dup"]
    assert list(events) == ["dup"] and events["dup"].item == "second"
