"""Association rules (support, confidence, lift) and basket completion.

Plain domain code: no web framework, no Dapr. Frequent item sets are mined depth-first
(Eclat) over vertical bitsets: every item is a bit vector over the transactions, an item
set's transactions are the AND of its items' vectors, and its support count is the number
of bits set. The thresholds follow arules' `apriori()` (Borgelt's apriori 4.21 inside
arules) to the letter, so the output is the same rule set:

- an item set is frequent when its count is at least `ceil(n * min_support)` (the C code
  converts the relative support to a count this way, `istree.c`);
- a rule `X => {y}` has one item on the right-hand side, its support is that of X ∪ {y}
  (arules' `originalSupport = TRUE`), and it is kept when its confidence
  `count(X ∪ {y}) / count(X)` is at least `min_confidence - 1e-12` (arules' EPSILON);
- rules have `min_len` to `max_len` items (arules' defaults 1 and 10); a rule of length 1
  has an empty left-hand side and its confidence is the item's support;
- lift is `confidence * n / count(y)`.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: arules' tolerance on the confidence comparison (EPSILON in istree.c).
CONFIDENCE_EPSILON = 1e-12

_FORMAT = "consort.recommender.rules/1"

Bits = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Rule:
    """One association rule `lhs => {rhs}` with its interest measures.

    Attributes:
        lhs: the antecedent's items, sorted (empty for a rule of length 1).
        rhs: the consequent, one item.
        count: transactions holding every item of the rule.
        support: count / transactions.
        confidence: count / transactions holding the antecedent.
        lift: confidence / support of the consequent.
    """

    lhs: tuple[str, ...]
    rhs: str
    count: int
    support: float
    confidence: float
    lift: float

    @property
    def length(self) -> int:
        """Items in the rule, both sides (arules' `size()` of a rule)."""
        return len(self.lhs) + 1


@dataclass(frozen=True)
class BasketCompletion:
    """An item that completes a basket, and the best rule that suggests it.

    Attributes:
        item: the suggested item (not in the basket).
        because: the rule's antecedent: the basket items that lead to `item`.
        support, confidence, lift: that rule's measures.
    """

    item: str
    because: tuple[str, ...]
    support: float
    confidence: float
    lift: float


def min_count(transactions: int, min_support: float) -> int:
    """The least support count of a frequent item set, as arules computes it."""
    return math.ceil(transactions * min_support)


def _popcount(bits: Bits) -> npt.NDArray[np.int64]:
    """Bits set along the last axis."""
    counts: npt.NDArray[np.int64] = np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)
    return counts


