"""The security configuration stays in step with the code: topic scopes with the topics'
contracts and the apps' subscriptions, component scopes and the access map with the app
ids of dapr.yaml; the app token guard and the run folder's secrets behave as documented."""

from __future__ import annotations

import importlib
import stat
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consort.dev.profiles import available
from consort.dev.runtime import REPO
from consort.dev.security import AccessMap, RunSecrets, app_configuration, topic_scopes
from consort.dev.system import RunFile
from consort.kit.app_token import AppTokenGuard

COMPONENTS = REPO / "components"
APPS = [a.app_id for a in RunFile.load().apps]
#: Every infrastructure profile (docs/profiles.md): each must keep the same scopes.
PROFILES = available(COMPONENTS)


def component(name: str, profile: str = "redis") -> dict:  # type: ignore[type-arg]
    """A shared file of components/, or else the profile's own."""
    path = COMPONENTS / name
    if not path.exists():
        path = COMPONENTS / profile / name
    return dict(yaml.safe_load(path.read_text()))


def metadata(doc: dict, name: str) -> str:  # type: ignore[type-arg]
    return next(str(m["value"]) for m in doc["spec"]["metadata"] if m["name"] == name)


def parse_scopes(value: str) -> dict[str, set[str]]:
    scopes: dict[str, set[str]] = {}
    for part in value.split(";"):
        app, _, topics = part.partition("=")
        scopes[app] = {t for t in topics.split(",") if t}
    return scopes


@pytest.mark.parametrize("profile", PROFILES)
def test_topic_scopes_are_the_contracts(profile: str) -> None:
    pubsub = component("pubsub.yaml", profile)
    publishing, subscription = topic_scopes(pubsub["scopes"])
    assert metadata(pubsub, "publishingScopes") == publishing
    assert metadata(pubsub, "subscriptionScopes") == subscription


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("app_id", ["gateway", "anomaly", "orchestrator"])
def test_every_declared_subscription_is_in_its_apps_scope(app_id: str, profile: str) -> None:
    pubsub = component("pubsub.yaml", profile)
    allowed = parse_scopes(metadata(pubsub, "subscriptionScopes"))[app_id]
    events = importlib.import_module(f"apps.{app_id}.events")
    topics = {s.topic for s in events.SUBSCRIPTIONS}
    assert topics and topics <= allowed, topics - allowed


@pytest.mark.parametrize("profile", PROFILES)
def test_every_scoped_app_exists_and_secrets_reach_every_user(profile: str) -> None:
    users: set[str] = set()
    for name in ("statestore.yaml", "pubsub.yaml", "secrets.yaml"):
        scopes = set(component(name, profile)["scopes"])
        assert scopes <= set(APPS), scopes - set(APPS)
        if name != "secrets.yaml":
            users |= scopes
    assert users <= set(component("secrets.yaml")["scopes"])
    assert "forecast" not in users  # it keeps no state and handles no events


def test_the_access_map_names_real_apps_and_denies_by_default(tmp_path: Path) -> None:
    access = AccessMap.load(COMPONENTS / "access-control.yaml")
    assert set(access.invoke) == set(APPS)
    for callee, callers in access.invoke.items():
        assert set(callers) <= set(APPS) - {callee}
    assert access.callers("gateway") == {}
    path = app_configuration(COMPONENTS / "config.yaml", access, "forecast", tmp_path)
    spec = yaml.safe_load(path.read_text())["spec"]
    control = spec["accessControl"]
    assert control["defaultAction"] == "deny"
    orchestrator = next(p for p in control["policies"] if p["appId"] == "orchestrator")
    assert orchestrator["defaultAction"] == "deny"
    assert orchestrator["operations"] == [
        {"name": "/v1/forecasts", "httpVerb": ["POST"], "action": "allow"}
    ]
    assert spec["tracing"]  # the rest of config.yaml is kept
    assert spec["secrets"]["scopes"][0]["defaultAccess"] == "deny"


def test_the_app_token_guard_lets_only_the_sidecar_in() -> None:
    app = FastAPI()
    app.add_middleware(AppTokenGuard, token="s3cret", public=("/v1",))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/events/x")
    def event() -> dict[str, str]:
        return {"status": "SUCCESS"}

    @app.get("/v1/thing")
    def thing() -> dict[str, str]:
        return {"thing": "public"}

    client = TestClient(app)
    refused = client.post("/events/x")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.post("/events/x", headers={"dapr-api-token": "wrong"}).status_code == 401
    assert client.post("/events/x", headers={"dapr-api-token": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/thing").status_code == 200
    assert client.get("/v1thing").status_code == 401  # a prefix is a path segment


def test_run_secrets_are_private_and_stable(tmp_path: Path) -> None:
    first = RunSecrets.in_run_dir(tmp_path)
    token = first.dapr_api_token("nlp")
    assert len(token) >= 40 and token != first.app_api_token("nlp")
    assert token != first.dapr_api_token("sentiment")
    again = RunSecrets.in_run_dir(tmp_path)
    assert again.dapr_api_token("nlp") == token
    assert again.redis_password == first.redis_password
    assert stat.S_IMODE(first.dir.stat().st_mode) == 0o700
    for path in first.dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
