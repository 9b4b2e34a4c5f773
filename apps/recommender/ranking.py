"""What every model returns: a ranked item with its score and the items that led to it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item.

    Attributes:
        item: the item id.
        score: the model's score; comparable within one list only.
        because: items the user interacted with that led to this one, strongest first
            (empty when the model cannot tell, or for popular items).
    """

    item: str
    score: float
    because: tuple[str, ...] = ()


def top_k(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """Indices of the `k` highest finite scores, best first; ties by the lower index,
    so the order is deterministic."""
    finite = np.flatnonzero(np.isfinite(scores))
    if finite.size == 0 or k <= 0:
        return np.empty(0, dtype=np.intp)
    values = scores[finite]
    if finite.size > k:
        # The k-th largest value, then everything at least that large (ties included).
        cut = np.partition(values, finite.size - k)[finite.size - k]
        keep = values >= cut
        finite, values = finite[keep], values[keep]
    order = np.lexsort((finite, -values))
    return finite[order][:k]