def _pack(rows: Iterable[Iterable[int]], n_rows: int, n_columns: int) -> Bits:
    """A packed bit matrix, `n_rows` x `n_columns` bits in 64-bit words, with the bits of
    `rows` set (row r holds the column indices given for it). Built from the set bits
    alone: a dense boolean matrix of every row and column would cost a byte per cell."""
    words = max(1, (n_columns + 63) // 64)
    packed = np.zeros((n_rows, words), dtype=np.uint64)
    row_of: list[int] = []
    column_of: list[int] = []
    for r, columns in enumerate(rows):
        for c in columns:
            row_of.append(r)
            column_of.append(c)
    if row_of:
        columns_array = np.asarray(column_of, dtype=np.int64)
        flat = np.asarray(row_of, dtype=np.int64) * words + (columns_array >> 6)
        np.bitwise_or.at(
            packed.reshape(-1),
            flat,
            np.left_shift(np.uint64(1), (columns_array & 63).astype(np.uint64)),
        )
    return packed


def _vertical(baskets: Sequence[frozenset[int]], n_items: int) -> Bits:
    """One bit vector over the transactions per item, packed in 64-bit words."""
    by_item: list[list[int]] = [[] for _ in range(n_items)]
    for t, basket in enumerate(baskets):
        for item in basket:
            by_item[item].append(t)
    return _pack(by_item, n_items, len(baskets))


@dataclass(frozen=True)
class MiningLimits:
    """Bounds on one mining run, so that it ends in bounded time and memory whatever the
    baskets: without them, two baskets sharing a hundred items make every one of the
    2^100 subsets frequent.

    Attributes:
        max_itemsets: most frequent item sets kept (the memory of the run grows with them).
        max_rules: most rules derived from them.
        time_budget_s: seconds the run may take; checked between joins.
        max_memory_mb: most growth of the process's resident memory during the run, in
            MiB (Linux; elsewhere the counts alone bound it).
    """

    max_itemsets: int = 100_000
    max_rules: int = 50_000
    time_budget_s: float = 30.0
    max_memory_mb: float = 512.0


@dataclass(frozen=True)
class FrequentItemsets:
    """What `frequent_itemsets` found, and whether it stopped early.

    Attributes:
        counts: every item set found (sorted tuple of item indices) with its count; the
            empty set has the transaction count.
        complete_len: every frequent item set of at most this many items is in `counts`.
        cut_short: why the run stopped before the end (a limit reached), or None.
    """

    counts: dict[tuple[int, ...], int]
    complete_len: int
    cut_short: str | None = None


#: Most 64-bit words ANDed in one vectorised join (8 MiB), whatever the class's size.
_JOIN_WORDS = 1 << 20
#: Seconds between two reads of the resident memory.
_MEMORY_CHECK_S = 0.1


def _resident_bytes() -> int | None:
    """The process's resident memory, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Budget:
    """The time and memory a mining run may still use."""

    def __init__(self, limits: MiningLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.started = clock()
        self.baseline = _resident_bytes()
        self.memory_checked = self.started

    def spent(self) -> str | None:
        """Why the run must stop now (time or memory spent), or None."""
        now = self.clock()
        if now - self.started > self.limits.time_budget_s:
            return f"time budget of {self.limits.time_budget_s:g} s spent"
        if self.baseline is not None and now - self.memory_checked >= _MEMORY_CHECK_S:
            self.memory_checked = now
            resident = _resident_bytes()
            grown_mb = ((resident or 0) - self.baseline) / (1 << 20)
            if grown_mb > self.limits.max_memory_mb:
                return f"memory budget of {self.limits.max_memory_mb:g} MiB reached"
        return None


def _join(
    bits: Bits, later: npt.NDArray[np.intp], prefix_bits: Bits, least: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """The items of `later` whose transactions shared with `prefix_bits` number at least
    `least`, with those numbers; in chunks, so a join's memory is bounded too."""
    rows = max(1, _JOIN_WORDS // bits.shape[1])
    kept: list[npt.NDArray[np.intp]] = []
    counts: list[npt.NDArray[np.int64]] = []
    for start in range(0, later.size, rows):
        chunk = later[start : start + rows]
        joined = _popcount(bits[chunk] & prefix_bits)
        keep = joined >= least
        kept.append(chunk[keep])
        counts.append(joined[keep])
    return np.concatenate(kept), np.concatenate(counts)


def frequent_itemsets(
    baskets: Sequence[frozenset[int]],
    n_items: int,
    least: int,
    max_len: int,
    limits: MiningLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FrequentItemsets:
    """Every item set (sorted tuple of item indices) of at most `max_len` items whose
    count is at least `least`, with its count, within `limits`.

    Item sets are mined one length at a time (Eclat's prefix classes, breadth first): a
    run cut short holds every item set shorter than the length it was at, and part of
    that one. Within a length the smaller classes go first, so a few large blocks of
    items bought together cannot use up the budget before the ordinary item sets.

    Args:
        baskets: the transactions, as sets of item indices below `n_items`.
        n_items: the number of distinct items.
        least: the least count of a frequent item set (at least 1).
        max_len: the largest item set mined.
        limits: the bounds of the run (defaults: `MiningLimits()`).
        clock: seconds, for the time budget.
    """
    limits = limits or MiningLimits()
    budget = _Budget(limits, clock)
    bits = _vertical(baskets, n_items)
    counts = _popcount(bits)
    found: dict[tuple[int, ...], int] = {(): len(baskets)}
    singles = np.flatnonzero(counts >= max(least, 1))
    if singles.size > limits.max_itemsets:
        singles = singles[np.argsort(-counts[singles], kind="stable")[: limits.max_itemsets]]
        singles.sort()
        for i in singles:
            found[(int(i),)] = int(counts[i])
        return FrequentItemsets(found, 0, f"item set cap of {limits.max_itemsets} reached")
    for i in singles:
        found[(int(i),)] = int(counts[i])
    # A class: a prefix (one item shorter than the sets of the level) and its members,
    # the items that extend it to a frequent set; pairs of members make the next level.
    classes: list[tuple[tuple[int, ...], npt.NDArray[np.intp]]] = [((), singles)]
    length = 1
    while length < max_len and classes:
        classes.sort(key=lambda c: c[1].size)
        longer: list[tuple[tuple[int, ...], npt.NDArray[np.intp]]] = []
        for prefix, members in classes:
            for position in range(members.size - 1):
                head = (*prefix, int(members[position]))
                prefix_bits = np.bitwise_and.reduce(bits[list(head)], axis=0)
                kept, kept_counts = _join(bits, members[position + 1 :], prefix_bits, least)
                room = limits.max_itemsets - (len(found) - 1)
                for j, count in zip(kept[:room], kept_counts[:room], strict=True):
                    found[(*head, int(j))] = int(count)
                if kept.size > room:
                    reason = f"item set cap of {limits.max_itemsets} reached"
                    return FrequentItemsets(found, length, reason)
                if kept.size > 1:
                    longer.append((head, kept))
                spent = budget.spent()
                if spent is not None:
                    return FrequentItemsets(found, length, spent)
        classes = longer
        length += 1
    return FrequentItemsets(found, max_len)


def _derive(
    found: dict[tuple[int, ...], int],
    items: list[str],
    n: int,
    min_confidence: float,
    min_len: int,
    limits: MiningLimits,
) -> tuple[list[Rule], str | None]:
    """The rules `X => {y}` of the frequent item sets (in the order they were found, so
    the shortest first), up to `limits.max_rules`; and why it stopped early, or None."""
    rules: list[Rule] = []
    for itemset, count in found.items():
        size = len(itemset)
        if size == 0 or size < min_len:
            continue
        for position, head in enumerate(itemset):
            body = itemset[:position] + itemset[position + 1 :]
            confidence = count / found[body]
            if confidence < min_confidence - CONFIDENCE_EPSILON:
                continue
            if len(rules) == limits.max_rules:
                return rules, f"rule cap of {limits.max_rules} reached"
            rules.append(
                Rule(
                    lhs=tuple(sorted(items[i] for i in body)),
                    rhs=items[head],
                    count=count,
                    support=count / n,
                    confidence=confidence,
                    lift=confidence * n / found[(head,)],
                )
            )
    return rules, None


class AssociationRules:
    """A mined rule set, immutable, with a version; it completes baskets.

    Build one with `AssociationRules.mine(...)` (or `from_bytes`). Lookups for
    `complete_basket` use a packed bit matrix of the antecedents, so a basket is matched
    against every rule in one vectorised step.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        transactions: int,
        parameters: dict[str, Any],
        version: int = 0,
        cut_short: str | None = None,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(
            sorted(rules, key=lambda r: (-r.confidence, -r.lift, -r.support, r.lhs, r.rhs))
        )
        self.transactions = transactions
        self.parameters = dict(parameters)
        self.version = version
        #: Why the mining stopped before the end (a `MiningLimits` bound), or None.
        self.cut_short = cut_short
        items = sorted({item for rule in self.rules for item in (*rule.lhs, rule.rhs)})
        self._index = {item: i for i, item in enumerate(items)}
        self._words = max(1, (len(items) + 63) // 64)
        self._lhs_bits: Bits = _pack(
            ([self._index[item] for item in rule.lhs] for rule in self.rules),
            len(self.rules),
            len(items),
        )

    @classmethod
    def mine(
        cls,
        baskets: Iterable[Iterable[str]],
        *,
        min_support: float,
        min_confidence: float,
        max_len: int = 10,
        min_len: int = 1,
        version: int = 0,
        limits: MiningLimits | None = None,
    ) -> AssociationRules:
        """Mine the rules of `baskets` with arules' `apriori()` semantics, within `limits`.

        A run that reaches a limit returns the rules found so far, the shortest first,
        with `cut_short` saying which limit stopped it.

        Args:
            baskets: the transactions; an item repeated within one counts once.
            min_support: least support of a rule (fraction of transactions, 0..1).
            min_confidence: least confidence of a rule (0..1).
            max_len: most items in a rule, both sides (arules' `maxlen`).
            min_len: fewest items in a rule (arules' `minlen`; 1 allows `{} => {y}`).
            version: the version the rule set serves under.
            limits: the bounds of the run (defaults: `MiningLimits()`).
        """
        if not 0 <= min_support <= 1 or not 0 <= min_confidence <= 1:
            raise ValueError("min_support and min_confidence must be within 0..1")
        if min_len < 1 or max_len < min_len:
            raise ValueError("need 1 <= min_len <= max_len")
        limits = limits or MiningLimits()
        names: dict[str, int] = {}
        encoded: list[frozenset[int]] = []
        for basket in baskets:
            encoded.append(frozenset(names.setdefault(item, len(names)) for item in basket))
        parameters = {
            "min_support": min_support,
            "min_confidence": min_confidence,
            "min_len": min_len,
            "max_len": max_len,
        }
        n = len(encoded)
        if n == 0:
            return cls((), transactions=0, parameters=parameters, version=version)
        longest = max(len(b) for b in encoded)
        found = frequent_itemsets(
            encoded, len(names), max(min_count(n, min_support), 1), min(max_len, longest), limits
        )
        rules, cut_short = _derive(found.counts, list(names), n, min_confidence, min_len, limits)
        return cls(
            rules,
            transactions=n,
            parameters=parameters,
            version=version,
            cut_short=found.cut_short or cut_short,
        )

    def __len__(self) -> int:
        return len(self.rules)

    def lengths(self) -> dict[int, int]:
        """How many rules there are of each length (items on both sides)."""
        counts: dict[int, int] = {}
        for rule in self.rules:
            counts[rule.length] = counts.get(rule.length, 0) + 1
        return dict(sorted(counts.items()))

    def find(self, lhs: Iterable[str], rhs: str) -> Rule | None:
        """The rule `lhs => {rhs}`, or None when it was not mined."""
        wanted = tuple(sorted(lhs))
        for rule in self.rules:
            if rule.rhs == rhs and rule.lhs == wanted:
                return rule
        return None

    def complete_basket(self, items: Iterable[str], k: int) -> list[BasketCompletion]:
        """Up to `k` items that complete a partial basket, best first.

        Every rule whose antecedent lies within the basket and whose consequent does not
        suggests its consequent; each item is suggested by its best such rule (highest
        confidence, then lift, then support). Items the rules never saw are ignored.

        Args:
            items: the basket so far.
            k: most suggestions returned (at least 1).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        basket = set(items)
        dense = np.zeros(self._words * 64, dtype=bool)
        known = [self._index[item] for item in basket if item in self._index]
        dense[known] = True
        basket_bits = np.packbits(dense, bitorder="little").view(np.uint64)
        # A rule applies when its antecedent has no item outside the basket.
        applies = ~np.any(self._lhs_bits & ~basket_bits, axis=1)
        completions: list[BasketCompletion] = []
        suggested: set[str] = set()
        # Rules are sorted best first, so the first rule per consequent is its best.
        for r in np.flatnonzero(applies):
            rule = self.rules[r]
            if rule.rhs in basket or rule.rhs in suggested:
                continue
            suggested.add(rule.rhs)
            completions.append(
                BasketCompletion(rule.rhs, rule.lhs, rule.support, rule.confidence, rule.lift)
            )
            if len(completions) == k:
                break
        return completions

    def to_bytes(self) -> bytes:
        """The rule set as deterministic bytes (zlib-compressed JSON) for the state store."""
        body = {
            "format": _FORMAT,
            "version": self.version,
            "transactions": self.transactions,
            "parameters": self.parameters,
            "rules": [
                [list(r.lhs), r.rhs, r.count, r.support, r.confidence, r.lift] for r in self.rules
            ],
        }
        if self.cut_short is not None:  # absent when complete: older snapshots read the same
            body["cut_short"] = self.cut_short
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return zlib.compress(text.encode("utf-8"), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> AssociationRules:
        """A rule set from `to_bytes()` output."""
        body = json.load(io.BytesIO(zlib.decompress(data)))
        if body.get("format") != _FORMAT:
            raise ValueError(f"not a rule set snapshot ({body.get('format')!r})")
        rules = [
            Rule(tuple(lhs), rhs, count, support, confidence, lift)
            for lhs, rhs, count, support, confidence, lift in body["rules"]
        ]
        return cls(
            rules,
            transactions=body["transactions"],
            parameters=body["parameters"],
            version=body["version"],
            cut_short=body.get("cut_short"),
        )
