"""What the Kubernetes manifests are rendered from: the same files `make run` reads.

- `dapr.yaml`: the apps, their ports and commands, the sidecar options every app shares;
- `consort.yaml`: replicas, the drain grace, and its `kubernetes:` section (images, Redis,
  resources, how each app scales, the environments);
- `components/`: the Dapr components, Configuration and Resiliency;
- the code: the topics each app subscribes to (its `GET /dapr/subscribe`) and whether it
  keeps state (its modules call the state API, host actors or run workflows).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from consort.contracts.events import TOPICS, Topic
from consort.dev.instances import ScaleFile
from consort.dev.profiles import DEFAULT_PROFILE
from consort.dev.runtime import REPO
from consort.dev.security import AccessMap
from consort.dev.system import RunFile
from consort.governance.generate import app_targets, load_app, project_version

Doc = dict[str, Any]

SCALE_FILE = REPO / "consort.yaml"
COMPONENTS = REPO / "components"
#: The infrastructure profile the manifests carry (components/<profile>/, beside the shared
#: files of components/): Redis, as the cluster's charts in consort.yaml provide it. The
#: other profiles run locally only (docs/profiles.md).
KUBE_PROFILE = DEFAULT_PROFILE
SCALERS = ("cpu", "keda", "none")
#: Code that needs the state store: the state API, the kit's idempotent update, or the
#: actor and workflow runtimes (whose state lives in the actor state store).
STATE_USE = re.compile(r"statestore_name|\bapply_once\(|\w_state\(|register_actor|WorkflowRuntime")
#: Top-level packages of the repo an app may host code from (`from actors.x import ...`).
HOSTED = re.compile(r"^from (actors|workflows)[.\s]", re.MULTILINE)


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container."""

    cpu: str
    cpu_limit: str
    memory: str
    memory_limit: str

    @classmethod
    def of(cls, conf: Doc) -> Resources:
        return cls(
            cpu=str(conf["cpu"]),
            cpu_limit=str(conf["cpuLimit"]),
            memory=str(conf["memory"]),
            memory_limit=str(conf["memoryLimit"]),
        )

    def as_k8s(self) -> Doc:
        return {
            "requests": {"cpu": self.cpu, "memory": self.memory},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class AppPlan:
    """How one app runs on Kubernetes: its resources and how it scales."""

    app_id: str
    resources: Resources
    scale: str
    max_replicas: int
    singleton: bool

    @classmethod
    def of(cls, app_id: str, conf: Doc) -> AppPlan:
        scale = str(conf.get("scale", "none"))
        if scale not in SCALERS:
            raise ValueError(f"consort.yaml: {app_id}: scale {scale!r} is not one of {SCALERS}")
        singleton = bool(conf.get("singleton", False))
        return cls(
            app_id=app_id,
            resources=Resources.of(conf),
            scale="none" if singleton else scale,
            max_replicas=1 if singleton else int(conf.get("maxReplicas", 1)),
            singleton=singleton,
        )


@dataclass(frozen=True)
class Environment:
    """One rendered environment (`deploy/k8s/<name>/`)."""

    name: str
    replicas: int
    autoscaling: bool
    disruption_budgets: bool
    mtls: bool
    sampling_rate: str

    @classmethod
    def of(cls, name: str, conf: Doc) -> Environment:
        return cls(
            name=name,
            replicas=int(conf["replicas"]),
            autoscaling=bool(conf["autoscaling"]),
            disruption_budgets=bool(conf["disruptionBudgets"]),
            mtls=bool(conf["mtls"]),
            sampling_rate=str(conf["samplingRate"]),
        )

    def replicas_of(self, plan: AppPlan) -> int:
        return 1 if plan.singleton else self.replicas


@dataclass(frozen=True)
class Kube:
    """The `kubernetes:` section of consort.yaml."""

    namespace: str
    image: str
    redis: Doc
    zipkin: str
    sidecar: Resources
    apps: dict[str, AppPlan]
    autoscaling: Doc
    environments: dict[str, Environment]

    @property
    def redis_address(self) -> str:
        """Redis's service as any namespace resolves it (KEDA's operator runs in its own)."""
        return f"{self.redis['service']}.{self.namespace}.svc.cluster.local:{self.redis['port']}"

    @classmethod
    def of(cls, conf: Doc) -> Kube:
        return cls(
            namespace=str(conf["namespace"]),
            image=str(conf["image"]),
            redis=dict(conf["redis"]),
            zipkin=str(conf["zipkin"]),
            sidecar=Resources.of(conf["sidecar"]),
            apps={a: AppPlan.of(a, c) for a, c in conf["apps"].items()},
            autoscaling=dict(conf["autoscaling"]),
            environments={n: Environment.of(n, c) for n, c in conf["environments"].items()},
        )


@dataclass(frozen=True)
class Sources:
    """Everything a render reads, loaded once."""

    run_file: RunFile
    drain_grace_s: float
    kube: Kube
    components: dict[str, Doc]
    topics: tuple[Topic, ...]
    subscriptions: dict[str, tuple[str, ...]]
    state_users: frozenset[str]
    version: str
    access: AccessMap

    def plan(self, app_id: str) -> AppPlan:
        if app_id not in self.kube.apps:
            raise KeyError(f"consort.yaml: kubernetes.apps has no entry for {app_id!r}")
        return self.kube.apps[app_id]

    def component(self, kind: str, name: str | None = None) -> Doc:
        """The one document of `kind` (and `name`) in components/."""
        found = [
            d
            for d in self.components.values()
            if d["kind"] == kind and name in (None, d["metadata"]["name"])
        ]
        if len(found) != 1:
            raise ValueError(f"components/: expected one {kind} {name or ''}, found {len(found)}")
        return found[0]

    @property
    def app_ids(self) -> list[str]:
        return [spec.app_id for spec in self.run_file.apps]

    @property
    def pubsub_users(self) -> frozenset[str]:
        """Apps that publish or subscribe to a topic, from the catalog and the code."""
        catalog = {a for t in self.topics for a in (*t.publishers, *t.subscribers)}
        return frozenset(catalog | {a for a, topics in self.subscriptions.items() if topics})


def read_components(folder: Path = COMPONENTS, profile: str = KUBE_PROFILE) -> dict[str, Doc]:
    """Every Dapr resource in `folder` and its `profile` subfolder, by `<kind>/<name>`
    (access-control.yaml, the Consort map the per-app Configurations are made from, is read
    by `AccessMap`)."""
    docs: dict[str, Doc] = {}
    files = [*folder.glob("*.yaml"), *(folder / profile).glob("*.yaml")]
    for path in sorted(files, key=lambda f: f.name):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and "kind" in doc:
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def declared_subscriptions(target: str) -> tuple[str, ...]:
    """The topics the app `MODULE:APP` subscribes to, from its own `GET /dapr/subscribe`."""
    app = load_app(target)
    for route in app.router.routes:
        if getattr(route, "path", None) == "/dapr/subscribe":
            declared = asyncio.run(route.endpoint())  # type: ignore[attr-defined]
            return tuple(sorted({str(s["topic"]) for s in declared}))
    return ()


def app_sources(app_id: str, repo: Path = REPO) -> list[Path]:
    """The modules of `apps/<app_id>/` (Python, or Rust for an app in Rust) and the repo
    packages (actors/, workflows/) it hosts."""
    folder = repo / "apps" / app_id
    files = sorted([*folder.rglob("*.py"), *folder.rglob("*.rs")])
    hosted = {m for f in files for m in HOSTED.findall(f.read_text(encoding="utf-8"))}
    return files + [f for pkg in sorted(hosted) for f in sorted((repo / pkg).rglob("*.py"))]


def keeps_state(app_id: str, repo: Path = REPO) -> bool:
    """Whether the app's code uses the state store (directly, or as an actor/workflow host)."""
    return any(STATE_USE.search(f.read_text(encoding="utf-8")) for f in app_sources(app_id, repo))


def load_sources(
    run_file: Path = REPO / "dapr.yaml",
    scale_file: Path = SCALE_FILE,
    components: Path = COMPONENTS,
) -> Sources:
    """Read every source of the manifests."""
    conf: Doc = yaml.safe_load(scale_file.read_text(encoding="utf-8"))
    targets = app_targets(run_file)
    return Sources(
        run_file=RunFile.load(run_file, profile=KUBE_PROFILE),
        drain_grace_s=ScaleFile.load(scale_file).drain_grace_s,
        kube=Kube.of(conf["kubernetes"]),
        components=read_components(components),
        topics=TOPICS,
        subscriptions={a: declared_subscriptions(t) for a, t in targets.items()},
        state_users=frozenset(a for a in targets if keeps_state(a)),
        version=project_version(),
        access=AccessMap.load(components / "access-control.yaml"),
    )
