"""Instances of an app: how many (`consort.yaml`), their names and ports, and their rows in
the sidecars' name-resolution file.

`dapr.yaml` stays Dapr's Multi-App Run format; the number of instances of each app lives
beside it in `consort.yaml`. Instance 0 of an app keeps the run file's ports and the process
names `<app>` and `<app>-daprd`; instance `i` is named `<app>-<i>` and gets free ports.
Every instance of an app shares its app id, so service invocation, consumer groups and actor
placement treat them as one service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from consort.dev.processes import free_port

if TYPE_CHECKING:
    from consort.dev.system import AppSpec

#: The table the SQLite name resolver of components-contrib keeps its hosts in.
HOSTS_TABLE = "hosts"
#: The prefix a draining instance's row gets: no app id resolves to it any more, while its
#: sidecar keeps renewing the row (renewal matches on registration id and address only).
DRAINING_PREFIX = "draining:"


@dataclass(frozen=True)
class ScaleFile:
    """Replicas per app and the drain grace, read from `consort.yaml` beside `dapr.yaml`.

    Attributes:
        replicas: instances to start per app id (apps not named get one).
        drain_grace_s: how long a draining instance may take to finish what it holds.
    """

    replicas: dict[str, int] = dataclasses.field(default_factory=dict)
    drain_grace_s: float = 20.0

    @classmethod
    def load(cls, path: Path) -> ScaleFile:
        """Read `path`; a missing file means one instance of every app."""
        if not path.exists():
            return cls()
        doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        apps: dict[str, Any] = doc.get("apps") or {}
        replicas = {app_id: int((conf or {}).get("replicas", 1)) for app_id, conf in apps.items()}
        for app_id, n in replicas.items():
            if n < 1:
                raise ValueError(f"{path}: {app_id} needs at least one replica, not {n}")
        drain = doc.get("drain") or {}
        return cls(replicas=replicas, drain_grace_s=float(drain.get("graceSeconds", 20)))

    def of(self, app_id: str) -> int:
        return self.replicas.get(app_id, 1)


def parse_scale(arg: str) -> tuple[str, int]:
    """`nlp=2` as ("nlp", 2), for `consort scale`."""
    app_id, sep, n = arg.partition("=")
    if not sep or not app_id or not n.isdigit() or int(n) < 1:
        raise ValueError(f"expected <app>=<replicas> with replicas >= 1, not {arg!r}")
    return app_id, int(n)


def instance_name(app_id: str, index: int) -> str:
    """`nlp` for instance 0 (the run file's ports and names), `nlp-<index>` for others."""
    return app_id if index == 0 else f"{app_id}-{index}"


@dataclass(frozen=True)
class Instance:
    """One running copy of an app: its ports (in `spec`) and its sidecar's internal port.

    Attributes:
        app_id: the app id it shares with its siblings.
        index: 0 for the run file's ports, then 1, 2, …
        spec: the app's spec with this instance's ports (an `AppSpec`).
        internal_grpc_port: where its sidecar takes calls from other sidecars; its address
            in name resolution is `127.0.0.1:<this port>`.
        env: added to this instance's environment (a rollout's overrides).
    """

    app_id: str
    index: int
    spec: AppSpec
    internal_grpc_port: int
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return instance_name(self.app_id, self.index)

    @property
    def sidecar_name(self) -> str:
        return f"{self.name}-daprd"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.internal_grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.app_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.dapr_http_port}"

    @classmethod
    def of(cls, spec: AppSpec, index: int, env: dict[str, str] | None = None) -> Instance:
        """Instance `index` of the app `spec` describes: 0 keeps its ports, others get free ones."""
        if index > 0:
            spec = dataclasses.replace(
                spec,
                app_port=free_port(),
                dapr_http_port=free_port(),
                dapr_grpc_port=free_port(),
                metrics_port=free_port(),
            )
        return cls(spec.app_id, index, spec, free_port(), dict(env or {}))


class NameRegistry:
    """The sidecars' SQLite name-resolution file, as the launcher needs it.

    Each sidecar registers one row (its app id and internal address) and renews it every
    second; resolution picks a fresh row of the app id at random. A killed sidecar's row
    would resolve for up to `updateInterval` more; the launcher removes it at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5, isolation_level=None)

    def addresses(self, app_id: str) -> list[str]:
        """The addresses registered for `app_id` (fresh or not)."""
        if not self.path.exists():
            return []
        with contextlib.closing(self._connect()) as db:
            try:
                rows = db.execute(
                    f"SELECT address FROM {HOSTS_TABLE} WHERE app_id = ?", (app_id,)
                ).fetchall()
            except sqlite3.OperationalError:  # no sidecar has created the table yet
                return []
        return sorted(r[0] for r in rows)

    def withdraw(self, address: str) -> bool:
        """Stop `address` resolving while its sidecar lives on (renewals still match).
        Returns whether a row of that address was there to withdraw."""
        return self._execute(
            f"UPDATE {HOSTS_TABLE} SET app_id = ? || app_id "
            "WHERE address = ? AND app_id NOT LIKE ?",
            (DRAINING_PREFIX, address, f"{DRAINING_PREFIX}%"),
        )

    def admit(self, address: str) -> bool:
        """Let a withdrawn `address` resolve again (its instance is ready)."""
        return self._execute(
            f"UPDATE {HOSTS_TABLE} SET app_id = substr(app_id, ?) "
            "WHERE address = ? AND app_id LIKE ?",
            (len(DRAINING_PREFIX) + 1, address, f"{DRAINING_PREFIX}%"),
        )

    def hold(self, address: str, until: threading.Event, deadline_s: float = 180) -> None:
        """Withdraw `address` as soon as its sidecar registers it (a sidecar registers
        before it listens and before its app is ready), unless `until` is set first."""
        end = time.monotonic() + deadline_s
        while not until.is_set() and time.monotonic() < end:
            try:
                if self.withdraw(address):
                    return
            except sqlite3.OperationalError:
                pass  # the file or its table is being created by the first sidecar
            until.wait(0.01)

    def remove(self, address: str) -> None:
        """Delete the row of `address` (its sidecar is gone)."""
        self._execute(f"DELETE FROM {HOSTS_TABLE} WHERE address = ?", (address,))

    def _execute(self, sql: str, params: tuple[object, ...]) -> bool:
        if not self.path.exists():
            return False
        with contextlib.closing(self._connect()) as db:
            return db.execute(sql, params).rowcount > 0
