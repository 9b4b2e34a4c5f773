"""Check rendered manifests without a cluster: schemas, then the policies Dapr relies on.

- Schemas: Kubernetes kinds against the OpenAPI schemas of `KUBERNETES_VERSION` (shipped in
  the `kubernetes-validate` package), Dapr and KEDA kinds against the CRD schemas kept in
  `deploy/schemas/crds/`, both strict: a field the schema does not name is an error.
- Policies: each Deployment's app id is its name and its `apps/` folder, whose app it runs,
  and its `dapr.io/` annotations are all ones the pinned sidecar injector reads;
  each app id in a Component's `scopes` is deployed; each KEDA redis-streams trigger's
  consumer group is an app that subscribes to that stream's topic (in the code and in the
  catalog) and scales that app; each probe path, and the sidecar's app health check path,
  is in the app's OpenAPI; autoscalers and Resiliency targets name deployed apps.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from consort.deploy.render import K8S_DIR
from consort.deploy.sources import Doc, Sources
from consort.dev.runtime import REPO

KUBERNETES_VERSION = "1.34.0"
CRD_DIR = REPO / "deploy" / "schemas" / "crds"
#: The `dapr.io/` annotation keys the pinned sidecar injector reads.
DAPR_ANNOTATIONS = REPO / "deploy" / "schemas" / "dapr-annotations.txt"
OPENAPI_DIR = REPO / "contracts" / "openapi"
APPS_DIR = REPO / "apps"
PRESERVE = "x-kubernetes-preserve-unknown-fields"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@dataclass(frozen=True)
class Manifest:
    """One document of a rendered file."""

    env: str
    file: str
    doc: Doc

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name"))

    def where(self) -> str:
        return f"{K8S_DIR}/{self.env}/{self.file}: {self.kind} {self.name}"


def manifests(tree: Mapping[str, str]) -> list[Manifest]:
    """The Kubernetes documents of a rendered tree (paths relative to `deploy/`); the Helm
    values under `helm/` and the Dockerfile are not manifests."""
    found: list[Manifest] = []
    for rel, text in sorted(tree.items()):
        parts = rel.split("/")
        if parts[0] != K8S_DIR or len(parts) != 3 or not rel.endswith(".yaml"):
            continue
        found += [Manifest(parts[1], parts[2], d) for d in yaml.safe_load_all(text) if d]
    return found


# -- schemas ------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its
    properties and does not keep unknown fields (an API server's strict field validation)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get(PRESERVE) and "additionalProperties" not in schema:
            out["additionalProperties"] = False
    return out


def crd_schemas(folder: Path = CRD_DIR) -> dict[tuple[str, str], Doc]:
    """Each CRD version's schema, by (apiVersion, kind)."""
    schemas: dict[tuple[str, str], Doc] = {}
    for path in sorted(folder.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return schemas


def _crd_errors(m: Manifest, schema: Doc) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{m.where()}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(m.doc), key=lambda e: list(e.absolute_path))
    ]


