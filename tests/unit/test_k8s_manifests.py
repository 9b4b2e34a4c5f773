"""The Kubernetes deployment (deploy/): generated from the run sources, committed in step,
valid against the pinned Kubernetes, Dapr and KEDA schemas, and true to Dapr's rules; and
each check fails on a deliberate break."""

from __future__ import annotations

import copy
import json
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from consort.deploy.render import K8S_DIR, mebibytes, render_environment
from consort.deploy.sources import Doc, Sources, load_sources
from consort.deploy.tree import (
    check_tree,
    find_deploy_drift,
    hadolint,
    read_deploy,
    render_deploy,
    write_deploy,
)
from consort.deploy.validate import (
    KUBERNETES_VERSION,
    Manifest,
    crd_schemas,
    manifests,
    policy_errors,
    schema_errors,
)
from consort.dev import cli
from consort.dev.cli import APP_HOST_ENV
from consort.dev.runtime import REPO
from consort.governance.drift import drift_lines

pytestmark = pytest.mark.unit

APPS = {"gateway", "sentiment", "nlp", "vision", "forecast", "anomaly", "recommender"}
APPS |= {"orchestrator", "search"}


@pytest.fixture(scope="module")
def sources() -> Sources:
    return load_sources()


@pytest.fixture(scope="module")
def tree(sources: Sources) -> dict[str, str]:
    return render_deploy(sources)


@pytest.fixture(scope="module")
def docs(tree: dict[str, str]) -> list[Manifest]:
    return manifests(tree)


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], Doc]:
    return crd_schemas()


def _one(docs: list[Manifest], env: str, kind: str, name: str) -> Manifest:
    [found] = [m for m in docs if (m.env, m.kind, m.name) == (env, kind, name)]
    return found


def _broken(
    docs: list[Manifest], env: str, kind: str, name: str, edit: Callable[[Doc], None]
) -> list[Manifest]:
    """`docs` with one manifest edited (a copy; the fixtures stay as rendered)."""
    target = _one(docs, env, kind, name)
    changed = copy.deepcopy(target.doc)
    edit(changed)
    return [Manifest(m.env, m.file, changed) if m is target else m for m in docs]


# -- in step, valid, true to the rules ------------------------------------------------------


def test_committed_deploy_matches_the_generator(tree: dict[str, str]) -> None:
    drift = find_deploy_drift(tree)
    assert not drift, "run `make k8s` and commit deploy/:\n" + "\n".join(drift_lines(drift))


def test_every_manifest_validates_against_the_pinned_schemas(
    docs: list[Manifest], crds: dict[tuple[str, str], Doc]
) -> None:
    kinds = {m.kind for m in docs}
    assert {"Deployment", "Component", "Configuration", "Resiliency", "ScaledObject"} <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "TriggerAuthentication"} <= kinds
    assert KUBERNETES_VERSION.startswith("1.")
    assert schema_errors(docs, crds) == []


def test_policies_hold_and_the_dockerfile_lints_clean(
    tree: dict[str, str], sources: Sources
) -> None:
    assert check_tree(tree, sources) == []


def test_each_environment_deploys_every_app_once(docs: list[Manifest]) -> None:
    for env in ("dev", "prod"):
        deployed = [m.name for m in docs if m.env == env and m.kind == "Deployment"]
        assert sorted(deployed) == sorted(APPS)


def test_dev_runs_one_replica_without_autoscalers_or_budgets(docs: list[Manifest]) -> None:
    dev = [m for m in docs if m.env == "dev"]
    assert {m.doc["spec"]["replicas"] for m in dev if m.kind == "Deployment"} == {1}
    kinds = {m.kind for m in dev}
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"}


def test_prod_keeps_two_replicas_or_more_but_the_single_writer(docs: list[Manifest]) -> None:
    prod = [m for m in docs if m.env == "prod"]
    floor = {m.name: m.doc["spec"].get("replicas") for m in prod if m.kind == "Deployment"}
    for m in prod:
        if m.kind == "HorizontalPodAutoscaler":
            floor[m.name] = m.doc["spec"]["minReplicas"]
        elif m.kind == "ScaledObject":
            floor[m.name] = m.doc["spec"]["minReplicaCount"]
    assert floor.pop("recommender") == 1  # one journal writer (docs/operate.md)
    assert min(floor.values()) >= 2
    assert {m.name for m in prod if m.kind == "PodDisruptionBudget"} == APPS
    recommender = _one(docs, "prod", "Deployment", "recommender").doc
    assert recommender["spec"]["strategy"] == {"type": "Recreate"}


