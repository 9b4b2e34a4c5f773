"""The Multi-App Run file, read the way `consort run` and the harness read it."""

from __future__ import annotations

from pathlib import Path

from consort.dev.runtime import REPO, Runtime
from consort.dev.system import InfraPorts, LocalSystem, RunFile


def test_run_file_lists_every_app_with_distinct_ports() -> None:
    run_file = RunFile.load()
    ports = [
        port
        for a in run_file.apps
        for port in (a.app_port, a.dapr_http_port, a.dapr_grpc_port, a.metrics_port)
    ]
    assert len(ports) == len(set(ports))
    assert {"gateway", "sentiment"} <= {a.app_id for a in run_file.apps}
    assert run_file.sidecar.config_path == REPO / "components" / "config.yaml"


def test_free_ports_keep_apps_and_change_ports() -> None:
    run_file = RunFile.load()
    free = run_file.with_free_ports()
    assert [a.app_id for a in free.apps] == [a.app_id for a in run_file.apps]
    assert free.app("gateway").app_port != run_file.app("gateway").app_port


def test_daprd_gets_the_run_files_sidecar_settings(tmp_path: Path) -> None:
    fake = Runtime(
        "1.18.3", Path("daprd"), Path("placement"), Path("scheduler"), Path("sentry"), Path("redis")
    )
    system = LocalSystem(RunFile.load(), tmp_path, InfraPorts(), runtime=fake, tracing=False)
    argv = system.daprd_argv(system.run_file.app("sentiment"))
    assert argv[argv.index("--max-body-size") + 1] == "5Mi"
    assert argv[argv.index("--app-id") + 1] == "sentiment"
    assert argv[argv.index("--placement-host-address") + 1] == "127.0.0.1:50005"
    assert "--enable-app-health-check" in argv
    assert str(REPO / "components") in argv