def _kubernetes_errors(m: Manifest) -> list[str]:
    try:
        kubernetes_validate.validate(m.doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{m.where()}: no schema for {m.doc.get('apiVersion')} in {KUBERNETES_VERSION}"]
    except kubernetes_validate.ValidationError as exc:
        # The first error only: the package stops at it.
        return [f"{m.where()}: {'/'.join(map(str, exc.absolute_path)) or '(root)'}: {exc.message}"]
    return []


def schema_errors(docs: Iterable[Manifest], crds: Mapping[tuple[str, str], Doc]) -> list[str]:
    """What does not validate: Dapr and KEDA kinds against their CRDs, the rest against
    Kubernetes' own schemas."""
    errors: list[str] = []
    for m in docs:
        key = (str(m.doc.get("apiVersion")), m.kind)
        errors += _crd_errors(m, crds[key]) if key in crds else _kubernetes_errors(m)
    return errors


# -- policies -----------------------------------------------------------------------------


def app_folders(apps_dir: Path = APPS_DIR) -> set[str]:
    """The app ids that have a folder with a `main.py` (Python) or a `Cargo.toml` (Rust)
    under `apps/`."""
    return {
        p.parent.name for pattern in ("*/main.py", "*/Cargo.toml") for p in apps_dir.glob(pattern)
    }


def openapi_paths(app_id: str, openapi_dir: Path = OPENAPI_DIR) -> set[str]:
    path = openapi_dir / f"{app_id}.json"
    return set(json.loads(path.read_text(encoding="utf-8"))["paths"]) if path.exists() else set()


def known_annotations(path: Path = DAPR_ANNOTATIONS) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _deployment_policy(m: Manifest, folders: set[str], openapi_dir: Path) -> list[str]:
    template = m.doc["spec"]["template"]
    app_id = template["metadata"]["annotations"].get("dapr.io/app-id")
    known = known_annotations()
    errors = [
        f"{m.where()}: {key} is not an annotation the Dapr sidecar injector reads"
        for key in template["metadata"]["annotations"]
        if key.startswith("dapr.io/") and key not in known
    ]
    if app_id != m.name or app_id not in folders:
        errors.append(f"{m.where()}: app id {app_id!r} is not its name and an apps/ folder")
    for container in template["spec"]["containers"]:
        command = str(container.get("command", [""])[-1])
        if not command.startswith((f"apps.{app_id}.", f"apps/{app_id}/")):
            errors.append(f"{m.where()}: {container['name']} does not serve apps/{app_id}/")
    served = openapi_paths(str(app_id), openapi_dir)
    paths = [template["metadata"]["annotations"].get("dapr.io/app-health-check-path")]
    paths += [
        c[p]["httpGet"]["path"] for c in template["spec"]["containers"] for p in PROBES if p in c
    ]
    errors += [
        f"{m.where()}: probe path {p} is not in contracts/openapi/{app_id}.json"
        for p in paths
        if p not in served
    ]
    return errors


def _scope_policy(m: Manifest, deployed: set[str]) -> list[str]:
    return [
        f"{m.where()}: scope {app!r} is not an app deployed here"
        for app in m.doc.get("scopes", [])
        if app not in deployed
    ]


def _target_policy(m: Manifest, deployed: set[str]) -> list[str]:
    """An autoscaler scales a Deployment of this environment; Resiliency targets exist."""
    if m.kind == "Resiliency":
        named = set(m.doc["spec"].get("targets", {}).get("apps", {}))
    else:
        named = {m.doc["spec"]["scaleTargetRef"]["name"]}
    return [f"{m.where()}: {app!r} is not an app deployed here" for app in sorted(named - deployed)]


def _trigger_policy(m: Manifest, sources: Sources) -> list[str]:
    target = m.doc["spec"]["scaleTargetRef"]["name"]
    catalog = {t.name: set(t.subscribers) for t in sources.topics}
    errors = []
    for trigger in m.doc["spec"]["triggers"]:
        if trigger["type"] != "redis-streams":
            continue
        group, topic = trigger["metadata"].get("consumerGroup"), trigger["metadata"]["stream"]
        if group != target:
            errors.append(f"{m.where()}: consumer group {group!r} is not the app it scales")
        if topic not in sources.subscriptions.get(str(group), ()) or group not in catalog.get(
            topic, set()
        ):
            errors.append(f"{m.where()}: {group!r} does not subscribe to {topic!r}")
    return errors


def policy_errors(
    docs: list[Manifest],
    sources: Sources,
    folders: set[str] | None = None,
    openapi_dir: Path = OPENAPI_DIR,
) -> list[str]:
    """Where the manifests break a rule Dapr relies on (module docstring)."""
    folders = app_folders() if folders is None else folders
    errors: list[str] = []
    for env in sorted({m.env for m in docs}):
        mine = [m for m in docs if m.env == env]
        deployed = {m.name for m in mine if m.kind == "Deployment"}
        for m in mine:
            if m.kind == "Deployment":
                errors += _deployment_policy(m, folders, openapi_dir)
            elif m.kind == "Component":
                errors += _scope_policy(m, deployed)
            if m.kind in ("HorizontalPodAutoscaler", "ScaledObject", "Resiliency"):
                errors += _target_policy(m, deployed)
            if m.kind == "ScaledObject":
                errors += _trigger_policy(m, sources)
    return errors
