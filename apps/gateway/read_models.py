"""The read models the gateway keeps in the state store, and the pure folds events apply.

Events write them (`apps.gateway.events`), routes read them. Plain domain code: the
handlers load, fold and store; each fold leaves its input as it was. The review read
model's join is `apps.gateway.review_join`.
"""

from __future__ import annotations

from datetime import datetime
from functools import reduce
from typing import Any

from consort.contracts.anomaly import AnomaliesDetected
from consort.contracts.events import TextsAnalyzed
from consort.contracts.gateway import DeadLetter, DeadLetters, RecentAnomalies, TextStats

#: Counts of `texts.analyzed` events (`TextStats`).
STATS_KEY = "text-stats"
#: The most recent `anomalies.detected` events (`RecentAnomalies`).
RECENT_ANOMALIES_KEY = "anomalies:recent"
#: The most recent dead letters of one topic (`DeadLetters`).
DEAD_LETTERS_KEY = "dead-letters:{topic}"
#: One review's analysis (`consort.contracts.reviews.ReviewAnalysis`).
REVIEW_KEY = "review:{id}"
#: How long a review's analysis is kept.
REVIEW_TTL_S = 30 * 24 * 3600

DEAD_LETTER_SUFFIX = ".dead-letter"


def apply_event(stats: TextStats, event: TextsAnalyzed) -> TextStats:
    """The stats after one more analyzed text. Pure: `stats` is left as it was."""
    model = f"{event.model.name}@{event.model.version}"
    by_label = dict(stats.by_label)
    by_label[event.label] = by_label.get(event.label, 0) + 1
    by_model = dict(stats.by_model)
    by_model[model] = by_model.get(model, 0) + 1
    return TextStats(
        total=stats.total + 1,
        cached=stats.cached + int(event.cached),
        by_label=by_label,
        by_model=by_model,
    )


def counted(stats: TextStats | None, events: list[TextsAnalyzed]) -> TextStats:
    """The stats after `events`, in order; None is no text analyzed yet."""
    return reduce(apply_event, events, stats or TextStats())


def kept_anomalies(
    current: RecentAnomalies | None, fresh: list[AnomaliesDetected], kept: int
) -> RecentAnomalies:
    """The recent anomalies with `fresh` ones added: newest first, at most `kept`.

    Args:
        current: the stored anomalies; None when none were kept yet.
        fresh: anomalies not kept before, in any order.
        kept: how many to keep at most.
    """
    newest = sorted(fresh, key=lambda a: a.detected_at, reverse=True)
    anomalies = [*newest, *(current.anomalies if current else [])]
    return RecentAnomalies(anomalies=anomalies[:kept])


def dead_letter_of(envelope: dict[str, Any], received_at: datetime) -> DeadLetter:
    """A CloudEvent delivered on a dead-letter topic, filed under the topic it failed on.

    Args:
        envelope: the CloudEvent as daprd delivered it.
        received_at: when the gateway received it.
    """
    topic = str(envelope.get("topic", "")).removesuffix(DEAD_LETTER_SUFFIX) or "unknown"
    return DeadLetter(
        id=str(envelope.get("id", "")), topic=topic, received_at=received_at, event=envelope
    )


def kept_dead_letters(current: DeadLetters | None, letter: DeadLetter, kept: int) -> DeadLetters:
    """The dead letters of `letter`'s topic with it first, at most `kept`.

    Args:
        current: the stored dead letters of the topic; None when there were none.
        letter: the newest dead letter.
        kept: how many to keep at most.
    """
    letters = current.dead_letters if current else []
    return DeadLetters(topic=letter.topic, dead_letters=[letter, *letters][:kept])
