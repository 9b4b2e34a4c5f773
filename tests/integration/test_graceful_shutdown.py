"""SIGTERM drains an app (issue 12): it stops accepting, finishes what is in flight, exits 0.

The app is built by the service kit and served by `consort serve`, as every Consort app
is; its requests take 2 s, so they are surely in flight when the signal arrives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from consort.dev.processes import free_port
from tests.integration.helpers import eventually

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 8


def _serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APP_PORT": str(port),
        "CONSORT_SHUTDOWN_GRACE_S": str(GRACE_S),
        "SLOW_APP_WORK_S": "2",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consort", "serve", "tests.integration.slow_app:app"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigterm_finishes_requests_in_flight_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "slow.log"
    proc = _serve(port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _alive(base), bool, deadline_s=30)
        with ThreadPoolExecutor(max_workers=6) as pool:
            paths = ["/work"] * 4 + ["/events/work"] * 2
            in_flight = [pool.submit(httpx.post, base + p, timeout=30) for p in paths]
            time.sleep(0.5)  # all six are being handled
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # it no longer accepts
                httpx.post(base + "/work", timeout=2)
            answers = [f.result() for f in in_flight]
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert proc.wait(timeout=GRACE_S + 5) == 0
        assert time.monotonic() - signalled < GRACE_S
    except BaseException:
        proc.kill()
        print(log.read_text()[-4000:])  # noqa: T201 - the app's log tail on failure
        raise
    assert "draining" in log.read_text()


def _alive(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