def test_autoscalers_trigger_on_cpu_or_on_the_topics_each_app_consumes(
    docs: list[Manifest],
) -> None:
    prod = [m for m in docs if m.env == "prod"]
    hpa = {m.name for m in prod if m.kind == "HorizontalPodAutoscaler"}
    assert hpa == {"gateway", "vision", "forecast"}
    streams = {
        m.name: sorted(
            (t["metadata"]["stream"], t["metadata"]["consumerGroup"])
            for t in m.doc["spec"]["triggers"]
            if t["type"] == "redis-streams"
        )
        for m in prod
        if m.kind == "ScaledObject"
    }
    assert streams == {
        "sentiment": [("reviews.submitted", "sentiment")],
        "nlp": [("reviews.submitted", "nlp")],
        "anomaly": [("metrics.observed", "anomaly")],
        "orchestrator": [("anomalies.detected", "orchestrator")],
        "search": [("reviews.submitted", "search")],
    }
    for m in prod:
        if m.kind == "ScaledObject":
            assert "cpu" in [t["type"] for t in m.doc["spec"]["triggers"]]


def test_component_scopes_name_only_the_apps_that_use_them(docs: list[Manifest]) -> None:
    state = _one(docs, "prod", "Component", "statestore").doc
    pubsub = _one(docs, "prod", "Component", "pubsub").doc
    assert state["scopes"] == [
        "anomaly",
        "gateway",
        "orchestrator",
        "recommender",
        "search",
        "sentiment",
    ]
    assert "forecast" not in pubsub["scopes"] and "nlp" in pubsub["scopes"]
    password = [i for i in state["spec"]["metadata"] if i["name"] == "redisPassword"]
    assert password == [
        {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "redis-password"}}
    ]


def test_the_sidecar_gets_what_consort_run_gives_it(docs: list[Manifest], sources: Sources) -> None:
    pod = _one(docs, "prod", "Deployment", "vision").doc["spec"]["template"]
    notes = pod["metadata"]["annotations"]
    assert notes["dapr.io/max-body-size"] == sources.run_file.sidecar.max_body_size == "5Mi"
    assert notes["dapr.io/http-max-request-size"] == "5"
    assert notes["dapr.io/app-port"] == str(sources.run_file.app("vision").app_port)
    assert notes["dapr.io/app-health-check-path"] == "/healthz"
    assert pod["spec"]["terminationGracePeriodSeconds"] > sources.drain_grace_s
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["CONSORT_APP_HOST"] == "0.0.0.0"
    assert env["CONSORT_SHUTDOWN_GRACE_S"] == str(int(sources.drain_grace_s))


def test_configuration_drops_the_local_name_resolver(docs: list[Manifest]) -> None:
    for env, rate in (("dev", "1"), ("prod", "0.1")):
        spec = _one(docs, env, "Configuration", "consort-sentiment").doc["spec"]
        assert "nameResolution" not in spec
        assert spec["tracing"]["samplingRate"] == rate


