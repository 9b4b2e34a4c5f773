"""Running median and MAD of a bounded set of numbers, in O(log n) a query.

Plain domain code. The detector scores every point against the median and the median
absolute deviation (MAD) of its recent errors; recomputing both from scratch (numpy's
partition, twice) cost more than everything else a point needs. Here the numbers are kept
sorted (`bisect.insort`, a memmove), the median is read off the middle, and the MAD is the
k-th smallest of the distances to the median, which on a sorted list are two sorted runs
(left of the median, reversed, and right of it): the k-th smallest of two sorted runs is a
binary search. The same numbers give the same median and MAD as `numpy.median`, exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class RunningSpread:
    """The median and MAD of a multiset of floats that values enter and leave."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._sorted = sorted(values)

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, value: float) -> None:
        bisect.insort(self._sorted, value)

    def remove(self, value: float) -> None:
        index = bisect.bisect_left(self._sorted, value)
        if index == len(self._sorted) or self._sorted[index] != value:
            raise KeyError(value)
        del self._sorted[index]

    def median(self) -> float:
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return 0.0
        return (s[n // 2] + s[(n - 1) // 2]) / 2

    def mad(self, center: float) -> float:
        """The median of |value - center| over the values."""
        n = len(self._sorted)
        if n == 0:
            return 0.0
        upper = self._kth_distance(n // 2, center)
        lower = upper if n % 2 else self._kth_distance(n // 2 - 1, center)
        return (lower + upper) / 2

    def _kth_distance(self, k: int, center: float) -> float:
        """The k-th smallest (0-based) of |value - center|."""
        s = self._sorted
        split = bisect.bisect_left(s, center)
        left, right = split, len(s) - split

        def near_left(i: int) -> float:
            return center - s[split - 1 - i]

        def near_right(j: int) -> float:
            return s[split + j] - center

        # i distances from the left run and k + 1 - i from the right: the largest i whose
        # last left distance is not beyond the next right one (the predicate is monotone).
        lo, hi = max(0, k + 1 - right), min(k + 1, left)
        while lo < hi:
            i = (lo + hi + 1) // 2
            j = k + 1 - i
            if j >= right or near_left(i - 1) <= near_right(j):
                lo = i
            else:
                hi = i - 1
        i, j = lo, k + 1 - lo
        return max(near_left(i - 1) if i else -1.0, near_right(j - 1) if j else -1.0)
