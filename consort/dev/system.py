"""A local Consort system: the profile's servers (Redis by default), placement, scheduler,
and each app beside its daprd.

It reads the Multi-App Run file (`dapr.yaml`) for the apps, their ports and the sidecar
settings, so `consort run` and the test harness start exactly the same thing; the harness
asks for free ports and its own run folder instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from consort.dev import profiles, servers
from consort.dev.control import ControlServer
from consort.dev.instances import Instance, NameRegistry, ScaleFile
from consort.dev.processes import (
    READY,
    STARTING,
    Proc,
    StartupError,
    Supervisor,
    free_port,
    http_ok,
    loopback_client,
    port_open,
    wait_until,
)
from consort.dev.runtime import REPO, Runtime, RuntimeMissing
from consort.dev.security import (
    CONTROL_PLANE_TRUST_DOMAIN,
    AccessMap,
    RunSecrets,
    app_configuration,
)
from consort.kit.keys import dev_key


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
    postgres: int = 15432
    rabbitmq: int = 15673
    rabbitmq_dist: int = 15674
    epmd: int = 15675
    placement: int = 50005
    placement_health: int = 58080
    placement_raft: int = 58201
    scheduler: int = 50006
    scheduler_health: int = 58081
    scheduler_etcd_client: int = 52379
    scheduler_etcd_peer: int = 52380
    zipkin: int = 9411
    sentry: int = 50003
    sentry_health: int = 58082

    @classmethod
    def free(cls) -> InfraPorts:
        return cls(**{f.name: free_port() for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class RunFile:
    """A parsed Multi-App Run file, with the infrastructure profile it runs on."""

    path: Path
    sidecar: SidecarOptions
    apps: list[AppSpec]
    profile: str = profiles.DEFAULT_PROFILE

    @classmethod
    def load(cls, path: Path = REPO / "dapr.yaml", profile: str | None = None) -> RunFile:
        """Read the run file; its profile folder becomes `profile` (default: the
        `CONSORT_PROFILE` environment variable, else `redis`; docs/profiles.md)."""
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        base = path.parent
        common = doc.get("common", {})
        paths = common.get("resourcesPaths") or [common.get("resourcesPath", "./components")]
        sidecar = SidecarOptions(
            resources_paths=profiles.resolve([(base / p).resolve() for p in paths], profile),
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
        return cls(path=path, sidecar=sidecar, apps=apps, profile=profiles.selected(profile))

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
        run_dir: where logs, the servers' data, scheduler data and the name-resolution
            file go.
        ports: the infrastructure's ports.
        runtime: the binaries (defaults to the project's pinned build).
        extra_env: added to every app's and sidecar's environment.
        tracing: start Zipkin and send every app's and sidecar's spans to it.
        scale_file: replicas per app and the drain grace (default: `consort.yaml` beside
            the run file, or one instance each).
        secure: mTLS between sidecars (sentry), API tokens on every sidecar and app, and
            each app's access-control policy (docs/security.md). Off only to measure what
            it costs per hop; the servers keep their passwords either way (the components
            name them).
    """

    def __init__(
        self,
        run_file: RunFile,
        run_dir: Path,
        ports: InfraPorts | None = None,
        runtime: Runtime | None = None,
        extra_env: dict[str, str] | None = None,
        tracing: bool = True,
        scale_file: ScaleFile | None = None,
        secure: bool = True,
    ) -> None:
        self.run_file = run_file
        self.secure = secure
        self.tracing = tracing
        self.run_dir = run_dir.resolve()
        self.ports = ports or InfraPorts()
        self.runtime = runtime or Runtime.locate()
        self.extra_env = extra_env or {}
        self.logs = self.run_dir / "logs"
        self.supervisor = Supervisor(pid_file=self.run_dir / "pids.json")
        self.scale_file = scale_file or ScaleFile.load(run_file.path.parent / "consort.yaml")
        #: The running instances of each app, instance 0 (the run file's ports) first.
        self.instances: dict[str, list[Instance]] = {}
        #: Environment overrides per app from rollouts, applied to every later instance.
        self.app_env: dict[str, dict[str, str]] = {}
        #: Processes stopped on purpose (drained, stopped), kept for their log tails.
        self.retired: list[Proc] = []
        self.registry = NameRegistry(self.run_dir / "nameresolution.db")
        self.secrets = RunSecrets.in_run_dir(self.run_dir)
        self.access = AccessMap.load(self._resource("access-control.yaml"))
        #: The servers the profile's components need (`redis`, `postgres`, `rabbitmq`).
        self.servers = profiles.servers(run_file.sidecar.resources_paths)
        self._changing = threading.RLock()  # one scale or rollout at a time
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._api_key: str | None = None
        self.supervisor.on_restart = self._restarting
        #: The control channel (`<run_dir>/control.json`): `consort status` reads its
        #: processes, the gateway's console its instances; `consort run` adds scale and
        #: rollout routes.
        self.control = ControlServer(self.run_dir, lambda: {"processes": self.supervisor.status()})
        self.control.route("GET", "/instances", lambda _: (200, self.instance_status()))
        if tracing and (self.runtime.zipkin_jar is None or self.runtime.java is None):
            raise RuntimeMissing(
                "tracing needs Zipkin's server and Java: run `make setup` "
                "(or turn tracing off with CONSORT_TRACING=off)"
            )

    # -- the gateway's API key -----------------------------------------------------------------
    def ensure_api_key(self) -> str:
        """The run folder's development key (every scope): the one in `<run_dir>/dev-key`,
        or a new one; the gateways read the keys file beside it."""
        if self._api_key is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._api_key = dev_key(self.run_dir)
        return self._api_key

    @property
    def api_key(self) -> str:
        return self.ensure_api_key()

    @property
    def api_headers(self) -> dict[str, str]:
        """The headers a client of the gateway sends: the development key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    # -- infrastructure -----------------------------------------------------------------------
    @property
    def redis_host(self) -> str:
        return f"127.0.0.1:{self.ports.redis}"

    @property
    def profile(self) -> str:
        """The infrastructure profile (docs/profiles.md)."""
        return self.run_file.profile

    def server_ports(self) -> dict[str, int]:
        """The client port of each server of the profile."""
        return {name: getattr(self.ports, name) for name in self.servers}

    def _server_env(self) -> dict[str, str]:
        """Where the components find the servers (their `envRef`s)."""
        p = self.ports
        return {
            "CONSORT_REDIS_HOST": self.redis_host,
            "CONSORT_POSTGRES_HOST": "127.0.0.1",
            "CONSORT_POSTGRES_PORT": str(p.postgres),
            "CONSORT_RABBITMQ_HOST": f"127.0.0.1:{p.rabbitmq}",
        }

    @property
    def zipkin_url(self) -> str | None:
        """Zipkin's UI and API root, when tracing is on."""
        return f"http://127.0.0.1:{self.ports.zipkin}" if self.tracing else None

    def start_infra(self, deadline_s: float = 30) -> None:
        """Start the profile's servers, placement and scheduler (and Zipkin) and wait until
        each is healthy."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checked = [
            ("sentry", self.ports.sentry),
            *self.server_ports().items(),
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
        # Zipkin first: the JVM takes longest to come up.
        procs = [self._zipkin()] if self.tracing else []
        if "rabbitmq" in self.servers:
            # The broker's node registers with its port mapper as it boots.
            epmd = self.supervisor.start(servers.epmd(self.ports.epmd, self.logs / "epmd.log"))
            assert epmd.ready is not None
            wait_until(epmd.name, epmd.ready, deadline_s, [epmd])
        if self.secure:
            if not self.secrets.trust_anchors_file.exists():
                self._write_pki(deadline_s)
            # The certificate authority first: placement and scheduler ask it for theirs.
            sentry = self.supervisor.start(self._sentry())
            assert sentry.ready is not None
            wait_until(sentry.name, sentry.ready, deadline_s, [sentry])
        procs += [*self._servers(), self._placement(), self._scheduler()]
        for proc in procs:
            self.supervisor.start(proc)
        slow = ("zipkin", "rabbitmq", "postgres")  # a JVM, an Erlang node, a first initdb
        for proc in procs:
            assert proc.ready is not None
            wait_until(proc.name, proc.ready, 90 if proc.name in slow else deadline_s, [proc])

    def _servers(self) -> list[Proc]:
        """The processes of the profile's servers."""
        p = self.ports
        made: list[Proc] = []
        if "redis" in self.servers:
            (self.run_dir / "redis").mkdir(exist_ok=True)
            made.append(self._redis())
        if "postgres" in self.servers:
            made.append(
                servers.postgres(self.run_dir, p.postgres, self.secrets, self.logs / "postgres.log")
            )
        if "rabbitmq" in self.servers:
            made.append(
                servers.rabbitmq(
                    self.run_dir,
                    p.rabbitmq,
                    p.rabbitmq_dist,
                    p.epmd,
                    self.secrets,
                    self.logs / "rabbitmq.log",
                )
            )
        return made

    def _resource(self, name: str) -> Path:
        """`name` in the first of the sidecars' resources paths that has it."""
        paths = self.run_file.sidecar.resources_paths
        return next((d / name for d in paths if (d / name).exists()), paths[0] / name)

    def _write_pki(self, deadline_s: float) -> None:
        """Have sentry write the root and issuer of a fresh run folder, then stop it.

        A sentry that writes them watches them too: each file it wrote comes back to it
        as a change, and it restarts its gRPC server for each, 2 s apart, for several
        seconds. A sidecar that asks for its identity in one of those gaps is refused and
        exits (daprd does not retry its first identity). Started again on the written
        files, sentry writes nothing and never restarts.
        """
        writer = self._sentry()
        writer.start()
        try:
            wait_until(
                "sentry writing the root and issuer",
                lambda: (
                    self.secrets.trust_anchors_file.exists()
                    and bool(writer.ready and writer.ready())
                ),
                deadline_s,
                [writer],
            )
        finally:
            writer.stop()

    def _sentry(self) -> Proc:
        p = self.ports
        return Proc(
            "sentry",
            [
                str(self.runtime.sentry),
                "--mode",
                "standalone",
                "--config",
                str(self._resource("sentry.yaml")),
                # Its root and issuer: written (self-signed) on first start, then kept.
                "--issuer-credentials",
                str(self.secrets.pki),
                "--trust-domain",
                CONTROL_PLANE_TRUST_DOMAIN,
                "--port",
                str(p.sentry),
                "--listen-address",
                "127.0.0.1",
                "--healthz-port",
                str(p.sentry_health),
                "--healthz-listen-address",
                "127.0.0.1",
                "--enable-metrics=false",
                "--log-as-json",
            ],
            self.logs / "sentry.log",
            ready=http_ok(f"http://127.0.0.1:{p.sentry_health}/healthz"),
        )

    def _control_plane_tls(self) -> list[str]:
        """Flags of placement and scheduler: serve mTLS with an identity from sentry."""
        if not self.secure:
            return []
        return [
            "--tls-enabled=true",
            "--sentry-address",
            f"127.0.0.1:{self.ports.sentry}",
            "--trust-anchors-file",
            str(self.secrets.trust_anchors_file),
            "--trust-domain",
            CONTROL_PLANE_TRUST_DOMAIN,
        ]

    def _zipkin(self) -> Proc:
        assert self.runtime.java and self.runtime.zipkin_jar
        p = self.ports
        return Proc(
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

    def _redis(self) -> Proc:
        p = self.ports
        redis_dir = self.run_dir / "redis"
        return Proc(
            "redis",
            [
                str(self.runtime.redis_server),
                *self._redis_auth(),
                "--port",
                str(p.redis),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--save",
                "60 1",
                # Every write reaches the kernel at once, fsync each second: a SIGKILL of Redis
                # loses nothing, a crash of the machine about a second (docs/operate.md).
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

    def _redis_auth(self) -> list[str]:
        """A config file naming the password (on the command line it would show in `ps`)."""
        conf = self.secrets.dir / "redis.conf"
        if not conf.exists():
            conf.touch(mode=0o600)
            conf.write_text(f"requirepass {self.secrets.redis_password}\n")
        return [str(conf)]

    def _placement(self) -> Proc:
        p = self.ports
        return Proc(
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
                *self._control_plane_tls(),
            ],
            self.logs / "placement.log",
            ready=http_ok(f"http://127.0.0.1:{p.placement_health}/healthz"),
        )

    def _scheduler(self) -> Proc:
        p = self.ports
        return Proc(
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
                # Its identity files stay in this run folder, not in a shared /tmp path.
                "--identity-directory-write",
                str(self.run_dir / "scheduler-identity"),
                *self._control_plane_tls(),
            ],
            self.logs / "scheduler.log",
            ready=http_ok(f"http://127.0.0.1:{p.scheduler_health}/healthz"),
        )

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
            **self._server_env(),
            "CONSORT_RUN_DIR": str(self.run_dir),
            # How long an app may take to finish what it holds once told to stop (a drain).
            "CONSORT_SHUTDOWN_GRACE_S": f"{self.scale_file.drain_grace_s:g}",
            # Read by the apps' tracers and, through config.yaml, by daprd.
            "CONSORT_ZIPKIN_URL": f"{self.zipkin_url}/api/v2/spans" if self.zipkin_url else "",
            # The share of traces recorded, by the apps' tracers and (config.yaml) daprd.
            "CONSORT_TRACE_SAMPLING": os.environ.get("CONSORT_TRACE_SAMPLING", "1"),
            # daprd would read this when no scheduler address is given; ours always is.
            "DAPR_SCHEDULER_HOST_ADDRESS_DNS_A": "",
            **self._security_env(spec.app_id),
        }

    def _security_env(self, app_id: str) -> dict[str, str]:
        """The app's tokens, and for its sidecar the trust anchors and the secrets file."""
        store = {"CONSORT_SECRETS_FILE": str(self.secrets.store_file)}
        if not self.secure:
            return store
        return {
            **store,
            **self.secrets.app_env(app_id),
            "DAPR_TRUST_ANCHORS": self.secrets.trust_anchors_file.read_text(),
        }

    def _command(self, spec: AppSpec) -> list[str]:
        command = list(spec.command)
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable  # the project's virtualenv
        return command

    def daprd_argv(self, spec: AppSpec, internal_grpc_port: int | None = None) -> list[str]:
        """The daprd command line for `spec`; its internal gRPC port (its address in name
        resolution) is a free one unless given."""
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
            str(internal_grpc_port or free_port()),
            # On TERM: stop subscriptions but keep serving the app until it has drained
            # (it exits) or the grace is over; a second TERM ends it at once.
            "--dapr-block-shutdown-duration",
            f"{self.scale_file.drain_grace_s + 5:g}s",
            "--metrics-port",
            str(spec.metrics_port),
            "--metrics-listen-address",
            "127.0.0.1",
            "--config",
            str(self._config_path(spec.app_id)),
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
        if self.secure:
            argv += ["--enable-mtls", "--sentry-address", f"127.0.0.1:{self.ports.sentry}"]
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

    def _config_path(self, app_id: str) -> Path:
        """The app's Configuration: config.yaml, with its access control when secure."""
        base = self.run_file.sidecar.config_path
        if not self.secure:
            return base
        return app_configuration(base, self.access, app_id, self.run_dir / "config")

    def _instance0(self, app_id: str) -> Instance:
        for instance in self.instances.get(app_id, []):
            if instance.index == 0:
                return instance
        return self._new_instance(app_id, 0)

    def _new_instance(self, app_id: str, index: int | None = None) -> Instance:
        if index is None:
            taken = {i.index for i in self.instances.get(app_id, [])}
            index = next(i for i in range(1, len(taken) + 2) if i not in taken)
        return Instance.of(self.run_file.app(app_id), index, self.app_env.get(app_id))

    def add_instance(self, instance: Instance, deadline_s: float = 120, restarts: int = 0) -> None:
        """Start an instance beside running siblings and let callers reach it only once it
        is ready: its sidecar registers in name resolution before it listens and before its
        app has loaded its model, so its row is held back until then."""
        registered = threading.Event()
        holder = threading.Thread(
            target=self.registry.hold, args=(instance.address, registered), daemon=True
        )
        holder.start()
        try:
            self.start_instance(instance, restarts)
            self.wait_instance(instance, deadline_s)
        except BaseException:
            self._discard(instance)  # a failed start leaves nothing running or resolving
            raise
        finally:
            registered.set()
            holder.join()
        self.registry.admit(instance.address)

    def _discard(self, instance: Instance) -> None:
        procs = [
            p for p in self.supervisor.procs if p.name in (instance.name, instance.sidecar_name)
        ]
        self._forget(*procs)
        for proc in procs:
            proc.kill()
        if instance in self.instances.get(instance.app_id, []):
            self.instances[instance.app_id].remove(instance)
        self.registry.remove(instance.address)

    def start_instance(self, instance: Instance, restarts: int = 0) -> tuple[Proc, Proc]:
        """Start one instance of an app and its sidecar (without waiting); `restarts`:
        how many times it was started before."""
        spec = instance.spec
        env = {**self._env(spec), **instance.env, "CONSORT_INSTANCE": instance.name}
        siblings = self.instances.setdefault(instance.app_id, [])
        if instance not in siblings:
            siblings.append(instance)
        app = self.supervisor.start(
            Proc(
                instance.name,
                self._command(spec),
                self.logs / f"{instance.name}.log",
                env,
                spec.app_dir,
                group=instance.name,
                ready=http_ok(f"{instance.url}/readyz", expect=(200,)),
                restarts=restarts,
            )
        )
        return app, self._start_sidecar(instance, restarts)

    def _start_sidecar(self, instance: Instance, restarts: int = 0) -> Proc:
        self._watch()
        return self.supervisor.start(
            Proc(
                instance.sidecar_name,
                self.daprd_argv(instance.spec, instance.internal_grpc_port),
                self.logs / f"{instance.sidecar_name}.log",
                {**self._env(instance.spec), **instance.env},
                self.run_dir,
                group=instance.name,
                ready=http_ok(f"{instance.sidecar_url}/v1.0/healthz"),
                restarts=restarts,
            )
        )

    def start_app(self, app_id: str) -> tuple[Proc, Proc]:
        """Start instance 0 of an app (the run file's ports) and its sidecar, without waiting."""
        return self.start_instance(self._instance0(app_id))

    def start_sidecar(self, app_id: str) -> Proc:
        """Start the daprd of instance 0 of an app again (without waiting)."""
        return self._start_sidecar(self._instance0(app_id))

    def wait_instance(self, instance: Instance, deadline_s: float = 60) -> None:
        """Wait until the instance's sidecar is healthy and the app itself is ready."""
        name = instance.name
        app = self.supervisor.get(name)
        sidecar = self.supervisor.get(instance.sidecar_name)
        wait_until(
            f"{name} sidecar",
            http_ok(f"{instance.sidecar_url}/v1.0/healthz"),
            deadline_s,
            [app, sidecar],
            # A sidecar that cannot start often says so about these: show theirs too.
            context=[p for p in self.supervisor.procs if p.name in ("sentry", "placement")],
        )
        url = f"{instance.url}/readyz"

        def ready() -> bool:
            try:
                response = loopback_client().get(url, timeout=1.0)
            except httpx.HTTPError:
                return False
            if response.status_code == 503 and "failed to load" in response.text:
                # Waiting longer will not help: say why now.
                raise StartupError(f"{name}: {response.json().get('detail')}")
            return response.status_code == 200

        wait_until(f"{name} readiness", ready, deadline_s, [app, sidecar])
        for proc in (app, sidecar):
            if proc.state == STARTING and proc.alive():
                proc.state = READY  # as the supervisor's watcher would, when it runs

    def wait_app(self, app_id: str, deadline_s: float = 60) -> None:
        """Wait until every instance of the app is healthy and ready."""
        for instance in list(self.instances.get(app_id, [])):
            self.wait_instance(instance, deadline_s)

    def _forget(self, *procs: Proc) -> None:
        """Stop supervising `procs` (a deliberate stop: their exit is no crash)."""
        for proc in procs:
            if proc in self.supervisor.procs:
                self.supervisor.forget(proc.name)
            self.retired.append(proc)

    def stop_app(self, app_id: str, *, kill: bool = False, sidecar_only: bool = False) -> None:
        """Stop (or SIGKILL) instance 0 of an app and its sidecar, as an operator or a crash
        would; its name-resolution row goes with it."""
        instance = self._instance0(app_id)
        sidecar = self.supervisor.get(instance.sidecar_name)
        app = None if sidecar_only else self.supervisor.get(instance.name)
        self._forget(*(p for p in (app, sidecar) if p is not None))
        if kill:
            sidecar.kill()
            if app is not None:
                app.kill()
        else:
            if app is not None:
                app.stop()
            end_sidecar(sidecar)
        self.registry.remove(instance.address)

    def kill_instance(self, name: str) -> None:
        """SIGKILL an instance's app and sidecar as a crash would, leaving them supervised
        (the watcher withdraws its name-resolution row; a restart policy may bring it back)."""
        self.supervisor.get(f"{name}-daprd").kill()
        self.supervisor.get(name).kill()

    def restart_instance(self, name: str, deadline_s: float = 60) -> None:
        """Start a crashed instance again on its own ports, as a restart policy would, and
        wait until it is ready. Its processes count the restart, as the supervisor's do."""
        instance = next(i for s in self.instances.values() for i in s if i.name == name)
        dead = [p for p in self.supervisor.procs if p.name in (name, instance.sidecar_name)]
        restarts = max((p.restarts for p in dead), default=0) + 1
        for proc in dead:
            proc.kill()  # both, whichever died first
        self._forget(*dead)
        self.add_instance(instance, deadline_s, restarts=restarts)

    def drain(self, instance: Instance, grace_s: float | None = None) -> None:
        """Take an instance out of service and stop it once it has finished what it holds.

        In order: its name-resolution row is withdrawn (no new invocations reach it); its
        sidecar gets TERM and, blocking its shutdown, stops its subscriptions while still
        serving its app; the app gets TERM (readiness 503, in-flight work finished, exit,
        within `grace_s`); then the sidecar is told to exit, and its row is deleted.
        """
        grace = self.scale_file.drain_grace_s if grace_s is None else grace_s
        app = self.supervisor.get(instance.name)
        sidecar = self.supervisor.get(instance.sidecar_name)
        self._forget(app, sidecar)
        self.instances[instance.app_id].remove(instance)
        self.registry.withdraw(instance.address)
        offset = _log_size(sidecar)
        sidecar.signal(signal.SIGTERM)
        _wait_for_line(sidecar, offset, "Blocking graceful shutdown", deadline_s=5)
        app.stop(grace + 5)
        end_sidecar(sidecar, already_signalled=True)
        self.registry.remove(instance.address)

    def scale(self, app_id: str, replicas: int, deadline_s: float = 120) -> list[str]:
        """Run `replicas` instances of `app_id`: start new ones and wait until they are
        ready, or drain the newest ones. Returns the instances' names.

        Args:
            app_id: a running app.
            replicas: how many instances it should have (at least 1).
            deadline_s: how long new instances may take to become ready.
        """
        if replicas < 1:
            raise ValueError(f"{app_id} needs at least one replica, not {replicas}")
        with self._changing:
            current = self.instances.get(app_id)
            if not current:
                raise KeyError(f"{app_id} is not running")
            while len(current) < replicas:
                self.add_instance(self._new_instance(app_id), deadline_s)
            for instance in sorted(current, key=lambda i: i.index)[replicas:][::-1]:
                self.drain(instance)
            return [i.name for i in self.instances[app_id]]

    def rollout(
        self, app_id: str, env: dict[str, str] | None = None, deadline_s: float = 120
    ) -> list[str]:
        """Replace the instances of `app_id` one at a time with its current code and config.

        For each instance: start a new one, wait until it is ready, drain the old one.
        Instance 0 keeps the run file's ports, so it is replaced twice over: a stand-in
        first, then a new instance 0, then the stand-in drains. Both versions serve
        while it runs. Returns the new instances' names.

        Args:
            app_id: a running app.
            env: overrides for the new instances' environment (kept for later ones too),
                e.g. `{"CONSORT_SERVICE_VERSION": "1.1.0"}`.
            deadline_s: how long each new instance may take to become ready.
        """
        with self._changing:
            old = list(self.instances.get(app_id, []))
            if not old:
                raise KeyError(f"{app_id} is not running")
            self._reload_app(app_id)
            if env:
                self.app_env[app_id] = {**self.app_env.get(app_id, {}), **env}
            for instance in old:
                replacement = self._new_instance(app_id)
                self.add_instance(replacement, deadline_s)
                self.drain(instance)
                if instance.index == 0:
                    self.add_instance(self._new_instance(app_id, 0), deadline_s)
                    self.drain(replacement)
            return [i.name for i in self.instances[app_id]]

    def _reload_app(self, app_id: str) -> None:
        """Take the app's command and environment from the run file as it is on disk now."""
        if not self.run_file.path.exists():
            return
        fresh = RunFile.load(self.run_file.path).app(app_id)
        apps = [
            dataclasses.replace(a, command=fresh.command, env=fresh.env)
            if a.app_id == app_id
            else a
            for a in self.run_file.apps
        ]
        self.run_file = dataclasses.replace(self.run_file, apps=apps)

    def _restarting(self, group: str) -> None:
        """The supervisor restarts `group` after a crash: hold the instance out of name
        resolution until it is ready again, as for a new one.

        Its sidecar comes back on a fresh internal gRPC port: callers' sidecars would
        otherwise wait out the reconnect backoff their failed dials to the old port built
        up (seconds after a few failures) before they reach it again; a new address is a
        new connection, dialled at once.
        """
        instance = next((i for s in self.instances.values() for i in s if i.name == group), None)
        if instance is None:
            return
        procs = self.supervisor.group(group)
        sidecar = next((p for p in procs if p.name == instance.sidecar_name), None)
        if sidecar is not None:
            self.registry.remove(instance.address)
            moved = dataclasses.replace(instance, internal_grpc_port=free_port())
            siblings = self.instances[instance.app_id]
            siblings[siblings.index(instance)] = moved
            sidecar.argv = self.daprd_argv(moved.spec, moved.internal_grpc_port)
            instance = moved
        threading.Thread(target=self._readmit, args=(instance,), daemon=True).start()

    def _readmit(self, instance: Instance, deadline_s: float = 180) -> None:
        ready = threading.Event()
        holder = threading.Thread(
            target=self.registry.hold, args=(instance.address, ready), daemon=True
        )
        holder.start()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and not self._stopped.is_set():
            procs = self.supervisor.group(instance.name)
            if not procs or all(p.state == READY for p in procs):
                break
            time.sleep(0.05)
        ready.set()
        holder.join()
        self.registry.admit(instance.address)

    def _watch(self) -> None:
        """Start the watcher that withdraws a crashed instance's name-resolution row."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_loop, daemon=True)
            self._watcher.start()

    def _watch_loop(self) -> None:
        # A dead sidecar's row would resolve for up to the resolver's updateInterval (2 s);
        # callers' retries must land on a live sibling well before that.
        withdrawn: set[str] = set()
        while not self._stopped.wait(0.05):
            for siblings in list(self.instances.values()):
                for instance in list(siblings):
                    self._check(instance, withdrawn)

    def _check(self, instance: Instance, withdrawn: set[str]) -> None:
        procs = {p.name: p for p in self.supervisor.procs}
        app, sidecar = procs.get(instance.name), procs.get(instance.sidecar_name)
        if app is None or sidecar is None:
            return  # being started, stopped or drained: not a crash
        if app.alive() and sidecar.alive():
            withdrawn.discard(instance.address)
        elif instance.address not in withdrawn:
            withdrawn.add(instance.address)
            if sidecar.alive():
                self.registry.withdraw(instance.address)
            else:
                self.registry.remove(instance.address)

    def start(self, app_ids: list[str] | None = None, deadline_s: float = 90) -> None:
        """Start the infrastructure and the apps (all by default, each with the replicas
        `consort.yaml` asks for), and wait for all."""
        ids = app_ids or [a.app_id for a in self.run_file.apps]
        self.ensure_api_key()
        self.control.start()
        self.start_infra()
        for app_id in ids:
            self.start_app(app_id)
            for _ in range(self.scale_file.of(app_id) - 1):
                self.start_instance(self._new_instance(app_id))
        for app_id in ids:
            self.wait_app(app_id, deadline_s)

    def stop(self) -> None:
        """Stop every process. Sidecars are told twice: a whole-system stop needs no drain."""
        self._stopped.set()
        self.control.stop()
        sidecars = [p for p in self.supervisor if p.name.endswith("-daprd")]
        offsets = [_log_size(p) for p in sidecars]
        for proc in sidecars:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        for proc, offset in zip(sidecars, offsets, strict=True):
            _wait_for_line(proc, offset, "Blocking graceful shutdown", deadline - time.monotonic())
        self.supervisor.stop_all()

    def instance_status(self) -> dict[str, Any]:
        """Per app, its instances as the launcher runs them (the control channel's
        `GET /instances`, read by the gateway's console): name, app and sidecar URLs,
        state, restarts, uptime, and where the app's and its sidecar's Prometheus metrics
        are served."""
        procs = {p["name"]: p for p in self.supervisor.status()}
        apps: dict[str, list[dict[str, Any]]] = {}
        for app_id, siblings in list(self.instances.items()):
            rows = apps.setdefault(app_id, [])
            for instance in sorted(siblings, key=lambda i: i.index):
                pair = [procs.get(instance.name), procs.get(instance.sidecar_name)]
                rows.append(
                    {
                        "name": instance.name,
                        "app": instance.url,
                        "sidecar": instance.sidecar_url,
                        "state": instance_state(pair),
                        "restarts": max((p["restarts"] for p in pair if p), default=0),
                        "uptime_s": pair[0]["uptime_s"] if pair[0] else None,
                        "metrics_url": f"{instance.url}/metrics",
                        "sidecar_metrics_url": (
                            f"http://127.0.0.1:{instance.spec.metrics_port}/metrics"
                        ),
                    }
                )
        return {"apps": apps}

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {p.name} ({p.log_path}) -----\n{p.tail(lines)}"
            for p in [*self.retired, *self.supervisor]
        )

    def write_endpoints(self, app_ids: list[str]) -> Path:
        """Record where each app and sidecar listens, for tools and tests."""
        path = self.run_dir / "endpoints.json"
        endpoints = {
            "apps": {
                a: {
                    "app": self.url(a),
                    "sidecar": self.sidecar_url(a),
                    "instances": [
                        {"name": i.name, "app": i.url, "sidecar": i.sidecar_url}
                        for i in self.instances.get(a, [])
                    ],
                }
                for a in app_ids
            },
            "zipkin": self.zipkin_url,
        }
        path.write_text(json.dumps(endpoints, indent=2))
        return path

    def redis_cli_env(self) -> dict[str, str]:
        """The environment `redis-cli` needs to be let in (the password, never in argv)."""
        return {**os.environ, "REDISCLI_AUTH": self.secrets.redis_password}

    def sidecar_headers(self, app_id: str) -> dict[str, str]:
        """What a client of `app_id`'s sidecar API must send (its Dapr API token)."""
        return {"dapr-api-token": self.secrets.dapr_api_token(app_id)} if self.secure else {}

    def app_headers(self, app_id: str) -> dict[str, str]:
        """What a direct caller of `app_id` must send, as its sidecar would (the app token)."""
        return {"dapr-api-token": self.secrets.app_api_token(app_id)} if self.secure else {}

    def url(self, app_id: str) -> str:
        return f"http://127.0.0.1:{self.run_file.app(app_id).app_port}"

    def sidecar_url(self, app_id: str) -> str:
        return f"http://127.0.0.1:{self.run_file.app(app_id).dapr_http_port}"


#: The worse of an app's and its sidecar's states names their instance's.
_STATE_ORDER = ("exited", "crash-looping", "restarting", "stopped", "starting", "ready")


def instance_state(pair: list[dict[str, Any] | None]) -> str:
    """One instance's state from its app's and sidecar's status rows (None: not
    supervised, e.g. being replaced): the worse of the two; a process that died and is
    not being restarted (yet) is `exited`."""
    states = []
    for row in pair:
        if row is None:
            states.append("stopped")
        elif row["pid"] is None and row["state"] in ("starting", "ready"):
            states.append("exited")
        else:
            states.append(row["state"])
    return min(states, key=lambda s: _STATE_ORDER.index(s) if s in _STATE_ORDER else 0)


def _log_size(proc: Proc) -> int:
    try:
        return proc.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def _wait_for_line(proc: Proc, offset: int, text: str, deadline_s: float) -> bool:
    """Wait until `proc` logs `text` after `offset` in its log, or exits, or the deadline."""
    end = time.monotonic() + max(deadline_s, 0)
    while time.monotonic() < end and proc.alive():
        with proc.log_path.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return True
        time.sleep(0.02)
    return False


def end_sidecar(proc: Proc, *, already_signalled: bool = False) -> None:
    """Stop a daprd now: the first TERM starts its (blocked) shutdown, the second ends it."""
    if not already_signalled:
        offset = _log_size(proc)
        proc.signal(signal.SIGTERM)
        _wait_for_line(proc, offset, "Blocking graceful shutdown", deadline_s=5)
    proc.stop(5)


def default_run_dir() -> Path:
    return Path(os.environ.get("CONSORT_RUN_DIR_ROOT", REPO / ".run"))
