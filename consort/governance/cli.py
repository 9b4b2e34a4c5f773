"""`python -m consort.governance generate|check|compat|baseline` (make contracts, CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consort.dev.runtime import REPO
from consort.governance.compat import Contract, breaking_changes
from consort.governance.drift import drift_lines, find_drift
from consort.governance.generate import (
    ASYNCAPI_FILE,
    BASELINE_DIR,
    CONTRACTS,
    DRIFT_HINT,
    generate,
    render_contracts,
    write_baseline,
)

SHIP_AS_NEW_VERSION = (
    "Ship a breaking change as a new version instead: a route's new shape under the next "
    "prefix (/v2/...) beside the unchanged /v1 route; an event's as a new Topic with a higher "
    "version (events/<topic>.v<N>.schema.json) beside the unchanged old one."
)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _complain(text: str) -> None:
    sys.stderr.write(text + "\n")


def _check(contracts_dir: Path) -> int:
    drift = find_drift(contracts_dir)
    if not drift:
        _say(f"{_shown(contracts_dir)}/ matches the code")
        return 0
    _complain(f"{DRIFT_HINT}\n{len(drift)} file(s) in {_shown(contracts_dir)}/ differ:")
    for line in drift_lines(drift):
        _complain(line)
    return 1


def _compat(contracts_dir: Path) -> int:
    baseline_dir = contracts_dir / BASELINE_DIR
    if not baseline_dir.is_dir():
        _complain(
            f"no baseline at {_shown(baseline_dir)}/: at a release, run "
            "`python -m consort.governance baseline` and commit it"
        )
        return 1
    baseline = Contract.read(baseline_dir)
    current = Contract.from_files(render_contracts())
    changes = breaking_changes(baseline, current)
    if not changes:
        _say(
            f"no breaking change against {_shown(baseline_dir)}/ "
            f"(apps: {len(current.apis)}, event payload versions: {len(current.events)})"
        )
        return 0
    _complain(f"{len(changes)} breaking change(s) against {_shown(baseline_dir)}/ (the release):")
    for change in changes:
        _complain(f"  - {change}")
    _complain(SHIP_AS_NEW_VERSION)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run `generate`, `check`, `compat` or `baseline`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m consort.governance",
        description="Generate the language-neutral contract and check it in CI.",
    )
    parser.add_argument(
        "--contracts", type=Path, default=CONTRACTS, help="contracts folder (default: the repo's)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write openapi/, events/ and asyncapi.yaml from the code")
    sub.add_parser("check", help="fail when the committed contract differs from the generated")
    sub.add_parser("compat", help="fail on breaking changes against the baseline")
    sub.add_parser("baseline", help="make the generated contract the baseline (at a release)")
    args = parser.parse_args(argv)
    folder: Path = args.contracts
    if args.command == "generate":
        count = generate(folder)
        _say(f"wrote {count} files to {_shown(folder)}/ (openapi/, events/, {ASYNCAPI_FILE})")
        return 0
    if args.command == "check":
        return _check(folder)
    if args.command == "compat":
        return _compat(folder)
    count = write_baseline(folder / BASELINE_DIR)
    _say(f"wrote {count} files to {_shown(folder / BASELINE_DIR)}/: commit them with the release")
    return 0
