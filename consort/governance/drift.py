"""Drift: where the committed contracts/ differ from what the code generates."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consort.governance.generate import CONTRACTS, read_tree, render_contracts


@dataclass(frozen=True)
class Drift:
    """One committed contract file that is not what the code generates."""

    path: str
    problem: str
    diff: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def find_drift(
    contracts_dir: Path = CONTRACTS, generated: Mapping[str, str] | None = None
) -> list[Drift]:
    """Where the committed contract differs from the generated one (empty when in step).

    Args:
        contracts_dir: the committed contracts folder.
        generated: the rendered contract; rendered from the code when omitted.
    """
    generated = render_contracts() if generated is None else generated
    committed = read_tree(contracts_dir)
    drift: list[Drift] = []
    for rel in sorted(generated.keys() | committed.keys()):
        if rel not in committed:
            drift.append(Drift(rel, "missing (the code generates it)"))
        elif rel not in generated:
            drift.append(Drift(rel, "not generated any more (stale)"))
        elif committed[rel] != generated[rel]:
            lines = difflib.unified_diff(
                committed[rel].splitlines(),
                generated[rel].splitlines(),
                f"committed/{rel}",
                f"generated/{rel}",
                lineterm="",
            )
            drift.append(Drift(rel, "differs from the generated file", "\n".join(lines)))
    return drift
