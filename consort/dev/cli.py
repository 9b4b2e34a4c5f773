"""The `consort` command: run the local system, stop it, serve one app.

consort run [--apps gateway,sentiment]   start everything (what `make run` does)
consort stop                             stop what `consort run` started, from any shell
consort scale nlp=2 [sentiment=3 …]      change how many instances of a running app serve
consort rollout sentiment [--env K=V]    replace an app's instances one at a time
consort status [--once]                  each process's state, restarts, uptime; each app's
consort logs NAME [-f] [-n 40]           the log of one process (nlp, nlp-daprd, redis …)
consort serve MODULE:APP                 serve one app on $APP_PORT (used in dapr.yaml)
consort workflows list|show|approve      cases and workflows, through the gateway
consort k8s render|check                 write deploy/ (Kubernetes), or check it (make lint)
consort keys create|list|revoke          the gateway's API keys (hashed in the run folder)
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from consort.dev import keys_cli, workflows_cli
from consort.dev.instances import parse_scale
from consort.dev.processes import (
    StartupError,
    Supervisor,
    read_launcher_pid,
    write_launcher_pid,
)
from consort.dev.profiles import UnknownProfile
from consort.dev.runtime import REPO, RuntimeMissing
from consort.dev.scaling import Scaling
from consort.dev.scaling import request as control_request
from consort.dev.system import InfraPorts, LocalSystem, RunFile, default_run_dir
from consort.kit.keys import DEV_KEY_FILE_NAME

console = Console(stderr=True)

# What each app is, for the table `consort run` prints.
DESCRIPTIONS = {
    "gateway": "public REST API under /v1",
    "sentiment": "sentence and document sentiment (VADER)",
    "nlp": "sentences, entities, keyphrases (spaCy)",
    "vision": "faces, OCR, image quality (OpenCV, ONNX Runtime)",
    "anomaly": "per-series anomaly scoring (actors)",
    "forecast": "forecasts with intervals (statsmodels)",
    "recommender": "recommendations, similar items, baskets (implicit ALS)",
    "orchestrator": "durable workflows",
    "search": "embeddings and semantic search (Rust, all-MiniLM-L6-v2)",
}


#: Seconds a stopping app has to finish its requests and event deliveries in flight.
SHUTDOWN_GRACE_ENV = "CONSORT_SHUTDOWN_GRACE_S"
SHUTDOWN_GRACE_DEFAULT_S = 20.0
#: The address `consort serve` binds (default 127.0.0.1).
APP_HOST_ENV = "CONSORT_APP_HOST"


def _serve(target: str) -> int:
    """Serve one app on $APP_PORT (bound to $CONSORT_APP_HOST) until SIGTERM or SIGINT, then
    drain and exit 0.

    On the signal `/readyz` answers 503 at once and uvicorn stops accepting; requests
    and event deliveries in flight finish within $CONSORT_SHUTDOWN_GRACE_S (20 s), then
    the app's shut-down runs. What was not accepted, daprd delivers again (its retries).
    """
    import uvicorn

    from consort.kit.service import draining

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            draining.begin(sig)
            super().handle_exit(sig, frame)

    port = int(os.environ.get("APP_PORT", "8000"))
    # Loopback beside a local sidecar; a pod's manifest sets 0.0.0.0 for the kubelet's probes.
    host = os.environ.get(APP_HOST_ENV, "127.0.0.1")
    grace_s = float(os.environ.get(SHUTDOWN_GRACE_ENV, SHUTDOWN_GRACE_DEFAULT_S))
    config = uvicorn.Config(
        target,
        host=host,
        port=port,
        access_log=False,
        log_config=None,  # the app's JSON logging is configured by the service kit
        timeout_graceful_shutdown=math.ceil(grace_s),
    )
    # uvicorn raises the signal again once it has shut down; by then the work is done,
    # so the process exits 0 instead of dying of that signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    DrainingServer(config).run()
    return 0


def _table(system: LocalSystem, app_ids: list[str]) -> Table:
    table = Table(title="Consort is running", title_justify="left")
    table.add_column("service")
    table.add_column("app URL")
    table.add_column("sidecar (Dapr HTTP)")
    table.add_column("what it does")
    gateway_first = sorted(app_ids, key=lambda a: (a != "gateway", a))
    for app_id in gateway_first:
        table.add_row(
            app_id,
            system.url(app_id) + ("/docs" if app_id == "gateway" else ""),
            system.sidecar_url(app_id),
            DESCRIPTIONS.get(app_id, ""),
        )
    p = system.ports
    if system.zipkin_url:
        table.add_row(
            "zipkin", f"{system.zipkin_url}/zipkin/", "", "traces of every app and sidecar"
        )
    roles = {
        "redis": "state store and pub/sub broker",
        "postgres": "state store (PostgreSQL)",
        "rabbitmq": "pub/sub broker (RabbitMQ)",
    }
    for server, port in system.server_ports().items():
        table.add_row(server, f"127.0.0.1:{port}", "", f"{roles[server]}, profile {system.profile}")
    table.add_row("placement", f"127.0.0.1:{p.placement}", "", "actor placement")
    table.add_row("scheduler", f"127.0.0.1:{p.scheduler}", "", "jobs, reminders, workflows")
    table.add_row(
        "sentry",
        f"127.0.0.1:{p.sentry}",
        "",
        "mTLS certificates (secrets: .run/secrets/)",
    )
    return table


def _run(args: argparse.Namespace) -> int:
    try:
        run_file = RunFile.load(Path(args.file))
    except UnknownProfile as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    app_ids = args.apps.split(",") if args.apps else [a.app_id for a in run_file.apps]
    run_dir = default_run_dir()
    ports = None
    if args.free_ports:
        run_file = run_file.with_free_ports()
        ports = InfraPorts.free()
    tracing = os.environ.get("CONSORT_TRACING", "on").lower() not in ("off", "0", "false")
    try:
        system = LocalSystem(run_file, run_dir, ports, tracing=tracing)
    except RuntimeMissing as exc:
        console.print(f"[red]{exc}[/red]")
        return 1

    stopping = False
    started_up = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if not started_up:
            raise KeyboardInterrupt  # abandon start-up now; `finally` stops what started

    if read_launcher_pid(run_dir) is not None:
        console.print(f"[red]Consort is already running from {run_dir} (`make stop` ends it)[/red]")
        return 1
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        console.print(f"starting {', '.join(app_ids)} with Dapr {system.runtime.version} …")
        system.start(app_ids)
        started_up = True
        system.write_endpoints(app_ids)
        console.print(_table(system, app_ids))
        gateway = system.url("gateway") if "gateway" in app_ids else None
        console.print(
            f"ready in {time.monotonic() - started:.1f} s. Logs: {system.logs}/. "
            "Ctrl-C (or `make stop`) stops everything."
        )
        if gateway:
            key_file = run_dir / DEV_KEY_FILE_NAME
            console.print(
                f"API key (every scope; kept in {key_file}, `consort keys` makes others):\n"
                f"  {system.api_key}"
            )
            # The key travels in the fragment: the browser keeps it, no server sees it.
            console.print(
                f"console (with this key):\n  {gateway}/console/#key={system.api_key}",
                soft_wrap=True,
            )
            console.print(
                f"try:  curl -s {gateway}/v1/text/sentiment -H 'content-type: application/json' "
                f'-H "Authorization: Bearer $(cat {key_file})" '
                '-d \'{"text": "Consort makes this easy!"}\''
            )
        _supervise(system, run_dir, app_ids, lambda: stopping)
        return_code = 0
    except StartupError as exc:
        console.print(f"[red]start-up failed:[/red] {exc}")
        return_code = 1
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        return_code = 1
    except KeyboardInterrupt:
        console.print("start-up interrupted")
        return_code = 130
    finally:
        console.print("stopping …")
        system.stop()
        if read_launcher_pid(run_dir) is None:  # ours (or nobody's): not another launcher's
            (run_dir / "launcher.pid").unlink(missing_ok=True)
        console.print("stopped: no Consort process is left running.")
    return return_code


def _supervise(
    system: LocalSystem, run_dir: Path, app_ids: list[str], stopping: Callable[[], bool]
) -> None:
    """Keep the system running until `stopping()`: restart what exits (the supervisor's
    watcher), serve the control channel (status, scale, rollout), and print each process's
    change of state."""
    write_launcher_pid(run_dir)
    system.supervisor.supervise()
    control = system.control  # serving since start-up: `consort status` answers meanwhile
    scaling = Scaling(system, app_ids)
    scaling.install(control)
    seen: dict[str, str] = {p["name"]: p["state"] for p in system.supervisor.status()}
    try:
        while not stopping():
            for p in system.supervisor.status():
                if seen.get(p["name"]) != p["state"]:
                    seen[p["name"]] = p["state"]
                    _announce(system, p)
            time.sleep(0.5)
    finally:
        # Not `scaling.close()`: the instances its thread started would be told to die
        # with it (PR_SET_PDEATHSIG) before `system.stop()` stops them in order.
        control.stop()


def _announce(system: LocalSystem, p: dict[str, Any]) -> None:
    state = p["state"]
    if state in ("restarting", "crash-looping"):
        proc = system.supervisor.get(p["name"])
        console.print(
            f"[red]{p['name']} {state} (last exit code {p['last_exit_code']}, "
            f"restarts so far {p['restarts']}); last lines of {proc.log_path}:[/red]\n"
            f"{proc.tail(10)}"
        )
    elif state == "ready":
        console.print(f"[green]{p['name']} ready[/green] (restarts: {p['restarts']})")


def _stop(args: argparse.Namespace) -> int:
    stopped = Supervisor.stop_from_pid_file(default_run_dir() / "pids.json")
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _print_instances(answer: dict[str, object], app_ids: list[str]) -> None:
    instances = answer["instances"]
    assert isinstance(instances, dict)
    for app_id in app_ids:
        names = ", ".join(f"{i['name']} ({i['app']})" for i in instances[app_id])
        console.print(f"{app_id}: {len(instances[app_id])} serving: {names}")


def _scale(args: argparse.Namespace) -> int:
    try:
        wanted = [parse_scale(arg) for arg in args.replicas]
        for app_id, n in wanted:
            console.print(f"scaling {app_id} to {n} …")
            answer = control_request(default_run_dir(), "/scale", {"app": app_id, "replicas": n})
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    _print_instances(answer, [a for a, _ in wanted])
    return 0


def _rollout(args: argparse.Namespace) -> int:
    env = dict(kv.split("=", 1) for kv in args.env)
    console.print(f"rolling out {args.app}: one instance at a time …")
    try:
        answer = control_request(default_run_dir(), "/rollout", {"app": args.app, "env": env})
    except (FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    _print_instances(answer, [args.app])
    return 0


def _status(args: argparse.Namespace) -> int:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from consort.dev import control
    from consort.dev.observe import app_status, process_table, read_endpoints, status_table
    from consort.dev.security import RunSecrets

    run_dir = default_run_dir()

    def snapshot() -> Group:
        try:
            processes = control.call(run_dir, "GET", "/status", timeout_s=5)["processes"]
            top: Table | Text = process_table(processes, time.time())
        except (FileNotFoundError, httpx.HTTPError) as exc:
            top = Text(f"no launcher answers: {exc}", style="red")
        # Re-read each time: `consort scale` and `consort rollout` change the instances.
        endpoints = read_endpoints(run_dir)["apps"]
        secrets = RunSecrets.in_run_dir(run_dir)
        apps = [
            # With the token its sidecar sends: /info is not open to just anyone.
            app_status(i["name"], i["app"], {"dapr-api-token": secrets.app_api_token(a)})
            for a, e in endpoints.items()
            for i in e.get("instances") or [{"name": a, "app": e["app"]}]
        ]
        return Group(top, status_table(apps))

    out = Console()
    if args.once:
        out.print(snapshot())
        return 0
    with Live(snapshot(), console=out, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(args.interval)
                live.update(snapshot())
        except KeyboardInterrupt:
            pass
    return 0


def _logs(args: argparse.Namespace) -> int:
    logs = default_run_dir() / "logs"
    path = logs / f"{args.name}.log"
    if not path.exists():
        known = sorted(p.stem for p in logs.glob("*.log"))
        console.print(f"no log for {args.name!r} in {logs}; there are: {', '.join(known) or '-'}")
        return 1
    out = sys.stdout
    with path.open("r", errors="replace") as log:
        for line in log.readlines()[-args.lines :]:
            out.write(line)
        out.flush()
        try:
            while args.follow:
                chunk = log.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif path.stat().st_size < log.tell():
                    log.seek(0)  # truncated or replaced: read it from its start
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    return 0


def _trace(args: argparse.Namespace) -> int:
    from consort.dev.observe import fetch_trace, read_endpoints, waterfall

    zipkin = args.zipkin or read_endpoints(default_run_dir()).get("zipkin")
    if not zipkin:
        console.print("tracing is off for this run (CONSORT_TRACING=off)")
        return 1
    spans = fetch_trace(zipkin, args.trace_id)
    if not spans:
        console.print(
            f"Zipkin at {zipkin} has no spans for {args.trace_id} yet "
            "(sidecars send theirs within a few seconds)"
        )
        return 1
    Console().print(waterfall(spans))
    console.print(f"in Zipkin: {zipkin}/zipkin/traces/{args.trace_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consort", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every service beside its sidecar")
    run.add_argument("--file", default=str(REPO / "dapr.yaml"), help="Multi-App Run file")
    run.add_argument("--apps", help="comma-separated app ids (default: all in the file)")
    run.add_argument(
        "--free-ports",
        action="store_true",
        help="use free ports instead of the file's (they are written to <run dir>/endpoints.json)",
    )
    sub.add_parser("stop", help="stop what `consort run` started")
    scale = sub.add_parser("scale", help="change how many instances of a running app serve")
    scale.add_argument("replicas", nargs="+", metavar="APP=N", help="e.g. nlp=2")
    rollout = sub.add_parser("rollout", help="replace an app's instances one at a time")
    rollout.add_argument("app", help="the app id, e.g. sentiment")
    rollout.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in the new instances' environment (repeatable)",
    )
    status = sub.add_parser("status", help="a live table of every process and service")
    status.add_argument("--once", action="store_true", help="print once and exit")
    status.add_argument("--interval", type=float, default=2.0, help="refresh every N seconds")
    logs = sub.add_parser("logs", help="the log of one process (an app, its daprd, redis …)")
    logs.add_argument("name", help="e.g. nlp, nlp-daprd, redis, placement, scheduler, zipkin")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=40, help="how many last lines first")
    trace_cmd = sub.add_parser("trace", help="show one trace as a waterfall")
    trace_cmd.add_argument("trace_id", help="the x-trace-id of a response, or a problem's trace_id")
    trace_cmd.add_argument("--zipkin", help="Zipkin's URL (default: the running system's)")
    serve = sub.add_parser("serve", help="serve one app on $APP_PORT")
    serve.add_argument("target", help="MODULE:APP, e.g. apps.gateway.main:app")
    workflows_cli.add_parser(sub)
    k8s = sub.add_parser("k8s", help="Kubernetes manifests: render deploy/, or check it")
    k8s.add_argument("action", choices=("render", "check"))
    keys_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "workflows":
        return workflows_cli.run(args)
    if args.command == "keys":
        return keys_cli.run(args)
    if args.command == "k8s":
        # Imported here: the checks need dev-only packages that an app's image lacks.
        from consort.deploy import cli as deploy_cli

        return deploy_cli.run(args)
    if args.command == "serve":
        return _serve(args.target)
    commands = {
        "run": _run,
        "stop": _stop,
        "status": _status,
        "logs": _logs,
        "trace": _trace,
        "scale": _scale,
        "rollout": _rollout,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
