"""A local Consort system: Redis, placement, scheduler, and each app beside its daprd.

It reads the Multi-App Run file (`dapr.yaml`) for the apps, their ports and the sidecar
settings, so `consort run` and the test harness start exactly the same thing; the harness
asks for free ports and its own run folder instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from consort.dev.processes import (
    Proc,
    StartupError,
    Supervisor,
    free_port,
    http_ok,
    port_open,
    wait_until,
)
from consort.dev.runtime import REPO, Runtime, RuntimeMissing


@dataclass(frozen=True)
class AppSpec:
    """One app and its sidecar, as the run file describes them."""

    app_id: str
    app_dir: Path
    command: list[str]
    app_port: int
    dapr_http_port: int
    dapr_grpc_port: int
    metrics_port: int
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SidecarOptions:
    """Sidecar settings every app shares (the run file's `common`)."""

    resources_paths: list[Path]
    config_path: Path
    app_protocol: str = "http"
    health_check: bool = True
    health_path: str = "/healthz"
    health_interval_s: int = 5
    health_timeout_ms: int = 500
    health_threshold: int = 3
    max_body_size: str = "4Mi"
    read_buffer_size: str = "4Ki"
    log_level: str = "info"
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InfraPorts:
    """Ports of the shared infrastructure."""

    redis: int = 16379
    placement: int = 50005
    placement_health: int = 58080
    placement_raft: int = 58201
    scheduler: int = 50006
    scheduler_health: int = 58081
    scheduler_etcd_client: int = 52379
    scheduler_etcd_peer: int = 52380
    zipkin: int = 9411

    @classmethod
    def free(cls) -> InfraPorts:
        return cls(**{f.name: free_port() for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class RunFile:
    """A parsed Multi-App Run file."""

    path: Path
    sidecar: SidecarOptions
    apps: list[AppSpec]

    @classmethod
    def load(cls, path: Path = REPO / "dapr.yaml") -> RunFile:
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        base = path.parent
        common = doc.get("common", {})
        paths = common.get("resourcesPaths") or [common.get("resourcesPath", "./components")]
        sidecar = SidecarOptions(
            resources_paths=[(base / p).resolve() for p in paths],
            config_path=(base / common["configFilePath"]).resolve(),
            app_protocol=common.get("appProtocol", "http"),
            health_check=bool(common.get("enableAppHealthCheck", True)),
            health_path=common.get("appHealthCheckPath", "/healthz"),
            health_interval_s=int(common.get("appHealthProbeInterval", 5)),
            health_timeout_ms=int(common.get("appHealthProbeTimeout", 500)),
            health_threshold=int(common.get("appHealthThreshold", 3)),
            max_body_size=str(common.get("maxBodySize", "4Mi")),
            read_buffer_size=str(common.get("readBufferSize", "4Ki")),
            log_level=common.get("logLevel", "info"),
            env={k: str(v) for k, v in (common.get("env") or {}).items()},
        )
        apps = [
            AppSpec(
                app_id=a["appID"],
                app_dir=(base / a.get("appDirPath", ".")).resolve(),
                command=list(a["command"]),
                app_port=int(a["appPort"]),
                dapr_http_port=int(a["daprHTTPPort"]),
                dapr_grpc_port=int(a["daprGRPCPort"]),
                metrics_port=int(a["metricsPort"]),
                env={k: str(v) for k, v in (a.get("env") or {}).items()},
            )
            for a in doc["apps"]
        ]
        return cls(path=path, sidecar=sidecar, apps=apps)

    def app(self, app_id: str) -> AppSpec:
        for spec in self.apps:
            if spec.app_id == app_id:
                return spec
        raise KeyError(f"no app {app_id!r} in {self.path}")

    def with_free_ports(self) -> RunFile:
        """The same apps on ports free right now (for tests beside a running system)."""
        apps = [
            dataclasses.replace(
                a,
                app_port=free_port(),
                dapr_http_port=free_port(),
                dapr_grpc_port=free_port(),
                metrics_port=free_port(),
            )
            for a in self.apps
        ]
        return dataclasses.replace(self, apps=apps)


class LocalSystem:
    """Starts and stops the processes of a local system in `run_dir`.

    Args:
        run_file: the apps and sidecar settings.
        run_dir: where logs, Redis data, scheduler data and the name-resolution file go.
        ports: the infrastructure's ports.
        runtime: the binaries (defaults to the project's pinned build).
        extra_env: added to every app's and sidecar's environment.
        tracing: start Zipkin and send every app's and sidecar's spans to it.
    """

    def __init__(
        self,
        run_file: RunFile,
        run_dir: Path,
        ports: InfraPorts | None = None,
        runtime: Runtime | None = None,
        extra_env: dict[str, str] | None = None,
        tracing: bool = True,
    ) -> None:
        self.run_file = run_file
        self.tracing = tracing
        self.run_dir = run_dir.resolve()
        self.ports = ports or InfraPorts()
        self.runtime = runtime or Runtime.locate()
        self.extra_env = extra_env or {}
        self.logs = self.run_dir / "logs"
        self.supervisor = Supervisor(pid_file=self.run_dir / "pids.json")
        if tracing and (self.runtime.zipkin_jar is None or self.runtime.java is None):
            raise RuntimeMissing(
                "tracing needs Zipkin's server and Java: run `make setup` "
                "(or turn tracing off with CONSORT_TRACING=off)"
            )

    # -- infrastructure -----------------------------------------------------------------------
    @property
    def redis_host(self) -> str:
        return f"127.0.0.1:{self.ports.redis}"

    @property
    def zipkin_url(self) -> str | None:
        """Zipkin's UI and API root, when tracing is on."""
        return f"http://127.0.0.1:{self.ports.zipkin}" if self.tracing else None

    def start_infra(self, deadline_s: float = 30) -> None:
        """Start Redis, placement and scheduler and wait until each is healthy."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checked = [
            ("redis", self.ports.redis),
            ("placement", self.ports.placement),
            ("scheduler", self.ports.scheduler),
        ]
        if self.tracing:
            checked.append(("zipkin", self.ports.zipkin))
        for name, port in checked:
            if port_open(port):
                raise RuntimeError(
                    f"port {port} for {name} is taken: is Consort already running? "
                    "(`make stop` ends it)"
                )
        redis_dir = self.run_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        p = self.ports
        zipkin = None
        if self.tracing:
            assert self.runtime.java and self.runtime.zipkin_jar
            # Started first: the JVM takes longest to come up.
            zipkin = self.supervisor.start(
                Proc(
                    "zipkin",
                    [
                        str(self.runtime.java),
                        "-Xms64m",
                        "-Xmx512m",
                        "-XX:TieredStopAtLevel=1",
                        "-XX:+UseSerialGC",
                        "-jar",
                        str(self.runtime.zipkin_jar),
                    ],
                    self.logs / "zipkin.log",
                    env={
                        "STORAGE_TYPE": "mem",
                        "MEM_MAX_SPANS": "200000",
                        "QUERY_PORT": str(p.zipkin),
                        "ARMERIA_PORTS_0_IP": "127.0.0.1",
                        "ARMERIA_PORTS_0_PORT": str(p.zipkin),
                        "COLLECTOR_SAMPLE_RATE": "1.0",
                        "JAVA_TOOL_OPTIONS": "-Djava.net.preferIPv4Stack=true",
                    },
                    ready=http_ok(f"http://127.0.0.1:{p.zipkin}/health"),
                )
            )
        redis = self.supervisor.start(
            Proc(
                "redis",
                [
                    str(self.runtime.redis_server),
                    "--port",
                    str(p.redis),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(redis_dir),
                    "--save",
                    "60 1",
                    # A SIGKILL loses at most the last second of writes (docs/operate.md).
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--protected-mode",
                    "yes",
                ],
                self.logs / "redis.log",
                ready=lambda: port_open(p.redis),
            )
        )
        placement = self.supervisor.start(
            Proc(
                "placement",
                [
                    str(self.runtime.placement),
                    "--port",
                    str(p.placement),
                    "--listen-address",
                    "127.0.0.1",
                    "--healthz-port",
                    str(p.placement_health),
                    "--healthz-listen-address",
                    "127.0.0.1",
                    "--initial-cluster",
                    f"dapr-placement-0=127.0.0.1:{p.placement_raft}",
                    "--enable-metrics=false",
                    "--log-as-json",
                ],
                self.logs / "placement.log",
                ready=http_ok(f"http://127.0.0.1:{p.placement_health}/healthz"),
            )
        )
        scheduler = self.supervisor.start(
            Proc(
                "scheduler",
                [
                    str(self.runtime.scheduler),
                    "--port",
                    str(p.scheduler),
                    "--listen-address",
                    "127.0.0.1",
                    "--healthz-port",
                    str(p.scheduler_health),
                    "--healthz-listen-address",
                    "127.0.0.1",
                    "--etcd-data-dir",
                    str(self.run_dir / "scheduler"),
                    "--etcd-client-port",
                    str(p.scheduler_etcd_client),
                    "--etcd-initial-cluster",
                    f"dapr-scheduler-server-0=http://localhost:{p.scheduler_etcd_peer}",
                    "--enable-metrics=false",
                    "--log-as-json",
                ],
                self.logs / "scheduler.log",
                ready=http_ok(f"http://127.0.0.1:{p.scheduler_health}/healthz"),
            )
        )
        wait_until("redis", lambda: port_open(p.redis), deadline_s, [redis])
        wait_until(
            "placement",
            http_ok(f"http://127.0.0.1:{p.placement_health}/healthz"),
            deadline_s,
            [placement],
        )
        wait_until(
            "scheduler",
            http_ok(f"http://127.0.0.1:{p.scheduler_health}/healthz"),
            deadline_s,
            [scheduler],
        )
        if zipkin is not None:
            wait_until("zipkin", http_ok(f"{self.zipkin_url}/health"), 90, [zipkin])

    # -- apps ---------------------------------------------------------------------------------
    def _env(self, spec: AppSpec) -> dict[str, str]:
        return {
            **self.run_file.sidecar.env,
            **spec.env,
            **self.extra_env,
            "APP_ID": spec.app_id,
            "APP_PORT": str(spec.app_port),
            "DAPR_HTTP_PORT": str(spec.dapr_http_port),
            "DAPR_GRPC_PORT": str(spec.dapr_grpc_port),
            "CONSORT_REDIS_HOST": self.redis_host,
            "CONSORT_RUN_DIR": str(self.run_dir),
            # Read by the apps' tracers and, through config.yaml, by daprd.
            "CONSORT_ZIPKIN_URL": f"{self.zipkin_url}/api/v2/spans" if self.zipkin_url else "",
            # daprd would read this when no scheduler address is given; ours always is.
            "DAPR_SCHEDULER_HOST_ADDRESS_DNS_A": "",
        }

    def _command(self, spec: AppSpec) -> list[str]:
        command = list(spec.command)
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable  # the project's virtualenv
        return command

    def daprd_argv(self, spec: AppSpec) -> list[str]:
        """The daprd command line for `spec`."""
        s = self.run_file.sidecar
        argv = [
            str(self.runtime.daprd),
            "--mode",
            "standalone",
            "--app-id",
            spec.app_id,
            "--app-port",
            str(spec.app_port),
            "--app-protocol",
            s.app_protocol,
            "--app-channel-address",
            "127.0.0.1",
            "--dapr-listen-addresses",
            "127.0.0.1",
            "--dapr-http-port",
            str(spec.dapr_http_port),
            "--dapr-grpc-port",
            str(spec.dapr_grpc_port),
            "--dapr-internal-grpc-listen-address",
            "127.0.0.1",
            "--dapr-internal-grpc-port",
            str(free_port()),
            "--metrics-port",
            str(spec.metrics_port),
            "--metrics-listen-address",
            "127.0.0.1",
            "--config",
            str(s.config_path),
            "--placement-host-address",
            f"127.0.0.1:{self.ports.placement}",
            "--scheduler-host-address",
            f"127.0.0.1:{self.ports.scheduler}",
            "--max-body-size",
            s.max_body_size,
            "--read-buffer-size",
            s.read_buffer_size,
            "--log-level",
            s.log_level,
            "--log-as-json",
        ]
        for path in s.resources_paths:
            argv += ["--resources-path", str(path)]
        if s.health_check:
            argv += [
                "--enable-app-health-check",
                "--app-health-check-path",
                s.health_path,
                "--app-health-probe-interval",
                str(s.health_interval_s),
                "--app-health-probe-timeout",
                str(s.health_timeout_ms),
                "--app-health-threshold",
                str(s.health_threshold),
            ]
        return argv

    def start_app(self, app_id: str) -> tuple[Proc, Proc]:
        """Start one app and its sidecar (without waiting)."""
        spec = self.run_file.app(app_id)
        app = self.supervisor.start(
            Proc(
                app_id,
                self._command(spec),
                self.logs / f"{app_id}.log",
                self._env(spec),
                spec.app_dir,
                group=app_id,
                ready=http_ok(f"http://127.0.0.1:{spec.app_port}/readyz", expect=(200,)),
            )
        )
        return app, self.start_sidecar(app_id)

    def start_sidecar(self, app_id: str) -> Proc:
        """Start the daprd of one app (without waiting)."""
        spec = self.run_file.app(app_id)
        return self.supervisor.start(
            Proc(
                f"{app_id}-daprd",
                self.daprd_argv(spec),
                self.logs / f"{app_id}-daprd.log",
                self._env(spec),
                self.run_dir,
                group=app_id,
                ready=http_ok(f"http://127.0.0.1:{spec.dapr_http_port}/v1.0/healthz"),
            )
        )

    def wait_app(self, app_id: str, deadline_s: float = 60) -> None:
        """Wait until the app's sidecar is healthy and the app itself is ready."""
        spec = self.run_file.app(app_id)
        app = self.supervisor.get(app_id)
        sidecar = self.supervisor.get(f"{app_id}-daprd")
        wait_until(
            f"{app_id} sidecar",
            http_ok(f"http://127.0.0.1:{spec.dapr_http_port}/v1.0/healthz"),
            deadline_s,
            [app, sidecar],
        )
        url = f"http://127.0.0.1:{spec.app_port}/readyz"

        def ready() -> bool:
            try:
                response = httpx.get(url, timeout=1.0)
            except httpx.HTTPError:
                return False
            if response.status_code == 503 and "failed to load" in response.text:
                # Waiting longer will not help: say why now.
                raise StartupError(f"{app_id}: {response.json().get('detail')}")
            return response.status_code == 200

        wait_until(f"{app_id} readiness", ready, deadline_s, [app, sidecar])

    def stop_app(self, app_id: str, *, kill: bool = False, sidecar_only: bool = False) -> None:
        """Stop (or SIGKILL) one app and its sidecar on purpose: the supervisor does not
        restart them (to see a crash restarted, signal the process itself)."""
        names = [f"{app_id}-daprd"] if sidecar_only else [app_id, f"{app_id}-daprd"]
        for name in names:
            self.supervisor.remove(name, kill=kill)

    def start(self, app_ids: list[str] | None = None, deadline_s: float = 90) -> None:
        """Start the infrastructure and the apps (all by default), and wait for all."""
        ids = app_ids or [a.app_id for a in self.run_file.apps]
        self.start_infra()
        for app_id in ids:
            self.start_app(app_id)
        for app_id in ids:
            self.wait_app(app_id, deadline_s)

    def stop(self) -> None:
        self.supervisor.stop_all()

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {p.name} ({p.log_path}) -----\n{p.tail(lines)}" for p in self.supervisor
        )

    def write_endpoints(self, app_ids: list[str]) -> Path:
        """Record where each app and sidecar listens, for tools and tests."""
        path = self.run_dir / "endpoints.json"
        endpoints = {
            "apps": {a: {"app": self.url(a), "sidecar": self.sidecar_url(a)} for a in app_ids},
            "zipkin": self.zipkin_url,
        }
        path.write_text(json.dumps(endpoints, indent=2))
        return path

    def url(self, app_id: str) -> str:
        return f"http://127.0.0.1:{self.run_file.app(app_id).app_port}"

    def sidecar_url(self, app_id: str) -> str:
        return f"http://127.0.0.1:{self.run_file.app(app_id).dapr_http_port}"


def default_run_dir() -> Path:
    return Path(os.environ.get("CONSORT_RUN_DIR_ROOT", REPO / ".run"))
