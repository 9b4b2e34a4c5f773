"""Interactions as `interactions.recorded` events: each one's CloudEvent id and payload.

Plain domain code: `POST /v1/interactions` publishes what `recorded` returns. The id
makes an interaction count once however often it is sent.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime

from consort.contracts.recommender import InteractionIn, InteractionRecorded


def event_id(interaction: InteractionIn) -> str:
    """The CloudEvent id of an interaction: the client's id; else, when the client gave the
    time, a hash of the content (the same interaction sent again is the same event); else
    a random one."""
    if interaction.id is not None:
        return interaction.id
    if interaction.time is None:
        return uuid.uuid4().hex
    content = interaction.model_dump(mode="json", exclude={"id"})
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"interaction-{digest[:32]}"


def recorded(
    interactions: list[InteractionIn], now: datetime
) -> tuple[list[str], dict[str, InteractionRecorded]]:
    """The event id of each interaction, in order, and the events to publish by id.

    An id given twice is one event: the last interaction sent with it is published.

    Args:
        interactions: the interactions as submitted.
        now: the time of those sent without one.
    """
    ids = [event_id(i) for i in interactions]
    events = {
        i: InteractionRecorded(
            user=x.user, item=x.item, kind=x.kind, weight=x.weight, time=x.time or now
        )
        for i, x in zip(ids, interactions, strict=True)
    }
    return ids, events
