"""The AIOps KPI benchmark's measures and request plan (bench/aiops_kpi.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.aiops_kpi import WARM, alerts_per_1000, counts, requests
from consort.contracts.anomaly import MAX_DETECT_POINTS

pytestmark = pytest.mark.unit


def test_the_delay_rule_counts_a_segment_caught_within_its_first_k_plus_one_points() -> None:
    labels = np.zeros(40, dtype=bool)
    labels[10:30] = True  # one segment of 20 points
    caught = np.zeros(40, dtype=bool)
    caught[17] = True  # its 8th point: within k + 1 = 8
    assert counts(caught, labels, 7) == (20, 0, 0)
    late = np.zeros(40, dtype=bool)
    late[18] = True  # its 9th: too late for k = 7, fine for plain point adjustment
    assert counts(late, labels, 7) == (0, 0, 20)
    assert counts(late, labels, None) == (20, 0, 0)
    outside = np.zeros(40, dtype=bool)
    outside[[2, 35]] = True
    assert counts(outside, labels, 7) == (0, 2, 20)


def test_alerts_are_runs_of_flagged_points_starting_on_normal_ones() -> None:
    labels = np.zeros(2000, dtype=bool)
    labels[500:510] = True
    flagged = np.zeros(2000, dtype=bool)
    flagged[[100, 105, 300, 502]] = True  # 100 and 105: one alert (cool-down 10)
    assert alerts_per_1000(flagged, labels) == pytest.approx(1000 * 2 / 1990)


def test_requests_score_every_point_once_after_their_warm_up() -> None:
    plan = list(requests(WARM, 30_000))
    new = [i for _, first, stop in plan for i in range(first, stop)]
    assert new == list(range(WARM, 30_000))
    assert all(stop - start <= MAX_DETECT_POINTS for start, _, stop in plan)
    assert all(first - start == WARM for start, first, _ in plan)
    assert list(requests(0, 5))[0] == (0, 0, 5)  # no points before: its own warm-up
