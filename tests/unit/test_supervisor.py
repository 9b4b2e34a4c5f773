"""The supervisor restarts what exits (alone or as a group), and not what is stopped on purpose."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consort.dev.processes import (
    CRASH_LOOPING,
    READY,
    STOPPED,
    Backoff,
    Proc,
    Supervisor,
    wait_until,
)

FAST = Backoff(base_s=0.1, cap_s=0.4, reset_after_s=60, crash_loop_after=3)


def sleeper(tmp: Path, name: str, group: str | None = None) -> Proc:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    return Proc(name, argv, tmp / f"{name}.log", group=group)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(pid_file=tmp_path / "pids.json", backoff=FAST, interval_s=0.05)
    sup.supervise()
    try:
        yield sup
    finally:
        sup.stop_all(grace_s=2)


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    delays = [Backoff().delay(n) for n in range(1, 8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]


def test_a_killed_process_is_restarted_with_its_exit_recorded(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    proc = supervisor.start(sleeper(tmp_path, "worker"))
    wait_until("ready", lambda: proc.state == READY, 5)
    first = proc.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until("restart", lambda: proc.restarts == 1 and proc.state == READY, 10)
    (status,) = supervisor.status()
    assert status["pid"] != first
    assert status["last_exit_code"] == -signal.SIGKILL
    assert status["last_exit_at"] is not None
    assert status["restarts"] == 1


def test_a_group_restarts_together(supervisor: Supervisor, tmp_path: Path) -> None:
    app = supervisor.start(sleeper(tmp_path, "app", group="app"))
    sidecar = supervisor.start(sleeper(tmp_path, "app-daprd", group="app"))
    other = supervisor.start(sleeper(tmp_path, "other"))
    wait_until("ready", lambda: all(p.state == READY for p in (app, sidecar, other)), 5)
    app_pid, other_pid = app.pid, other.pid
    assert sidecar.pid is not None
    os.kill(sidecar.pid, signal.SIGKILL)
    wait_until("group restart", lambda: app.restarts == 1 and sidecar.restarts == 1, 10)
    assert app.pid != app_pid
    assert other.pid == other_pid and other.restarts == 0


def test_a_process_failing_again_and_again_is_crash_looping(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    proc = supervisor.start(
        Proc("broken", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "b.log")
    )
    wait_until("crash loop", lambda: proc.state == CRASH_LOOPING, 10)
    assert proc.last_exit_code == 3
    assert proc.restarts >= 2


def test_removed_and_stopped_processes_are_not_restarted(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    a = supervisor.start(sleeper(tmp_path, "a", group="g"))
    b = supervisor.start(sleeper(tmp_path, "b", group="g"))
    c = supervisor.start(sleeper(tmp_path, "c"))
    supervisor.stop_group("g", grace_s=2)
    supervisor.remove("c", kill=True)
    assert all(p.state == STOPPED and not p.alive() for p in (a, b, c))
    assert supervisor.status() == []
    supervisor.check()
    assert not any(p.alive() for p in (a, b, c))


def test_stop_all_leaves_nothing_and_restarts_nothing(tmp_path: Path) -> None:
    sup = Supervisor(pid_file=tmp_path / "pids.json", backoff=FAST, interval_s=0.05)
    procs = [sup.start(sleeper(tmp_path, f"p{i}")) for i in range(3)]
    sup.supervise()
    sup.stop_all(grace_s=2)
    assert not any(p.alive() for p in procs)
    assert not (tmp_path / "pids.json").exists()
