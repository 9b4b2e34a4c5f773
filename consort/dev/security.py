"""What a local system is secured with: mTLS identities, tokens, the Redis password, and
each app's access-control policy.

Everything secret lives in the run folder's `secrets/` (mode 0700, files 0600), made on
first start and kept across restarts, never logged:

- `pki/`: sentry's root and issuer (sentry writes a self-signed pair when none is there);
  `pki/ca.crt` is the trust anchor every sidecar and the control plane are given.
- `<app>.dapr-api-token`: the token an app sends to its own sidecar (`DAPR_API_TOKEN`);
  the sidecar refuses its HTTP and gRPC API without it (health excepted).
- `<app>.app-api-token`: the token the sidecar sends to its app (`APP_API_TOKEN`); the
  app refuses every route without it but its health probes.
- `secrets.json`: what the `consort-secrets` store (`secretstores.local.file`) serves to
  the components: the passwords of Redis, PostgreSQL and RabbitMQ (whichever the
  profile runs, docs/profiles.md).

Rotate a secret by stopping the system, deleting its file (or `pki/` for the certificate
authority: every sidecar then gets a certificate from the new root) and starting again.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The secret store's key for the Redis password (components/redis/).
REDIS_PASSWORD_KEY = "redis-password"
#: The keys of the PostgreSQL and RabbitMQ passwords (components/postgres-rabbitmq/).
POSTGRES_PASSWORD_KEY = "postgres-password"
RABBITMQ_PASSWORD_KEY = "rabbitmq-password"
#: Every password the secret store serves, one per server a profile may run.
STORE_KEYS = (REDIS_PASSWORD_KEY, POSTGRES_PASSWORD_KEY, RABBITMQ_PASSWORD_KEY)
#: The control plane's trust domain (sentry's, placement's and scheduler's identities).
CONTROL_PLANE_TRUST_DOMAIN = "localhost"


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


@dataclass(frozen=True)
class RunSecrets:
    """The secrets of one run folder (made on first use, then reused)."""

    dir: Path

    @classmethod
    def in_run_dir(cls, run_dir: Path) -> RunSecrets:
        secrets_dir = run_dir / "secrets"
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (secrets_dir / "pki").mkdir(mode=0o700, exist_ok=True)
        made = cls(secrets_dir)
        stored = json.loads(made.store_file.read_text()) if made.store_file.exists() else {}
        missing = {k: secrets.token_urlsafe(24) for k in STORE_KEYS if k not in stored}
        if missing:  # a run folder from before a server was added keeps its passwords
            write_secret(made.store_file, json.dumps({**stored, **missing}))
        return made

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def trust_anchors_file(self) -> Path:
        """sentry's root certificate (there once sentry has started)."""
        return self.pki / "ca.crt"

    @property
    def store_file(self) -> Path:
        """The JSON file `secretstores.local.file` reads."""
        return self.dir / "secrets.json"

    def _stored(self, key: str) -> str:
        return str(json.loads(self.store_file.read_text())[key])

    @property
    def redis_password(self) -> str:
        return self._stored(REDIS_PASSWORD_KEY)

    @property
    def postgres_password(self) -> str:
        return self._stored(POSTGRES_PASSWORD_KEY)

    @property
    def rabbitmq_password(self) -> str:
        return self._stored(RABBITMQ_PASSWORD_KEY)

    def _token(self, name: str) -> str:
        path = self.dir / name
        if not path.exists():
            write_secret(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def dapr_api_token(self, app_id: str) -> str:
        """What `app_id` sends to its sidecar (shared by its replicas)."""
        return self._token(f"{app_id}.dapr-api-token")

    def app_api_token(self, app_id: str) -> str:
        """What `app_id`'s sidecar sends to it."""
        return self._token(f"{app_id}.app-api-token")

    def app_env(self, app_id: str) -> dict[str, str]:
        """The tokens in the variables daprd, the Dapr SDK and the kit read."""
        return {
            "DAPR_API_TOKEN": self.dapr_api_token(app_id),
            "APP_API_TOKEN": self.app_api_token(app_id),
        }


@dataclass(frozen=True)
class AccessMap:
    """Who may invoke whom (`components/access-control.yaml`), as Dapr policies."""

    trust_domain: str
    namespace: str
    invoke: dict[str, dict[str, list[str]]]

    @classmethod
    def load(cls, path: Path) -> AccessMap:
        raw = yaml.safe_load(path.read_text())
        return cls(
            trust_domain=str(raw.get("trustDomain", "public")),
            namespace=str(raw.get("namespace", "default")),
            invoke={
                callee: {caller: list(ops) for caller, ops in (callers or {}).items()}
                for callee, callers in (raw.get("invoke") or {}).items()
            },
        )

    def callers(self, callee: str) -> dict[str, list[str]]:
        """The apps allowed to invoke `callee` and their operations (none: unknown app)."""
        return self.invoke.get(callee, {})

    def access_control(self, callee: str) -> dict[str, Any]:
        """`callee`'s Configuration `accessControl` block: deny unless the map allows."""
        policies = []
        for caller, operations in sorted(self.callers(callee).items()):
            rules: dict[str, list[str]] = {}
            for operation in operations:
                verb, _, path = operation.partition(" ")
                rules.setdefault(path.strip().lower(), []).append(verb.upper())
            policies.append(
                {
                    "appId": caller,
                    "defaultAction": "deny",
                    "trustDomain": self.trust_domain,
                    "namespace": self.namespace,
                    "operations": [
                        {"name": path, "httpVerb": verbs, "action": "allow"}
                        for path, verbs in rules.items()
                    ],
                }
            )
        return {"defaultAction": "deny", "trustDomain": self.trust_domain, "policies": policies}


def app_configuration(base: Path, access: AccessMap, app_id: str, out_dir: Path) -> Path:
    """Write `app_id`'s Configuration: `base` (config.yaml) with its access control."""
    config = yaml.safe_load(base.read_text())
    config["spec"]["accessControl"] = access.access_control(app_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{app_id}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def topic_scopes(apps: list[str]) -> tuple[str, str]:
    """The pub/sub component's `publishingScopes` and `subscriptionScopes` for `apps`, from
    the topics' contracts: an app publishes its topics and the dead letters of the topics
    it consumes (its sidecar moves a poisoned event there); the gateway also reads every
    dead-letter topic (`/v1/ops/dead-letters`)."""
    from consort.contracts.events import TOPICS, dead_letter

    publishes: dict[str, set[str]] = {app: set() for app in apps}
    subscribes: dict[str, set[str]] = {app: set() for app in apps}
    for t in TOPICS:
        for app in t.publishers:
            publishes[app].add(t.name)
        for app in t.subscribers:
            subscribes[app].add(t.name)
            publishes[app].add(dead_letter(t.name))
        subscribes["gateway"].add(dead_letter(t.name))

    def render(scopes: dict[str, set[str]]) -> str:
        return ";".join(f"{app}={','.join(sorted(scopes[app]))}" for app in apps)

    return render(publishes), render(subscribes)
