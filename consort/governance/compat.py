"""Compatibility: the changes against the released baseline that break clients or consumers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consort.governance.generate import (
    BASELINE_DIR,
    CONTRACTS,
    EVENT_FILE,
    EVENTS_DIR,
    OPENAPI_DIR,
    Json,
    read_tree,
)


@dataclass(frozen=True)
class Contract:
    """The parts of a contract that compatibility is judged on."""

    #: app id -> its OpenAPI document.
    apis: dict[str, Json]
    #: (topic, version) -> the JSON Schema of that version's payload.
    events: dict[tuple[str, int], Json]

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> Contract:
        """Parse rendered or read contract files (see `render_contracts`, `read_tree`)."""
        apis: dict[str, Json] = {}
        events: dict[tuple[str, int], Json] = {}
        for rel, text in files.items():
            folder, _, name = rel.partition("/")
            if folder == OPENAPI_DIR and name.endswith(".json"):
                apis[name.removesuffix(".json")] = json.loads(text)
            elif folder == EVENTS_DIR:
                match = EVENT_FILE.match(name)
                if match is None:
                    raise ValueError(
                        f"{rel}: event schemas are named <topic>.v<version>.schema.json"
                    )
                events[(match["topic"], int(match["version"]))] = json.loads(text)
        return cls(apis, events)

    @classmethod
    def read(cls, folder: Path) -> Contract:
        """The contract in `folder` (a contracts folder or a baseline)."""
        return cls.from_files(read_tree(folder))


@dataclass(frozen=True)
class BreakingChange:
    """A change that breaks clients or consumers built against the baseline."""

    subject: str  # "app gateway" or "topic texts.analyzed v1"
    location: str  # "POST /v1/text/sentiment, response 200 (application/json)" or "payload"
    field: str  # dotted path inside the body or payload ("" for the whole); `[]` = items
    change: str
    remedy: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.subject, self.location) if p)
        at = f", field `{self.field}`" if self.field else ""
        return f"{where}{at}: {self.change}\n    fix: {self.remedy}"


@dataclass(frozen=True)
class _Rules:
    """Who must keep working after a schema changes."""

    #: Old readers read new messages: nothing they rely on may go or change meaning.
    old_readers: bool
    #: Old writers send to the new reader: everything they send must still be accepted.
    old_writers: bool


REQUEST = _Rules(old_readers=False, old_writers=True)
RESPONSE = _Rules(old_readers=True, old_writers=False)
# Publishers and subscribers upgrade independently, and old events stay in the stream.
EVENT = _Rules(old_readers=True, old_writers=True)


@dataclass(frozen=True)
class _Variant:
    """One alternative of a schema (an `anyOf`/`oneOf` member), its `$ref`s followed."""

    schema: Json
    ref: str | None


def _pointer(root: Json, ref: str) -> Json:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if not isinstance(node, dict):
        raise ValueError(f"$ref {ref!r} does not point at a schema")
    return node


def _resolve(root: Json, schema: Json) -> tuple[Json, str | None]:
    """Follow `$ref`s (into components/schemas or $defs); siblings are annotations only."""
    ref: str | None = None
    while "$ref" in schema:
        ref = schema["$ref"]
        schema = _pointer(root, ref)
    return schema, ref


def _merge_all_of(root: Json, schema: Json) -> Json:
    merged: Json = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part, _ = _resolve(root, part)
        if "allOf" in part:
            part = _merge_all_of(root, part)
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**value, **merged.get("properties", {})}
            elif key == "required":
                merged["required"] = sorted({*value, *merged.get("required", [])})
            else:
                merged.setdefault(key, value)
    return merged


def _variants(root: Json, schema: Json) -> list[_Variant]:
    schema, ref = _resolve(root, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [v for member in schema[key] for v in _variants(root, member)]
    if "allOf" in schema:
        schema = _merge_all_of(root, schema)
    return [_Variant(schema, ref)]


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "boolean"),  # before int: a bool is an int in Python
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _types_of(schema: Json) -> set[str] | None:
    """The JSON types one variant admits (a string's `format` included); None for any."""
    declared = schema.get("type")
    if isinstance(declared, str):
        types = {declared}
    elif isinstance(declared, list):
        types = set(declared)
    elif "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        types = {_json_type(v) for v in values}
    elif "properties" in schema or "additionalProperties" in schema:
        types = {"object"}
    elif "items" in schema:
        types = {"array"}
    else:
        return None
    if "string" in types and "format" in schema:
        types = (types - {"string"}) | {f"string({schema['format']})"}
    return types


def _types(variants: list[_Variant]) -> frozenset[str] | None:
    found: set[str] = set()
    for v in variants:
        types = _types_of(v.schema)
        if types is None:
            return None
        found |= types
    return frozenset(found)


def _widens(old: frozenset[str] | None, new: frozenset[str] | None) -> bool:
    """True when `new` admits a value that `old` does not."""
    if old is None:
        return False
    if new is None:
        return True
    # Every integer is a number, so integer -> number widens and number -> integer narrows.
    return any(t not in old and not (t == "integer" and "number" in old) for t in new)


def _enum(variants: list[_Variant]) -> frozenset[str] | None:
    """The allowed values (as JSON text), or None when a variant is not limited to values."""
    values: set[str] = set()
    for v in variants:
        if "const" in v.schema:
            values.add(json.dumps(v.schema["const"], sort_keys=True))
        elif "enum" in v.schema:
            values |= {json.dumps(x, sort_keys=True) for x in v.schema["enum"]}
        elif _types_of(v.schema) != {"null"}:  # nullability is the type check's business
            return None
    return frozenset(values)


def _show_types(types: frozenset[str] | None) -> str:
    return " | ".join(sorted(types)) if types is not None else "any"


def _show_values(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _SchemaDiff:
    """Compares an old and a new schema under `rules`, collecting (field, change) pairs."""

    def __init__(self, old_root: Json, new_root: Json, rules: _Rules) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.rules = rules
        self.changes: list[tuple[str, str]] = []
        # Pairs of $refs already compared: recursive models end, and each shared model is
        # reported once per operation.
        self._compared: set[tuple[str, str]] = set()

    def compare(self, old: Json, new: Json, path: str = "") -> None:
        olds = _variants(self.old_root, old)
        news = _variants(self.new_root, new)
        old_types, new_types = _types(olds), _types(news)
        readers_break = self.rules.old_readers and _widens(old_types, new_types)
        writers_break = self.rules.old_writers and _widens(new_types, old_types)
        if readers_break or writers_break:
            shown = f"{_show_types(old_types)} to {_show_types(new_types)}"
            self.changes.append((path, f"type changed from {shown}"))
            return
        self._compare_values(_enum(olds), _enum(news), path)
        for kind in ("object", "array"):
            o = next((v for v in olds if kind in (_types_of(v.schema) or ())), None)
            n = next((v for v in news if kind in (_types_of(v.schema) or ())), None)
            if o is None or n is None:
                continue
            if o.ref and n.ref:
                if (o.ref, n.ref) in self._compared:
                    continue
                self._compared.add((o.ref, n.ref))
            if kind == "object":
                self._compare_object(o.schema, n.schema, path)
            else:
                self.compare(o.schema.get("items", {}), n.schema.get("items", {}), f"{path}[]")

    def _compare_values(
        self, old: frozenset[str] | None, new: frozenset[str] | None, path: str
    ) -> None:
        if self.rules.old_readers and old is not None:
            if new is None:
                self.changes.append((path, f"no longer limited to the values {_show_values(old)}"))
            elif new - old:
                added = _show_values(new - old)
                self.changes.append((path, f"new values {added} that old readers do not know"))
        if self.rules.old_writers and new is not None:
            if old is None:
                self.changes.append((path, f"now limited to the values {_show_values(new)}"))
            elif old - new:
                self.changes.append((path, f"values {_show_values(old - new)} no longer accepted"))

    def _compare_object(self, old: Json, new: Json, path: str) -> None:
        old_props: Json = old.get("properties", {})
        new_props: Json = new.get("properties", {})
        old_required = set(old.get("required", []))
        new_required = set(new.get("required", []))
        for name, old_prop in old_props.items():
            at = _join(path, name)
            if name not in new_props:
                if self.rules.old_readers:
                    self.changes.append((at, "removed"))
                elif new.get("additionalProperties") is False:
                    self.changes.append(
                        (at, "removed, and unknown fields are rejected: senders of it now fail")
                    )
                continue
            self.compare(old_prop, new_props[name], at)
            if self.rules.old_writers and name in new_required - old_required:
                self.changes.append((at, "became required"))
            if self.rules.old_readers and name in old_required - new_required:
                self.changes.append((at, "became optional: old readers may not find it"))
        for name in sorted(new_props.keys() - old_props.keys()):
            if self.rules.old_writers and name in new_required:
                self.changes.append((_join(path, name), "new required field"))
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.compare(old_extra, new_extra, _join(path, "*"))


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
RETIRE = "retire it only at a release, then refresh contracts/baseline/"


def _next_version_path(path: str) -> str:
    match = re.match(r"^/v(\d+)(/.*)?$", path)
    if match is None:
        return f"/v1{path}"
    return f"/v{int(match[1]) + 1}{match[2] or ''}"


def _parameters(doc: Json, item: Json, operation: Json) -> dict[tuple[str, str], Json]:
    found: dict[tuple[str, str], Json] = {}
    for raw in (*item.get("parameters", []), *operation.get("parameters", [])):
        param, _ = _resolve(doc, raw)
        found[(param["in"], param["name"])] = param
    return found


def _operation_changes(
    old_doc: Json, new_doc: Json, path: str, method: str
) -> list[tuple[str, str, str]]:
    """(location, field, change) for each breaking change of one operation."""
    old_item, new_item = old_doc["paths"][path], new_doc["paths"][path]
    old_op, new_op = old_item[method], new_item[method]
    found: list[tuple[str, str, str]] = []

    def diff(location: str, old: Json, new: Json, rules: _Rules) -> None:
        schemas = _SchemaDiff(old_doc, new_doc, rules)
        schemas.compare(old.get("schema", {}), new.get("schema", {}))
        found.extend((location, at, change) for at, change in schemas.changes)

    old_params = _parameters(old_doc, old_item, old_op)
    for key, new_param in _parameters(new_doc, new_item, new_op).items():
        location = f"{key[0]} parameter `{key[1]}`"
        old_param = old_params.get(key)
        if old_param is None:
            if new_param.get("required"):
                found.append((location, "", "new required parameter"))
            continue
        if new_param.get("required") and not old_param.get("required"):
            found.append((location, "", "became required"))
        diff(location, old_param, new_param, REQUEST)

    old_body = _resolve(old_doc, old_op["requestBody"])[0] if "requestBody" in old_op else None
    new_body = _resolve(new_doc, new_op["requestBody"])[0] if "requestBody" in new_op else None
    if new_body and new_body.get("required") and not (old_body and old_body.get("required")):
        found.append(("request body", "", "now required"))
    if old_body and new_body:
        for media, old_media in old_body.get("content", {}).items():
            new_media = new_body.get("content", {}).get(media)
            if new_media is None:
                found.append((f"request body ({media})", "", "no longer accepted"))
            else:
                diff(f"request body ({media})", old_media, new_media, REQUEST)

    new_responses = new_op.get("responses", {})
    for status, raw_old in old_op.get("responses", {}).items():
        # Clients rely on what a success returns; an error that can no longer happen is fine.
        success = str(status).startswith("2")
        if status not in new_responses:
            if success:
                found.append((f"response {status}", "", "removed"))
            continue
        old_resp = _resolve(old_doc, raw_old)[0]
        new_resp = _resolve(new_doc, new_responses[status])[0]
        for media, old_media in old_resp.get("content", {}).items():
            new_media = new_resp.get("content", {}).get(media)
            location = f"response {status} ({media})"
            if new_media is None:
                if success:
                    found.append((location, "", "no longer returned"))
            else:
                diff(location, old_media, new_media, RESPONSE)
    return found


def _api_changes(app_id: str, old_doc: Json, new_doc: Json) -> list[BreakingChange]:
    subject = f"app {app_id}"
    changes: list[BreakingChange] = []
    new_paths: Json = new_doc.get("paths", {})
    for path, old_item in sorted(old_doc.get("paths", {}).items()):
        for method in HTTP_METHODS:
            if method not in old_item:
                continue
            route = f"{method.upper()} {path}"
            if method not in new_paths.get(path, {}):
                remedy = f"keep {route}, clients call it; {RETIRE}"
                changes.append(BreakingChange(subject, route, "", "route removed", remedy))
                continue
            remedy = (
                f"ship the new shape as {method.upper()} {_next_version_path(path)} "
                f"and keep {route} unchanged"
            )
            changes += [
                BreakingChange(subject, f"{route}, {location}", at, change, remedy)
                for location, at, change in _operation_changes(old_doc, new_doc, path, method)
            ]
    return changes


def _event_changes(baseline: Contract, current: Contract) -> list[BreakingChange]:
    changes: list[BreakingChange] = []
    current_names = {name for name, _ in current.events}
    for (name, version), old_schema in sorted(baseline.events.items()):
        subject = f"topic {name} v{version}"
        new_schema = current.events.get((name, version))
        if new_schema is None:
            change = "topic removed" if name not in current_names else f"v{version} removed"
            remedy = f"keep publishing {name} v{version} for its subscribers; {RETIRE}"
            changes.append(BreakingChange(subject, "", "", change, remedy))
            continue
        schemas = _SchemaDiff(old_schema, new_schema, EVENT)
        schemas.compare(old_schema, new_schema)
        if not schemas.changes:
            continue
        nxt = 1 + max(v for n, v in (*baseline.events, *current.events) if n == name)
        remedy = (
            f"ship it as {name} v{nxt}: a new Topic(name={name!r}, version={nxt}, ...) in "
            f"consort/contracts/events.py (schema events/{name}.v{nxt}.schema.json, CloudEvent "
            f"type consort.{name}.v{nxt}) beside the unchanged v{version}"
        )
        changes += [
            BreakingChange(subject, "payload", at, change, remedy) for at, change in schemas.changes
        ]
    return changes


def breaking_changes(baseline: Contract, current: Contract) -> list[BreakingChange]:
    """Every change from `baseline` to `current` that breaks a client or a consumer.

    Additions pass: new apps, routes, optional fields, topics and topic versions. A change to
    an existing route or topic version breaks when old clients or consumers would fail.
    """
    changes: list[BreakingChange] = []
    for app_id, old_doc in sorted(baseline.apis.items()):
        new_doc = current.apis.get(app_id)
        if new_doc is None:
            remedy = f"keep the app and its routes; {RETIRE}"
            changes.append(BreakingChange(f"app {app_id}", "", "", "app removed", remedy))
        else:
            changes += _api_changes(app_id, old_doc, new_doc)
    return changes + _event_changes(baseline, current)


def check_compat(
    contracts_dir: Path = CONTRACTS, baseline_dir: Path | None = None
) -> list[BreakingChange]:
    """Breaking changes of the contract in `contracts_dir` against its baseline.

    Args:
        contracts_dir: the contracts folder to judge.
        baseline_dir: the released contract; `contracts_dir/baseline` when omitted.
    """
    baseline_dir = contracts_dir / BASELINE_DIR if baseline_dir is None else baseline_dir
    if not baseline_dir.is_dir():
        raise FileNotFoundError(f"no baseline at {baseline_dir}")
    return breaking_changes(Contract.read(baseline_dir), Contract.read(contracts_dir))
