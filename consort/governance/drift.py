"""Drift: where committed generated files (contracts/, deploy/) differ from the generator."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consort.governance.generate import CONTRACTS, read_tree, render_contracts


@dataclass(frozen=True)
class Drift:
    """One committed file that is not what its generator writes."""

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
    return diff_trees(read_tree(contracts_dir), generated)


def diff_trees(committed: Mapping[str, str], generated: Mapping[str, str]) -> list[Drift]:
    """Where committed files (by relative path) differ from generated ones."""
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


def drift_lines(drift: list[Drift], shown: int = 40) -> list[str]:
    """Each drifted file and the start of its diff, indented for a terminal."""
    lines: list[str] = []
    for item in drift:
        lines.append(f"  - {item}")
        diff = item.diff.splitlines()
        lines += [f"      {line}" for line in diff[:shown]]
        if len(diff) > shown:
            lines.append(f"      … {len(diff) - shown} more lines")
    return lines
