"""An app started as its generated Deployment starts it (the container's command and
environment from deploy/k8s/prod/), probed as the kubelet probes it, then stopped as
Kubernetes stops a pod: it listens on every address, its startup and liveness probes pass
at once, its readiness probe waits for its sidecar (none here: 503), and on SIGTERM it
exits 0 well within the pod's terminationGracePeriodSeconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from consort.dev.processes import free_port
from consort.dev.runtime import REPO
from consort.kit.settings import cache_dir
from tests.integration.helpers import eventually

APP = "sentiment"


def _deployment() -> dict[str, Any]:
    text = (REPO / "deploy" / "k8s" / "prod" / f"{APP}.yaml").read_text()
    [found] = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment"]
    return found


def _listening_on_every_address(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:`port` (/proc/net/tcp: state 0A is LISTEN)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[1] == f"00000000:{port:04X}" and r.split()[3] == "0A" for r in rows)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _up(status: int | None) -> bool:
    """The startup probe passed; a process that exited (its code, as a status) fails now."""
    if status is not None and status != 200:
        raise AssertionError(f"the app exited with {status} or answered it")
    return status == 200


def test_an_app_run_as_its_deployment_says_probes_listens_and_drains(tmp_path: Path) -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    [container] = pod["containers"]
    port = free_port()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # What a pod gets from elsewhere: its name, and here a free port and the local models.
    env |= {
        "APP_PORT": str(port),
        "CONSORT_INSTANCE": f"{APP}-0",
        "CONSORT_CACHE": str(cache_dir()),
    }
    # The image's PATH starts with its virtualenv; here, this one's.
    env |= {"DAPR_HTTP_PORT": str(free_port())}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    log = tmp_path / f"{APP}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(container["command"], cwd=REPO, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    probe = {
        p: container[p]["httpGet"]["path"]
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    try:
        eventually(lambda: proc.poll() or _status(base + probe["startupProbe"]), _up, 60)
        assert _listening_on_every_address(port)
        assert _status(base + probe["livenessProbe"]) == 200
        not_ready = httpx.get(base + probe["readinessProbe"], timeout=5)
        assert not_ready.status_code == 503 and "sidecar" in not_ready.text.lower()
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=pod["terminationGracePeriodSeconds"]) == 0
        assert time.monotonic() - stopped < pod["terminationGracePeriodSeconds"]
    except BaseException:
        proc.kill()
        print(log.read_text()[-4000:])  # noqa: T201 - the app's log tail on failure
        raise
