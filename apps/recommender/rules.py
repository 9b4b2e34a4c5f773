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
import zlib
from collections.abc import Iterable, Sequence
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


def _vertical(baskets: Sequence[frozenset[int]], n_items: int) -> Bits:
    """One bit vector over the transactions per item, packed in 64-bit words."""
    words = max(1, (len(baskets) + 63) // 64)
    dense = np.zeros((n_items, words * 64), dtype=bool)
    for t, basket in enumerate(baskets):
        dense[list(basket), t] = True
    packed = np.packbits(dense, axis=1, bitorder="little")
    return packed.view(np.uint64).reshape(n_items, words)


def frequent_itemsets(
    baskets: Sequence[frozenset[int]], n_items: int, least: int, max_len: int
) -> dict[tuple[int, ...], int]:
    """Every item set (sorted tuple of item indices) of at most `max_len` items whose
    count is at least `least`, with its count; the empty set has the transaction count.

    Args:
        baskets: the transactions, as sets of item indices below `n_items`.
        n_items: the number of distinct items.
        least: the least count of a frequent item set (at least 1).
        max_len: the largest item set mined.
    """
    bits = _vertical(baskets, n_items)
    counts = _popcount(bits)
    found: dict[tuple[int, ...], int] = {(): len(baskets)}
    singles = np.flatnonzero(counts >= max(least, 1))
    for i in singles:
        found[(int(i),)] = int(counts[i])
    if max_len < 2:
        return found
    # Depth-first: a prefix's tid bitset ANDed with every later frequent extension at once.
    stack: list[tuple[tuple[int, ...], Bits, npt.NDArray[np.intp]]] = []
    for position, i in enumerate(singles):
        stack.append(((int(i),), bits[i], singles[position + 1 :]))
    while stack:
        prefix, prefix_bits, extensions = stack.pop()
        if extensions.size == 0:
            continue
        joined = bits[extensions] & prefix_bits
        joined_counts = _popcount(joined)
        keep = np.flatnonzero(joined_counts >= least)
        if keep.size == 0:
            continue
        kept_items = extensions[keep]
        for position, (j, row) in enumerate(zip(kept_items, keep, strict=True)):
            itemset = (*prefix, int(j))
            found[itemset] = int(joined_counts[row])
            if len(itemset) < max_len:
                stack.append((itemset, joined[row], kept_items[position + 1 :]))
    return found


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
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(
            sorted(rules, key=lambda r: (-r.confidence, -r.lift, -r.support, r.lhs, r.rhs))
        )
        self.transactions = transactions
        self.parameters = dict(parameters)
        self.version = version
        items = sorted({item for rule in self.rules for item in (*rule.lhs, rule.rhs)})
        self._index = {item: i for i, item in enumerate(items)}
        words = max(1, (len(items) + 63) // 64)
        dense = np.zeros((len(self.rules), words * 64), dtype=bool)
        for r, rule in enumerate(self.rules):
            dense[r, [self._index[item] for item in rule.lhs]] = True
        self._lhs_bits: Bits = (
            np.packbits(dense, axis=1, bitorder="little")
            .view(np.uint64)
            .reshape(len(self.rules), words)
        )
        self._words = words

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
    ) -> AssociationRules:
        """Mine the rules of `baskets` with arules' `apriori()` semantics.

        Args:
            baskets: the transactions; an item repeated within one counts once.
            min_support: least support of a rule (fraction of transactions, 0..1).
            min_confidence: least confidence of a rule (0..1).
            max_len: most items in a rule, both sides (arules' `maxlen`).
            min_len: fewest items in a rule (arules' `minlen`; 1 allows `{} => {y}`).
            version: the version the rule set serves under.
        """
        if not 0 <= min_support <= 1 or not 0 <= min_confidence <= 1:
            raise ValueError("min_support and min_confidence must be within 0..1")
        if min_len < 1 or max_len < min_len:
            raise ValueError("need 1 <= min_len <= max_len")
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
        items = list(names)
        longest = max(len(b) for b in encoded)
        found = frequent_itemsets(
            encoded, len(items), max(min_count(n, min_support), 1), min(max_len, longest)
        )
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
        return cls(rules, transactions=n, parameters=parameters, version=version)

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
        )
