"""The whole system as `make run` starts it: `consort run`, a request, Ctrl-C, nothing left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from consort.dev import profiles
from consort.dev.processes import wait_until
from consort.dev.runtime import REPO
from consort.dev.system import RunFile


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (their run folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if text in cmdline or text.encode() in environ:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_consort_run_serves_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "CONSORT_RUN_DIR_ROOT": str(run_dir), "COLUMNS": "200"}
    log = (tmp_path / "consort-run.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "consort", "run", "--free-ports"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoints = run_dir / "endpoints.json"
    try:
        # Eight apps, their sidecars and the infrastructure on two shared cores.
        wait_until("consort run", endpoints.exists, 240, [])
        urls = json.loads(endpoints.read_text())["apps"]
        pids = json.loads((run_dir / "pids.json").read_text())
        # Every app of dapr.yaml beside its sidecar, and the infrastructure.
        apps = [a.app_id for a in RunFile.load().apps]
        assert {
            "gateway",
            "sentiment",
            "nlp",
            "vision",
            "forecast",
            "anomaly",
            "orchestrator",
        } <= set(apps)
        # The profile's servers (docs/profiles.md): Redis, or PostgreSQL and RabbitMQ
        # (with the port mapper its Erlang node registers with).
        servers = profiles.servers(RunFile.load().sidecar.resources_paths)
        assert set(pids) == {
            "sentry",
            "zipkin",
            *servers,
            *(["epmd"] if "rabbitmq" in servers else []),
            "placement",
            "scheduler",
            *apps,
            *(f"{a}-daprd" for a in apps),
        }
        # The development key `make run` made, printed, and kept for its owner only.
        key_file = run_dir / "dev-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        refused = httpx.post(
            f"{urls['gateway']['app']}/v1/text/sentiment", json={"text": "no key"}, timeout=10
        )
        assert refused.status_code == 401
        response = httpx.post(
            f"{urls['gateway']['app']}/v1/text/sentiment",
            json={"text": "Consort makes this easy!"},
            headers=auth,
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["label"] == "positive"
        assert httpx.get(f"{urls['gateway']['app']}/docs").status_code == 200
        gateway = urls["gateway"]["app"]
        analysis = httpx.post(
            f"{gateway}/v1/text/analyze",
            json={"text": "The battery is awful but the screen is gorgeous."},
            headers=auth,
            timeout=10,
        ).json()
        aspects = {a["aspect"]: a["label"] for a in analysis["aspects"]}
        assert aspects == {"battery": "negative", "screen": "positive"}
        accepted = httpx.post(
            f"{gateway}/v1/reviews",
            json={"reviews": [{"text": "Great phone, awful case."}]},
            headers=auth,
        )
        assert accepted.status_code == 202
        (review_id,) = accepted.json()["ids"]
        wait_until(
            "the review's analysis",
            lambda: (
                httpx.get(f"{gateway}/v1/reviews/{review_id}", headers=auth).json()["status"]
                == "complete"
            ),
            30,
            [],
        )
        output = (tmp_path / "consort-run.log").read_text()
        assert "Consort is running" in output
        assert urls["gateway"]["app"] + "/docs" in output
        assert key in output  # the first screen shows the development key
        # and the console's link, the key in its fragment (which no server sees)
        assert f"{urls['gateway']['app']}/console/#key={key}" in output
    finally:
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends
        launcher.wait(30)
        log.close()
    assert launcher.returncode == 0, (tmp_path / "consort-run.log").read_text()[-3000:]
    deadline = time.monotonic() + 5
    while processes_mentioning(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(run_dir)) == []
    assert not (run_dir / "pids.json").exists()


def test_make_stop_from_another_shell_stops_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "CONSORT_RUN_DIR_ROOT": str(run_dir)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "consort", "run", "--free-ports", "--apps", "sentiment"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("consort run", (run_dir / "endpoints.json").exists, 120, [])
        # Simulate a launcher that died without cleaning up (SIGKILL), then `make stop`.
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(5)
        stop = subprocess.run(
            [sys.executable, "-m", "consort", "stop"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0
        assert "sentiment-daprd" in stop.stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()
    deadline = time.monotonic() + 5
    while processes_mentioning(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(run_dir)) == []
