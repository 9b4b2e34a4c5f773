"""The code's shape, as the house rules want it: small entry points, short functions,
domain modules free of transport, apps importing only the kit and the contracts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from consort.dev.runtime import REPO

pytestmark = pytest.mark.unit

#: Where functions must stay short (benchmarks and evaluations may run longer).
SOURCE_DIRS = ("apps", "consort", "actors", "workflows")
MAX_MAIN_LINES = 250
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_main_module_is_over_250_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "apps").glob("*/main.py")
        if (n := len(p.read_text().splitlines())) > MAX_MAIN_LINES
    }
    assert not long, f"main.py wires transport only; split these: {long}"


def test_no_function_is_over_80_lines() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_apps_import_only_the_kit_the_contracts_and_their_own_code() -> None:
    wrong = []
    for path in sorted((REPO / "apps").rglob("*.py")):
        app = path.relative_to(REPO / "apps").parts[0]
        for name in _imports(ast.parse(path.read_text())):
            top = name.split(".")
            if top[0] == "consort" and top[1:2] not in (["kit"], ["contracts"]):
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
            if top[0] == "apps" and top[1:2] != [app]:
                wrong.append(f"{path.relative_to(REPO)} imports another app: {name}")
    assert not wrong, "\n".join(wrong)


def test_domain_modules_import_neither_fastapi_nor_dapr() -> None:
    """Only an app's transport modules (main.py, routes/, events, deps) touch the web
    framework or the Dapr SDK; the AI work is plain Python, unit-tested without them."""
    transport = {
        "main.py",  # every app: assembly
        "events.py",  # event handlers
        "settings.py",
        "calls.py",  # gateway: calls to the services and their problems
        "edge.py",  # gateway: API keys, rate limits, CORS and security headers
        "image_upload.py",  # gateway: multipart and raw image bodies
        "orchestrator.py",  # gateway: forwarding to the orchestrator
        "engine.py",  # orchestrator: the workflow runtime's lifecycle
        "openapi.py",  # search (Rust): the HTTP contract, declared as FastAPI routes
    }
    wrong = []
    for path in sorted((REPO / "apps").rglob("*.py")):
        rel = path.relative_to(REPO / "apps")
        if path.name in transport or "routes" in rel.parts or path.name == "__init__.py":
            continue
        for name in _imports(ast.parse(path.read_text())):
            if name.split(".")[0] in ("fastapi", "starlette", "dapr"):
                wrong.append(f"apps/{rel} imports {name}")
    assert not wrong, "\n".join(wrong)
