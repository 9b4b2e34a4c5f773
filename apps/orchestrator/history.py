"""A workflow's steps from its engine history: activities scheduled and finished, timers
set and fired, events raised to it, child workflows.

Plain code over the engine's history events (protobuf messages); no web framework, no
sidecar. The engine's `GetInstanceHistory` gives the events (`apps.orchestrator.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from consort.contracts.workflows import WorkflowStep
from consort.contracts.workflows import WorkflowStepKind as Kind
from consort.contracts.workflows import WorkflowStepStatus as Status


def _at(timestamp: Any) -> datetime:
    at: datetime = timestamp.ToDatetime()
    return at.replace(tzinfo=UTC)


def steps_of(events: Iterable[Any]) -> list[WorkflowStep]:
    """The steps a history records, in the order they began (each event is a
    `HistoryEvent`: its `eventId`, `timestamp` and one of its kinds set)."""
    steps: list[WorkflowStep] = []
    opened: dict[int, int] = {}  # the scheduling event's id -> index in steps

    def begin(event: Any, name: str, kind: Kind, status: Status, **more: Any) -> None:
        opened[event.eventId] = len(steps)
        steps.append(
            WorkflowStep(
                name=name, kind=kind, status=status, started_at=_at(event.timestamp), **more
            )
        )

    def end(scheduled_id: int, event: Any, status: Status) -> None:
        index = opened.get(scheduled_id)
        if index is not None:
            steps[index] = steps[index].model_copy(
                update={"status": status, "ended_at": _at(event.timestamp)}
            )

    for event in events:
        which = event.WhichOneof("eventType")
        if which == "taskScheduled":
            begin(event, event.taskScheduled.name, Kind.ACTIVITY, Status.SCHEDULED)
        elif which == "taskCompleted":
            end(event.taskCompleted.taskScheduledId, event, Status.COMPLETED)
        elif which == "taskFailed":
            end(event.taskFailed.taskScheduledId, event, Status.FAILED)
        elif which == "timerCreated":
            timer = event.timerCreated
            origin = timer.WhichOneof("origin")
            if timer.name:
                name = timer.name
            elif origin == "externalEvent":
                name = f"{timer.externalEvent.name} deadline"
            elif origin in ("activityRetry", "childWorkflowRetry"):
                name = "retry"
            else:
                name = "timer"
            begin(
                event,
                name,
                Kind.TIMER,
                Status.WAITING,
                until=_at(timer.fireAt),
            )
        elif which == "timerFired":
            end(event.timerFired.timerId, event, Status.FIRED)
        elif which == "eventRaised":
            begin(event, event.eventRaised.name, Kind.EVENT, Status.RECEIVED)
            steps[-1] = steps[-1].model_copy(update={"ended_at": steps[-1].started_at})
        elif which == "childWorkflowInstanceCreated":
            begin(event, event.childWorkflowInstanceCreated.name, Kind.CHILD, Status.SCHEDULED)
        elif which == "childWorkflowInstanceCompleted":
            end(event.childWorkflowInstanceCompleted.taskScheduledId, event, Status.COMPLETED)
        elif which == "childWorkflowInstanceFailed":
            end(event.childWorkflowInstanceFailed.taskScheduledId, event, Status.FAILED)
    return steps