def test_each_app_has_its_access_policy_and_token_secrets(docs: list[Manifest]) -> None:
    """The same default-deny policy as locally (components/access-control.yaml), in the
    cluster's namespace; the tokens from each app's own Secrets."""
    for env in ("dev", "prod"):
        forecast = _one(docs, env, "Configuration", "consort-forecast").doc["spec"]
        control = forecast["accessControl"]
        assert control["defaultAction"] == "deny"
        callers = {p["appId"]: p for p in control["policies"]}
        assert set(callers) == {"gateway", "orchestrator"}
        assert callers["orchestrator"]["namespace"] == forecast_namespace(docs, env)
        gateway = _one(docs, env, "Configuration", "consort-gateway").doc["spec"]
        assert gateway["accessControl"]["policies"] == []  # nothing calls it through Dapr
        pod = _one(docs, env, "Deployment", "forecast").doc["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["dapr.io/config"] == "consort-forecast"
        assert annotations["dapr.io/api-token-secret"] == "forecast-dapr-api-token"
        env_vars = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        ref = env_vars["APP_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "forecast-app-api-token", "key": "token"}


def forecast_namespace(docs: list[Manifest], env: str) -> str:
    return str(_one(docs, env, "Deployment", "forecast").doc["metadata"]["namespace"])


def test_only_vision_bakes_the_model_cache_in(tree: dict[str, str]) -> None:
    targets = tree["Dockerfile"].split("\nFROM runtime AS ")[1:]
    baked = {t.split("\n", 1)[0] for t in targets if "COPY --from=models" in t}
    assert baked == {"vision"}
    assert "uv sync --frozen --no-dev" in tree["Dockerfile"]


# -- deliberate breaks ----------------------------------------------------------------------


def test_a_scope_naming_an_app_that_does_not_exist_fails(
    docs: list[Manifest], sources: Sources
) -> None:
    broken = _broken(docs, "prod", "Component", "pubsub", lambda d: d["scopes"].append("sentimnet"))
    errors = policy_errors(broken, sources)
    assert errors == [
        "k8s/prod/dapr-components.yaml: Component pubsub: "
        "scope 'sentimnet' is not an app deployed here"
    ]


def test_a_probe_path_the_app_does_not_serve_fails(docs: list[Manifest], sources: Sources) -> None:
    def edit(d: Doc) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = (
            "/ready"
        )

    errors = policy_errors(_broken(docs, "dev", "Deployment", "nlp", edit), sources)
    assert errors == [
        "k8s/dev/nlp.yaml: Deployment nlp: probe path /ready is not in contracts/openapi/nlp.json"
    ]


def test_a_consumer_group_that_does_not_subscribe_to_the_stream_fails(
    docs: list[Manifest], sources: Sources
) -> None:
    def edit(d: Doc) -> None:
        d["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "vision"

    errors = policy_errors(_broken(docs, "prod", "ScaledObject", "nlp", edit), sources)
    assert errors == [
        "k8s/prod/nlp.yaml: ScaledObject nlp: consumer group 'vision' is not the app it scales",
        "k8s/prod/nlp.yaml: ScaledObject nlp: 'vision' does not subscribe to 'reviews.submitted'",
    ]


def test_an_app_id_that_is_not_its_folder_fails(docs: list[Manifest], sources: Sources) -> None:
    def edit(d: Doc) -> None:
        d["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-id"] = "language"

    errors = policy_errors(_broken(docs, "prod", "Deployment", "nlp", edit), sources)
    assert errors[0] == (
        "k8s/prod/nlp.yaml: Deployment nlp: app id 'language' is not its name and an apps/ folder"
    )


@pytest.mark.parametrize(
    ("kind", "name", "edit", "expected"),
    [
        (
            "Deployment",
            "gateway",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(portz=[]),
            "spec/template/spec/containers/0: Additional properties are not allowed",
        ),
        (
            "ScaledObject",
            "anomaly",
            lambda d: d["spec"].update(maxReplicaCount="four"),
            "spec/maxReplicaCount: 'four' is not of type 'integer'",
        ),
        (
            "Component",
            "statestore",
            lambda d: d["spec"].pop("type"),
            "spec: 'type' is a required property",
        ),
        (
            "Resiliency",
            "consort",
            lambda d: d["spec"]["policies"].update(timeout={}),
            "spec/policies: Additional properties are not allowed ('timeout' was unexpected)",
        ),
    ],
)
def test_a_manifest_off_its_schema_fails(
    docs: list[Manifest],
    crds: dict[tuple[str, str], Doc],
    kind: str,
    name: str,
    edit: Callable[[Doc], None],
    expected: str,
) -> None:
    broken = _broken(docs, "prod", kind, name, edit)
    errors = schema_errors(broken, crds)
    assert len(errors) == 1 and expected in errors[0], errors


def test_an_edited_or_stale_committed_file_is_drift(tree: dict[str, str], tmp_path: Path) -> None:
    write_deploy(tree, tmp_path)
    assert read_deploy(tmp_path) == tree
    edited = tmp_path / K8S_DIR / "prod" / "nlp.yaml"
    edited.write_text(edited.read_text().replace("maxReplicaCount: 6", "maxReplicaCount: 9"))
    (tmp_path / K8S_DIR / "prod" / "old.yaml").write_text("kind: Service\n")
    drift = find_deploy_drift(tree, tmp_path)
    assert [(d.path, d.problem) for d in drift] == [
        ("k8s/prod/nlp.yaml", "differs from the generated file"),
        ("k8s/prod/old.yaml", "not generated any more (stale)"),
    ]
    assert "-  maxReplicaCount: 9" in drift[0].diff


def test_the_dockerfile_linter_runs_and_reports() -> None:
    findings = hadolint("FROM python\nRUN pip install uv\n")
    assert any("DL3006" in f for f in findings), findings  # an untagged base image
    assert any("DL3013" in f for f in findings), findings  # an unpinned pip install


def test_an_app_that_scales_on_events_without_subscriptions_is_refused(
    sources: Sources,
) -> None:
    plans = {**sources.kube.apps, "forecast": replace(sources.kube.apps["forecast"], scale="keda")}
    changed = replace(sources, kube=replace(sources.kube, apps=plans))
    with pytest.raises(ValueError, match="forecast scales on events but subscribes to none"):
        render_environment(changed, sources.kube.environments["prod"])


def test_memory_requests_cover_what_each_process_was_measured_to_hold(sources: Sources) -> None:
    measured = json.loads((REPO / "bench" / "results" / "footprint.json").read_text())
    held = {name: p["rss_mib"] for name, p in measured["processes"].items()}
    short = {
        app: (plan.resources.memory, held[app])
        for app, plan in sources.kube.apps.items()
        if mebibytes(plan.resources.memory) < held[app]
    }
    assert not short, f"requests below the measured RSS (MiB): {short}"
    sidecar = max(v for k, v in held.items() if k.endswith("-daprd"))
    assert mebibytes(sources.kube.sidecar.memory) >= sidecar
    for app, plan in sources.kube.apps.items():
        assert mebibytes(plan.resources.memory_limit) >= 2 * held[app] * 0.9, app


@pytest.mark.parametrize(
    ("env", "host"), [({}, "127.0.0.1"), ({APP_HOST_ENV: "0.0.0.0"}, "0.0.0.0")]
)
def test_consort_serve_binds_loopback_unless_the_pod_asks_for_every_address(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], host: str
) -> None:
    import uvicorn

    bound: list[tuple[str, int]] = []
    monkeypatch.delenv(APP_HOST_ENV, raising=False)
    for key, value in {**env, "APP_PORT": "19399"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # leave pytest's handlers alone
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda s: bound.append((s.config.host, s.config.port))
    )
    assert cli.main(["serve", "apps.sentiment.main:app"]) == 0
    assert bound == [(host, 19399)]


def test_an_autoscaler_or_resiliency_target_naming_no_deployed_app_fails(
    docs: list[Manifest], sources: Sources
) -> None:
    def retarget(d: Doc) -> None:
        d["spec"]["scaleTargetRef"]["name"] = "visio"

    def extra_target(d: Doc) -> None:
        d["spec"]["targets"]["apps"]["translator"] = {"timeout": "aiCall"}

    broken = _broken(docs, "prod", "HorizontalPodAutoscaler", "vision", retarget)
    broken = _broken(broken, "dev", "Resiliency", "consort", extra_target)
    assert policy_errors(broken, sources) == [
        "k8s/dev/dapr-resiliency.yaml: Resiliency consort: "
        "'translator' is not an app deployed here",
        "k8s/prod/vision.yaml: HorizontalPodAutoscaler vision: 'visio' is not an app deployed here",
    ]


def test_a_deployment_running_another_apps_code_fails(
    docs: list[Manifest], sources: Sources
) -> None:
    def edit(d: Doc) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["command"][-1] = "apps.nlp.main:app"

    assert policy_errors(_broken(docs, "prod", "Deployment", "sentiment", edit), sources) == [
        "k8s/prod/sentiment.yaml: Deployment sentiment: app does not serve apps/sentiment/"
    ]


def test_a_mistyped_dapr_annotation_fails(docs: list[Manifest], sources: Sources) -> None:
    def edit(d: Doc) -> None:
        d["spec"]["template"]["metadata"]["annotations"]["dapr.io/max-body-sise"] = "5Mi"

    assert policy_errors(_broken(docs, "dev", "Deployment", "vision", edit), sources) == [
        "k8s/dev/vision.yaml: Deployment vision: "
        "dapr.io/max-body-sise is not an annotation the Dapr sidecar injector reads"
    ]
