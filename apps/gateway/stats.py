"""The text-analysis read model: running counts of what `texts.analyzed` events report.

Plain domain code: the gateway's event handler loads, applies and stores it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from consort.contracts.events import TextsAnalyzed
from consort.contracts.sentiment import SentimentLabel


class TextStats(BaseModel):
    """How many texts were analyzed, by label and by model."""

    total: int = 0
    cached: int = 0
    by_label: dict[SentimentLabel, int] = Field(
        default_factory=lambda: dict.fromkeys(SentimentLabel, 0)
    )
    by_model: dict[str, int] = Field(default_factory=dict)


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
