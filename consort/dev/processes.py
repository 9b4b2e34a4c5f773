"""Starting, watching and stopping the processes of a local Consort system.

Used by `consort run` and by the test harness alike. Each process runs in its own process
group with its output in a log file; `stop` ends the whole group (TERM, then KILL after a
grace period), and children are asked to die with their parent (PR_SET_PDEATHSIG), so a
killed launcher leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now, and not handed out before by this process.

    A port is only reserved once its user binds it; until then the kernel may offer the
    same free port again, so two processes of one system could be given one port.
    """
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class StartupError(RuntimeError):
    """A process exited or did not become healthy by its deadline."""


@dataclass
class Proc:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - argv is ours
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for setsid+pdeathsig
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace_s: float = 10.0) -> None:
        """TERM the process group, KILL it after `grace_s`, and reap it."""
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        # The leader is gone; KILL anything left in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would."""
        if self.popen is None:
            return
        self.signal(signal.SIGKILL)
        self.popen.wait(5)


def wait_until(
    what: str,
    ready: Callable[[], bool],
    deadline_s: float,
    watched: Sequence[Proc] = (),
    interval_s: float = 0.05,
) -> None:
    """Poll `ready` until it is true; fail early if a watched process exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if ready():
            return
        for proc in watched:
            if not proc.alive():
                raise StartupError(
                    f"{proc.name} exited (code {proc.exit_code}) "
                    f"while waiting for {what}. Last lines of {proc.log_path}:\n{proc.tail()}"
                )
        time.sleep(interval_s)
    tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail()}" for p in watched)
    raise StartupError(f"{what} not ready after {deadline_s:g} s\n{tails}")


def http_ok(url: str, expect: Sequence[int] = (200, 204)) -> Callable[[], bool]:
    """A readiness probe: `url` answers with one of `expect`."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code in expect
        except httpx.HTTPError:
            return False

    return probe


class Supervisor:
    """Processes started together and stopped together (in reverse order)."""

    def __init__(self, pid_file: Path | None = None) -> None:
        self.procs: list[Proc] = []
        self.pid_file = pid_file
        self._wrote_pid_file = False

    def start(self, proc: Proc) -> Proc:
        proc.start()
        self.procs.append(proc)
        self._write_pids()
        return proc

    def get(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def stop_all(self, grace_s: float = 10.0) -> None:
        for proc in reversed(self.procs):
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            proc.stop(remaining)
        self.procs.clear()
        # Only ours: a launcher that failed to start must not forget another's processes.
        if self.pid_file is not None and self._wrote_pid_file:
            self.pid_file.unlink(missing_ok=True)

    def _write_pids(self) -> None:
        if self.pid_file is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self._wrote_pid_file = True
        self.pid_file.write_text(
            json.dumps({p.name: p.pid for p in self.procs if p.pid is not None}, indent=2)
        )

    @staticmethod
    def stop_from_pid_file(pid_file: Path, grace_s: float = 10.0) -> list[str]:
        """Stop the process groups a `Supervisor` recorded in `pid_file` (from another shell)."""
        try:
            pids: dict[str, int] = json.loads(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return []
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for pid in pids.values():
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        return list(pids)

    def __iter__(self) -> Iterator[Proc]:
        return iter(self.procs)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
