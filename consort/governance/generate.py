"""Render the contract from the code: OpenAPI per app, event JSON Schemas, AsyncAPI."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI

from consort.contracts.events import TOPICS, Topic, dead_letter
from consort.dev.runtime import REPO
from consort.dev.system import RunFile

Json = dict[str, Any]

CONTRACTS = REPO / "contracts"
RUN_FILE = REPO / "dapr.yaml"
OPENAPI_DIR = "openapi"
EVENTS_DIR = "events"
ASYNCAPI_FILE = "asyncapi.yaml"
BASELINE_DIR = "baseline"
#: Generated folders; anything else in them is stale and removed by `generate`.
GENERATED_DIRS = (OPENAPI_DIR, EVENTS_DIR)
EVENT_FILE = re.compile(r"^(?P<topic>.+)\.v(?P<version>\d+)\.schema\.json$")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DRIFT_HINT = "contract drift: run `make contracts` and commit"
ASYNCAPI_HEADER = (
    "# Generated from consort/contracts/events.py by `make contracts`; do not edit.\n"
    "# Payload schemas: events/<topic>.v<version>.schema.json.\n"
)


# -- generating ---------------------------------------------------------------------------


def event_schema_file(topic: Topic) -> str:
    """The schema file name of one topic version, e.g. `texts.analyzed.v1.schema.json`."""
    return f"{topic.name}.v{topic.version}.schema.json"


def app_targets(run_file: Path = RUN_FILE) -> dict[str, str]:
    """Each app id of the run file and the FastAPI app of its HTTP contract.

    A Python app's is its ASGI target (`MODULE:APP`, its command's end). An app in another
    language (its command is not `python ...`) describes its contract in
    `apps/<app id>/openapi.py` as a FastAPI app whose routes are never served.
    """
    return {
        spec.app_id: spec.command[-1]
        if spec.command[0] in ("python", "python3")
        else f"apps.{spec.app_id.replace('-', '_')}.openapi:app"
        for spec in RunFile.load(run_file).apps
    }


def load_app(target: str) -> FastAPI:
    """Import the FastAPI app `MODULE:APP`."""
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"{target!r} is not MODULE:APP")
    app = getattr(importlib.import_module(module), attr)
    if not isinstance(app, FastAPI):
        raise TypeError(f"{target} is a {type(app).__name__}, not a FastAPI app")
    return app


def event_schema(topic: Topic) -> Json:
    """The JSON Schema of one topic version's payload, named by its CloudEvent type."""
    return {
        **topic.payload.model_json_schema(),
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:consort:event:{topic.event_type}",
        "title": topic.event_type,
        "x-consort": {
            "topic": topic.name,
            "version": topic.version,
            "event_type": topic.event_type,
            "dead_letter_topic": dead_letter(topic.name),
            "publishers": list(topic.publishers),
            "subscribers": list(topic.subscribers),
        },
    }


def _channel_id(topic_name: str) -> str:
    # AsyncAPI ids allow letters, digits, `-` and `_`: `texts.analyzed` -> `texts-analyzed`.
    return topic_name.replace(".", "-")


def _message_id(topic: Topic) -> str:
    return f"{_channel_id(topic.name)}-v{topic.version}"


def _by_name(topics: Sequence[Topic]) -> dict[str, list[Topic]]:
    grouped: dict[str, list[Topic]] = {}
    for t in sorted(topics, key=lambda t: (t.name, t.version)):
        grouped.setdefault(t.name, []).append(t)
    return grouped


