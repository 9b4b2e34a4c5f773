"""The `consort` command: run the local system, stop it, serve one app.

consort run [--apps gateway,sentiment]   start everything (what `make run` does)
consort stop                             stop what `consort run` started, from any shell
consort scale nlp=2 [sentiment=3 …]      change how many instances of a running app serve
consort rollout sentiment [--env K=V]    replace an app's instances one at a time
consort serve MODULE:APP                 serve one app on $APP_PORT (used in dapr.yaml)
consort workflows list|show|approve      cases and workflows, through the gateway
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from consort.dev import control as control_api
from consort.dev import workflows_cli
from consort.dev.control import ControlServer
from consort.dev.instances import parse_scale
from consort.dev.processes import StartupError, Supervisor
from consort.dev.runtime import REPO, RuntimeMissing
from consort.dev.system import InfraPorts, LocalSystem, RunFile, default_run_dir

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
}


def _serve(target: str) -> int:
    import uvicorn

    port = int(os.environ.get("APP_PORT", "8000"))
    uvicorn.run(
        target,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_config=None,  # the app's JSON logging is configured by the service kit
        timeout_graceful_shutdown=5,
    )
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
    table.add_row("redis", f"127.0.0.1:{p.redis}", "", "state store and pub/sub broker")
    table.add_row("placement", f"127.0.0.1:{p.placement}", "", "actor placement")
    table.add_row("scheduler", f"127.0.0.1:{p.scheduler}", "", "jobs, reminders, workflows")
    return table


def _run(args: argparse.Namespace) -> int:
    run_file = RunFile.load(Path(args.file))
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

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    control: ControlServer | None = None
    try:
        console.print(f"starting {', '.join(app_ids)} with Dapr {system.runtime.version} …")
        system.start(app_ids)
        started_up = True
        system.write_endpoints(app_ids)
        control = ControlServer(system, app_ids)
        control.start()
        console.print(_table(system, app_ids))
        gateway = system.url("gateway") if "gateway" in app_ids else None
        console.print(
            f"ready in {time.monotonic() - started:.1f} s. Logs: {system.logs}/. "
            "Ctrl-C (or `make stop`) stops everything."
        )
        if gateway:
            console.print(
                f"try:  curl -s {gateway}/v1/text/sentiment -H 'content-type: application/json' "
                '-d \'{"text": "Consort makes this easy!"}\''
            )
        while not stopping:
            for proc in list(system.supervisor):
                if not proc.alive():
                    console.print(
                        f"[red]{proc.name} exited (code {proc.exit_code}); "
                        f"last lines of {proc.log_path}:[/red]\n{proc.tail(20)}"
                    )
                    stopping = True
                    break
            time.sleep(0.5)
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
        if control is not None:
            control.stop()
        system.stop()
        console.print("stopped: no Consort process is left running.")
    return return_code


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
            answer = control_api.request(
                default_run_dir(), "/scale", {"app": app_id, "replicas": n}
            )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    _print_instances(answer, [a for a, _ in wanted])
    return 0


def _rollout(args: argparse.Namespace) -> int:
    env = dict(kv.split("=", 1) for kv in args.env)
    console.print(f"rolling out {args.app}: one instance at a time …")
    try:
        answer = control_api.request(default_run_dir(), "/rollout", {"app": args.app, "env": env})
    except (FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    _print_instances(answer, [args.app])
    return 0


def _status(args: argparse.Namespace) -> int:
    from rich.live import Live

    from consort.dev.observe import app_status, read_endpoints, status_table

    run_dir = default_run_dir()

    def snapshot() -> Table:
        # Re-read each time: `consort scale` and `consort rollout` change the instances.
        endpoints = read_endpoints(run_dir)["apps"]
        return status_table(
            [
                app_status(i["name"], i["app"])
                for a, e in endpoints.items()
                for i in e.get("instances") or [{"name": a, "app": e["app"]}]
            ]
        )

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
    status = sub.add_parser("status", help="a live table of every service")
    status.add_argument("--once", action="store_true", help="print once and exit")
    status.add_argument("--interval", type=float, default=2.0, help="refresh every N seconds")
    trace_cmd = sub.add_parser("trace", help="show one trace as a waterfall")
    trace_cmd.add_argument("trace_id", help="the x-trace-id of a response, or a problem's trace_id")
    trace_cmd.add_argument("--zipkin", help="Zipkin's URL (default: the running system's)")
    serve = sub.add_parser("serve", help="serve one app on $APP_PORT")
    serve.add_argument("target", help="MODULE:APP, e.g. apps.gateway.main:app")
    workflows_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "workflows":
        return workflows_cli.run(args)
    if args.command == "serve":
        return _serve(args.target)
    commands = {
        "run": _run,
        "stop": _stop,
        "status": _status,
        "trace": _trace,
        "scale": _scale,
        "rollout": _rollout,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
