"""A workflow's steps from its engine history (`apps.orchestrator.history`), on history
events built as the engine sends them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dapr.ext.workflow._durabletask.internal import history_events_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from apps.orchestrator.history import steps_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def event(event_id: int, second: int, **kind: Any) -> pb.HistoryEvent:
    at = Timestamp()
    at.FromDatetime(T0 + timedelta(seconds=second))
    return pb.HistoryEvent(eventId=event_id, timestamp=at, **kind)


def test_steps_follow_activities_timers_and_events_to_their_ends() -> None:
    fire_at = Timestamp()
    fire_at.FromDatetime(T0 + timedelta(hours=1))
    history = [
        event(-1, 0, workflowStarted=pb.WorkflowStartedEvent()),
        event(0, 1, taskScheduled=pb.TaskScheduledEvent(name="nlp_analyze")),
        event(1, 1, taskScheduled=pb.TaskScheduledEvent(name="sentiment_score")),
        event(-1, 2, taskCompleted=pb.TaskCompletedEvent(taskScheduledId=1)),
        event(-1, 3, taskFailed=pb.TaskFailedEvent(taskScheduledId=0)),
        event(2, 4, timerCreated=pb.TimerCreatedEvent(name="decision", fireAt=fire_at)),
        event(-1, 5, eventRaised=pb.EventRaisedEvent(name="decision")),
        event(3, 6, taskScheduled=pb.TaskScheduledEvent(name="case_close")),
    ]
    steps = steps_of(history)
    assert [(s.name, s.kind, s.status) for s in steps] == [
        ("nlp_analyze", "activity", "failed"),
        ("sentiment_score", "activity", "completed"),
        ("decision", "timer", "waiting"),
        ("decision", "event", "received"),
        ("case_close", "activity", "scheduled"),
    ]
    assert steps[1].started_at == T0 + timedelta(seconds=1)
    assert steps[1].ended_at == T0 + timedelta(seconds=2)
    assert steps[2].until == T0 + timedelta(hours=1) and steps[2].ended_at is None
    assert steps[4].ended_at is None  # still running
    fired = steps_of([*history, event(-1, 7, timerFired=pb.TimerFiredEvent(timerId=2))])
    assert fired[2].status == "fired"


def test_a_timer_without_a_name_is_named_for_its_origin() -> None:
    fire_at = Timestamp()
    fire_at.FromDatetime(T0 + timedelta(days=3))
    waiting = pb.TimerCreatedEvent(
        fireAt=fire_at, externalEvent=pb.TimerOriginExternalEvent(name="decision")
    )
    plain = pb.TimerCreatedEvent(fireAt=fire_at)
    steps = steps_of([event(0, 0, timerCreated=waiting), event(1, 1, timerCreated=plain)])
    assert [s.name for s in steps] == ["decision deadline", "timer"]