def asyncapi_document(topics: Sequence[Topic], version: str) -> Json:
    """AsyncAPI 3.0: every topic a channel (and its dead-letter topic), every app's operations.

    Args:
        topics: the topics and their versions; versions of one topic share its channel.
        version: the document's `info.version` (the project's version).
    """
    grouped = _by_name(topics)
    channels: Json = {}
    messages: Json = {}
    for name, versions in grouped.items():
        refs = {
            _message_id(t): {"$ref": f"#/components/messages/{_message_id(t)}"} for t in versions
        }
        for t in versions:
            messages[_message_id(t)] = {
                "name": t.event_type,
                "title": f"{t.name} v{t.version}",
                "summary": t.description,
                "description": (
                    f"The `data` of a CloudEvent whose `type` is `{t.event_type}`; the "
                    "CloudEvent `id` is the consumers' idempotency key."
                ),
                "contentType": "application/json",
                "payload": {"$ref": f"./{EVENTS_DIR}/{event_schema_file(t)}"},
            }
        channels[_channel_id(name)] = {
            "address": name,
            "title": name,
            "description": versions[-1].description,
            "messages": refs,
        }
        channels[_channel_id(dead_letter(name))] = {
            "address": dead_letter(name),
            "title": dead_letter(name),
            "description": (
                f"Events of `{name}` that a subscriber dropped as poison or failed on after "
                "its retries; daprd moves them here unchanged."
            ),
            "messages": refs,
        }
    operations: Json = {}
    apps = sorted({app for t in topics for app in (*t.publishers, *t.subscribers)})
    for app in apps:
        for action, verb in (("send", "publishes"), ("receive", "subscribes to")):
            for name, versions in grouped.items():
                mine = [
                    t
                    for t in versions
                    if app in (t.publishers if action == "send" else t.subscribers)
                ]
                if not mine:
                    continue
                channel = _channel_id(name)
                operations[f"{app}-{action}-{channel}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel}"},
                    "messages": [
                        {"$ref": f"#/channels/{channel}/messages/{_message_id(t)}"} for t in mine
                    ],
                    "summary": f"{app} {verb} {name}",
                    "tags": [{"name": app}],
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Consort events",
            "version": version,
            "description": (
                "CloudEvents on the Dapr `pubsub` component. Topics are named "
                "`<subject>.<past verb>`; poison messages go to `<topic>.dead-letter`. A "
                "breaking payload change ships as a new version beside the old one."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


class NoAliasDumper(yaml.SafeDumper):
    """Writes shared objects out in full: anchors and aliases make a contract hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _json_text(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def project_version() -> str:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    return str(project["version"])


def render_contracts(run_file: Path = RUN_FILE, topics: Sequence[Topic] = TOPICS) -> dict[str, str]:
    """Every generated file of the contract, by its path relative to `contracts/`.

    Args:
        run_file: the Multi-App Run file listing the apps (each app's OpenAPI document).
        topics: the topics whose payload schemas and channels are generated.
    """
    seen = [(t.name, t.version) for t in topics]
    if len(seen) != len(set(seen)):
        raise ValueError(f"a topic version is declared twice: {sorted(seen)}")
    files: dict[str, str] = {}
    for app_id, target in app_targets(run_file).items():
        # FastAPI's document holds nothing volatile (no timestamps, hosts or ports), so it
        # is written as it is.
        files[f"{OPENAPI_DIR}/{app_id}.json"] = _json_text(load_app(target).openapi())
    for t in topics:
        files[f"{EVENTS_DIR}/{event_schema_file(t)}"] = _json_text(event_schema(t))
    files[ASYNCAPI_FILE] = ASYNCAPI_HEADER + yaml.dump(
        asyncapi_document(topics, project_version()),
        Dumper=NoAliasDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return files


def _write_tree(files: Mapping[str, str], folder: Path) -> None:
    """Write `files` under `folder`, removing what the generated folders no longer hold."""
    for sub in GENERATED_DIRS:
        if (folder / sub).is_dir():
            for path in (folder / sub).iterdir():
                if path.is_file() and f"{sub}/{path.name}" not in files:
                    path.unlink()
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def generate(contracts_dir: Path = CONTRACTS, files: Mapping[str, str] | None = None) -> int:
    """Write the generated contract into `contracts_dir` (its baseline stays as it is).

    Args:
        contracts_dir: the contracts folder.
        files: the rendered contract; rendered from the code when omitted.

    Returns:
        How many files the contract has.
    """
    files = render_contracts() if files is None else files
    _write_tree(files, contracts_dir)
    return len(files)


def write_baseline(
    baseline_dir: Path = CONTRACTS / BASELINE_DIR, files: Mapping[str, str] | None = None
) -> int:
    """Make the generated openapi/ and events/ the released baseline (do this at a release).

    Args:
        baseline_dir: the baseline folder.
        files: the rendered contract; rendered from the code when omitted.

    Returns:
        How many files the baseline has.
    """
    files = render_contracts() if files is None else files
    released = {rel: text for rel, text in files.items() if rel.split("/")[0] in GENERATED_DIRS}
    _write_tree(released, baseline_dir)
    return len(released)


# -- drift --------------------------------------------------------------------------------


def read_tree(folder: Path) -> dict[str, str]:
    """The contract files under `folder` (openapi/, events/, asyncapi.yaml), by relative path."""
    files: dict[str, str] = {}
    for sub in GENERATED_DIRS:
        if (folder / sub).is_dir():
            for path in sorted((folder / sub).iterdir()):
                if path.is_file():
                    files[f"{sub}/{path.name}"] = path.read_text(encoding="utf-8")
    if (folder / ASYNCAPI_FILE).is_file():
        files[ASYNCAPI_FILE] = (folder / ASYNCAPI_FILE).read_text(encoding="utf-8")
    return files
