"""Rank correlation and ranking metrics for the search evaluation (bench/eval_search_sts.py).

Plain functions over lists, no dependencies beyond the standard library, so the
evaluation's arithmetic is unit-tested apart from the system that produces the scores
(tests/unit/test_retrieval_metrics.py). The definitions are the usual ones: Spearman's rho
as Pearson's r of average ranks (ties share the mean of their positions), as
`scipy.stats.spearmanr` and MTEB's STS evaluator compute it; MRR@k, recall@k and nDCG@k
with binary relevance and log2 discounts, as BEIR's and MTEB's `pytrec_eval` compute them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from bench.quality import pearson_r


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of `values`, ties given the mean of the positions they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for i in order[start : end + 1]:
            ranks[i] = rank
        start = end + 1
    return ranks


def spearman_rho(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long series (ties averaged).

    Args:
        xs: the first series, at least two values, not all equal.
        ys: the second series, as long as `xs`, not all equal.
    """
    return pearson_r(average_ranks(xs), average_ranks(ys))


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """1 / the position of the first relevant id among the first `k`, else 0."""
    for position, doc in enumerate(ranked[:k], 1):
        if doc in relevant:
            return 1.0 / position
    return 0.0


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """The share of the relevant ids found among the first `k`."""
    if not relevant:
        raise ValueError("recall needs at least one relevant id")
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Normalised discounted cumulative gain at `k`, binary relevance, log2(position + 1)."""
    if not relevant:
        raise ValueError("nDCG needs at least one relevant id")
    dcg = sum(
        1.0 / math.log2(position + 1)
        for position, doc in enumerate(ranked[:k], 1)
        if doc in relevant
    )
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def bootstrap_interval(
    xs: Sequence[float],
    ys: Sequence[float],
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval of `statistic` over pairs resampled with replacement.

    Args:
        xs: the first series.
        ys: the second series, paired with `xs` by position.
        statistic: what to compute on each resample (e.g. `spearman_rho`).
        resamples: how many resamples.
        confidence: the interval's coverage.
        seed: the generator's seed, so the interval is the same on every run.
    """
    rng = random.Random(seed)
    n = len(xs)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        values.append(statistic([xs[i] for i in picks], [ys[i] for i in picks]))
    values.sort()
    tail = (1 - confidence) / 2
    low = values[int(math.floor(tail * (resamples - 1)))]
    high = values[int(math.ceil((1 - tail) * (resamples - 1)))]
    return low, high
