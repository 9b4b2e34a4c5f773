"""`consort k8s render|check` (also `python -m consort.deploy`): make k8s, make k8s-check."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from consort.deploy.render import K8S_DIR
from consort.deploy.sources import load_sources
from consort.deploy.tree import (
    DEPLOY,
    DRIFT_HINT,
    check_tree,
    find_deploy_drift,
    render_deploy,
    write_deploy,
)
from consort.deploy.validate import manifests
from consort.governance.drift import drift_lines


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _complain(text: str) -> None:
    sys.stderr.write(text + "\n")


def summary(tree: dict[str, str]) -> str:
    """How many manifests each environment has, by kind."""
    lines = []
    for env in sorted({m.env for m in manifests(tree)}):
        kinds = Counter(m.kind for m in manifests(tree) if m.env == env)
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        lines.append(f"  {K8S_DIR}/{env}/: {sum(kinds.values())} manifests ({listed})")
    return "\n".join(lines)


def render() -> int:
    tree = render_deploy(load_sources())
    count = write_deploy(tree)
    _say(f"wrote {count} files to deploy/\n{summary(tree)}")
    return 0


def check() -> int:
    """Drift from the generator, then schemas, policies and the Dockerfile's lint."""
    sources = load_sources()
    tree = render_deploy(sources)
    drift = find_deploy_drift(tree)
    if drift:
        _complain(f"{DRIFT_HINT}\n{len(drift)} file(s) in deploy/ differ:")
        for line in drift_lines(drift):
            _complain(line)
        return 1
    problems = check_tree(tree, sources)
    if problems:
        _complain(f"{len(problems)} problem(s) in deploy/:")
        for problem in problems:
            _complain(f"  - {problem}")
        return 1
    _say(f"{DEPLOY.name}/ matches the generator; schemas, policies, hadolint pass\n{summary(tree)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`consort k8s render|check` (the `action` argument)."""
    return render() if args.action == "render" else check()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consort.deploy", description=__doc__)
    parser.add_argument("action", choices=("render", "check"))
    return run(parser.parse_args(argv))
