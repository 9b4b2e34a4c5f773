"""The search evaluation's arithmetic (bench/retrieval_metrics.py) on examples worked out
by hand, and its STS Benchmark reader on lines shaped like the benchmark's."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bench.eval_search_sts import (
    DUPLICATE_THRESHOLD,
    THRESHOLDS,
    Pair,
    load_pairs,
    threshold_table,
)
from bench.retrieval_metrics import (
    average_ranks,
    bootstrap_interval,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    spearman_rho,
)
from consort.dev.runtime import REPO


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 30, 20]) == [1, 3, 2]
    # the two 20s take positions 2 and 3: rank 2.5 each
    assert average_ranks([20, 10, 20, 40]) == [2.5, 1, 2.5, 4]
    assert average_ranks([5, 5, 5]) == [2, 2, 2]


@pytest.mark.parametrize(
    ("xs", "ys", "rho"),
    [
        # any increasing function keeps the ranks: rho is 1 where Pearson's r is not
        ([1, 2, 3, 4], [1, 8, 27, 64], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        # ranks (1, 2, 3, 4) against (1, 3, 2, 4): 1 - 6 * 2 / (4 * 15) = 0.8
        ([0.1, 0.2, 0.3, 0.4], [5, 7, 6, 9], 0.8),
        # ties: ranks (1.5, 1.5, 3) against (1, 2, 3): r of those is sqrt(3) / 2
        ([0, 0, 5], [1, 2, 3], math.sqrt(3) / 2),
    ],
)
def test_spearman_rho(xs: list[float], ys: list[float], rho: float) -> None:
    assert spearman_rho(xs, ys) == pytest.approx(rho)


def test_spearman_agrees_with_scipy_on_tied_data() -> None:
    stats = pytest.importorskip("scipy.stats")
    xs = [3.0, 1.5, 1.5, 4.0, 0.0, 5.0, 2.5, 2.5, 3.0, 4.8]
    ys = [0.62, 0.31, 0.40, 0.80, 0.10, 0.95, 0.55, 0.41, 0.70, 0.77]
    assert spearman_rho(xs, ys) == pytest.approx(stats.spearmanr(xs, ys).statistic)


def test_reciprocal_rank_counts_the_first_relevant_within_k() -> None:
    ranked = ["a", "b", "c", "d"]
    assert reciprocal_rank(ranked, {"c"}, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, {"d", "b"}, 10) == pytest.approx(1 / 2)
    assert reciprocal_rank(ranked, {"d"}, 3) == 0.0
    assert reciprocal_rank(ranked, {"z"}, 10) == 0.0


def test_recall_at_k() -> None:
    ranked = ["a", "b", "c"]
    assert recall_at(ranked, {"a"}, 1) == 1.0
    assert recall_at(ranked, {"b"}, 1) == 0.0
    assert recall_at(ranked, {"b", "z"}, 3) == 0.5
    with pytest.raises(ValueError, match="relevant"):
        recall_at(ranked, set(), 3)


def test_ndcg_at_k() -> None:
    # one relevant document: 1 at the top, 1/log2(3) second, 1/log2(4) = 0.5 third
    assert ndcg_at(["a", "b", "c"], {"a"}, 10) == 1.0
    assert ndcg_at(["b", "a", "c"], {"a"}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["b", "c", "a"], {"a"}, 10) == pytest.approx(0.5)
    assert ndcg_at(["b", "c", "a"], {"a"}, 2) == 0.0
    # two relevant at positions 1 and 3: (1 + 0.5) / (1 + 1/log2(3))
    assert ndcg_at(["a", "x", "b"], {"a", "b"}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_bootstrap_interval_brackets_the_statistic_and_repeats() -> None:
    xs = [float(i) for i in range(60)]
    ys = [x + (7 if i % 5 == 0 else 0) for i, x in enumerate(xs)]
    low, high = bootstrap_interval(xs, ys, spearman_rho, resamples=200)
    assert low <= spearman_rho(xs, ys) <= high <= 1.0
    assert (low, high) == bootstrap_interval(xs, ys, spearman_rho, resamples=200)


def test_load_pairs_reads_the_benchmark_lines(tmp_path: Path) -> None:
    path = tmp_path / "sts-test.csv"
    path.write_text(
        "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\t"
        "A girl is brushing her hair.\n"
        "main-forums\tanswer-answer\t2016\t0008\t3\tOne.\tTwo.\tsource a\tsource b\n",
        encoding="utf-8",
    )
    assert load_pairs(path) == [
        Pair(
            0, "main-captions", 2.5, "A girl is styling her hair.", "A girl is brushing her hair."
        ),
        Pair(1, "main-forums", 3.0, "One.", "Two."),
    ]
    path.write_text("main-news\tx\t2012\t1\t4.0\tonly one sentence\n", encoding="utf-8")
    with pytest.raises(ValueError, match="6 fields"):
        load_pairs(path)


def test_threshold_table_counts_paraphrases_at_each_threshold() -> None:
    ratings = [5.0, 4.2, 3.0, 1.0]
    scores = [0.97, 0.88, 0.91, 0.30]
    rows = {row["threshold"]: row for row in threshold_table(ratings, scores)}
    assert rows[0.9]["service_default"] is True
    assert rows[0.9]["pairs_at_or_above"] == 2  # 0.97 (rated 5) and 0.91 (rated 3)
    assert rows[0.9]["precision"] == 0.5
    assert rows[0.9]["recall"] == 0.5
    assert rows[0.85]["recall"] == 1.0
    assert rows[0.95]["precision"] == 1.0


def test_the_threshold_evaluated_is_the_services_default() -> None:
    # bench/eval_search_sts.py marks the service's default in its table: the one the Rust
    # settings fall back to when SEARCH_DUPLICATE_THRESHOLD is unset.
    config = (REPO / "apps" / "search" / "src" / "config.rs").read_text(encoding="utf-8")
    (default,) = re.findall(r'parsed\("SEARCH_DUPLICATE_THRESHOLD", ([0-9.]+)\)', config)
    assert float(default) == DUPLICATE_THRESHOLD
    assert DUPLICATE_THRESHOLD in THRESHOLDS
