"""Starting, watching and stopping the processes of a local Consort system.

Used by `consort run` and by the test harness alike. Each process runs in its own process
group with its output in a log file; `stop` ends the whole group (TERM, then KILL after a
grace period), and children are asked to die with their parent (PR_SET_PDEATHSIG), so a
killed launcher leaves nothing behind.

Once `Supervisor.supervise()` is called, a process that exits is restarted like a
Kubernetes container with `restartPolicy: Always`: after 1 s, then 2 s, 4 s … up to 30 s
while it keeps failing (CrashLoopBackOff), the delay reset once it stayed up 60 s. The
processes of one group (an app and its sidecar) are stopped and restarted together.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def group_cpu_seconds(groups: set[int]) -> float:
    """User and system CPU seconds the kernel charged to every live process whose process
    group is in `groups` (from /proc: steady on a shared machine, unlike wall time)."""
    return sum(cpu_seconds_by_group({g: str(g) for g in groups}).values())


def cpu_seconds_by_group(groups: Mapping[int, str]) -> dict[str, float]:
    """`group_cpu_seconds` split by name: process group id -> name in, name -> the CPU
    seconds of every live process of its group(s) out (0 for a name with none alive)."""
    totals = dict.fromkeys(groups.values(), 0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = groups.get(int(fields[2]))  # pgrp
        if name is not None:
            totals[name] += int(fields[11]) + int(fields[12])  # utime, stime
    ticks = os.sysconf("SC_CLK_TCK")
    return {name: t / ticks for name, t in totals.items()}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class StartupError(RuntimeError):
    """A process exited or did not become healthy by its deadline."""


#: What `Supervisor.status()` reports of a process.
STARTING, READY, RESTARTING, CRASH_LOOPING, STOPPED = (
    "starting",
    "ready",
    "restarting",
    "crash-looping",
    "stopped",
)


@dataclass
class Proc:
    """One supervised process.

    Args:
        name: unique within its supervisor (`nlp`, `nlp-daprd`, `redis`).
        argv: the command; a restart runs the same argv and env again.
        log_path: stdout and stderr go here (appended to across restarts).
        env: added to the launcher's environment.
        cwd: the working directory.
        group: processes of one group restart together (an app and its sidecar; the
            group is named after the instance, e.g. "nlp" or "nlp-1").
        restart: restart it when it exits (once the supervisor supervises).
        ready: a readiness probe; without one a process is ready once started.
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    group: str | None = None
    restart: bool = True
    ready: Callable[[], bool] | None = None
    state: str = STARTING
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None  # wall-clock time (time.time())
    started_at: float | None = None  # monotonic
    ready_at: float | None = None  # monotonic: when its probe first passed since its start

    @property
    def group_key(self) -> str:
        return self.group or self.name

    def start(self) -> None:
        self.state = STARTING
        self.started_at = time.monotonic()
        self.ready_at = None
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
    context: Sequence[Proc] = (),
) -> None:
    """Poll `ready` until it is true; fail early if a watched process exits. On failure,
    the log tails of the watched processes and of `context` (what they depend on, e.g.
    sentry for a sidecar) are in the error."""
    end = time.monotonic() + deadline_s

    def also() -> str:
        return "".join(
            f"\n--- {p.name} ({'alive' if p.alive() else f'exited {p.exit_code}'}, "
            f"{p.log_path}):\n{p.tail()}"
            for p in context
        )

    while time.monotonic() < end:
        if ready():
            return
        for proc in watched:
            if not proc.alive():
                raise StartupError(
                    f"{proc.name} exited (code {proc.exit_code}) "
                    f"while waiting for {what}. Last lines of {proc.log_path}:\n{proc.tail()}"
                    + also()
                )
        time.sleep(interval_s)
    tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail()}" for p in watched)
    raise StartupError(f"{what} not ready after {deadline_s:g} s\n{tails}{also()}")


_loopback: httpx.Client | None = None
_loopback_lock = threading.Lock()


def loopback_client() -> httpx.Client:
    """One HTTP client for the launcher's probes of local processes, shared by its threads.
    A client per probe (`httpx.get`) builds a TLS context each time: at start-up, polling
    nine apps, that was three quarters of the launcher's CPU (5 of its 7 CPU seconds)."""
    global _loopback
    with _loopback_lock:
        if _loopback is None:
            _loopback = httpx.Client(timeout=1.0)
        return _loopback


def http_ok(url: str, expect: Sequence[int] = (200, 204)) -> Callable[[], bool]:
    """A readiness probe: `url` answers with one of `expect`."""

    def probe() -> bool:
        try:
            return loopback_client().get(url, timeout=1.0).status_code in expect
        except httpx.HTTPError:
            return False

    return probe


@dataclass
class Backoff:
    """Exponential restart delays: `base_s`, doubling per failure, capped at `cap_s`, and
    forgotten once the process stayed up `reset_after_s` (as Kubernetes does)."""

    base_s: float = 1.0
    cap_s: float = 30.0
    reset_after_s: float = 60.0
    crash_loop_after: int = 3  # failures in a row before the state says crash-looping

    def delay(self, failures: int) -> float:
        """The wait before restart number `failures` (1 for the first failure)."""
        return float(min(self.cap_s, self.base_s * 2 ** max(0, failures - 1)))


@dataclass
class _Pending:
    """A group waiting out its backoff."""

    failures: int = 0
    due: float | None = None  # monotonic time of the restart; None: not pending


class Supervisor:
    """Processes started together, restarted when they exit, stopped together (in reverse).

    Args:
        pid_file: where each process group's id is recorded for `stop_from_pid_file`.
        backoff: restart delays.
        interval_s: how often the watcher looks at the processes.
    """

    def __init__(
        self,
        pid_file: Path | None = None,
        backoff: Backoff | None = None,
        interval_s: float = 0.2,
    ) -> None:
        self.procs: list[Proc] = []
        self.pid_file = pid_file
        self.backoff = backoff or Backoff()
        self.interval_s = interval_s
        #: How long the rest of a crashed process's group may take to stop (then KILL):
        #: it is restarted at once anyway, so a long graceful drain only delays recovery.
        #: A sidecar whose app died holds its shutdown until the app's health checks fail
        #: (seconds), and an app without its sidecar can finish nothing: half a second.
        self.mate_grace_s = 0.5
        self._wrote_pid_file = False
        self._lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        #: Called with a group's name just before the group is restarted.
        self.on_restart: Callable[[str], None] | None = None

    def start(self, proc: Proc) -> Proc:
        """Start `proc` and supervise it from now on."""
        with self._lock:
            proc.start()
            self.procs.append(proc)
            self._write_pids()
        return proc

    def get(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def group(self, group: str) -> list[Proc]:
        """The processes of `group` (or the one named so), in start order."""
        with self._lock:
            return [p for p in self.procs if p.group_key == group]

    # -- supervision -----------------------------------------------------------------------
    def supervise(self) -> None:
        """Start the watcher thread that restarts exited processes (idempotent)."""
        if self._watcher is not None:
            return
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad probe
                _log_line(self.procs, f"supervisor: {exc!r}")

    def check(self) -> None:
        """One look at every process: probe readiness, notice exits, restart groups due."""
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.state == STARTING and proc.alive() and (proc.ready is None or proc.ready()):
                with self._lock:
                    if proc.state == STARTING and proc.alive():
                        proc.state = READY
                        proc.ready_at = time.monotonic()
        with self._lock:
            if self._stopping.is_set():
                return
            for proc in list(self.procs):
                if proc.state in (STARTING, READY) and not proc.alive():
                    self._exited(proc)
            now = time.monotonic()
            for key, pending in self._pending.items():
                if pending.due is not None and pending.due <= now:
                    pending.due = None
                    if self.on_restart is not None:
                        self.on_restart(key)
                    for proc in self.group(key):
                        proc.restarts += 1
                        proc.start()
            self._write_pids()

    def _exited(self, proc: Proc) -> None:
        """`proc` died: stop its group-mates and schedule the group's restart."""
        proc.last_exit_code = proc.exit_code
        proc.last_exit_at = time.time()
        mates = self.group(proc.group_key)
        if not proc.restart:
            proc.state = STOPPED
            return
        pending = self._pending.setdefault(proc.group_key, _Pending())
        up_s = time.monotonic() - (proc.started_at or 0)
        if up_s >= self.backoff.reset_after_s:
            pending.failures = 0
        pending.failures += 1
        pending.due = time.monotonic() + self.backoff.delay(pending.failures)
        state = CRASH_LOOPING if pending.failures >= self.backoff.crash_loop_after else RESTARTING
        for mate in mates:
            mate.state = state
        for mate in mates:
            if mate is not proc and mate.alive():
                mate.signal(signal.SIGTERM)
        for mate in mates:
            if mate is not proc:
                mate.stop(self.mate_grace_s)
                mate.last_exit_code = mate.exit_code
                mate.last_exit_at = time.time()

    def forget(self, name: str) -> Proc:
        """Stop supervising the process `name` without stopping it (no restart): for a
        caller that stops it in its own order, as a drain does."""
        with self._lock:
            proc = self.get(name)
            proc.state = STOPPED
            self.procs.remove(proc)
            if not any(p.group_key == proc.group_key for p in self.procs):
                self._pending.pop(proc.group_key, None)
            self._write_pids()
        return proc

    def remove(self, name: str, grace_s: float = 10.0, *, kill: bool = False) -> Proc:
        """Stop the process `name` on purpose (no restart) and forget it.

        Args:
            name: the process.
            grace_s: how long it may take to exit after TERM before it is KILLed.
            kill: SIGKILL it at once instead, as a crash would (still no restart).
        """
        with self._lock:
            proc = self.get(name)
            proc.state = STOPPED
            self.procs.remove(proc)
            if not any(p.group_key == proc.group_key for p in self.procs):
                self._pending.pop(proc.group_key, None)
        proc.kill() if kill else proc.stop(grace_s)
        with self._lock:
            self._write_pids()
        return proc

    def stop_group(self, group: str, grace_s: float = 10.0) -> list[Proc]:
        """Stop every process of `group` on purpose (no restart), in reverse start order."""
        procs = self.group(group)
        for proc in reversed(procs):
            self.remove(proc.name, grace_s)
        return procs

    def status(self) -> list[dict[str, Any]]:
        """Per process: name, group, state, restarts, last exit code and when, uptime, pid."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "name": p.name,
                    "group": p.group_key,
                    "state": p.state,
                    "restarts": p.restarts,
                    "last_exit_code": p.last_exit_code,
                    "last_exit_at": p.last_exit_at,
                    "uptime_s": (
                        round(now - p.started_at, 1)
                        if p.started_at is not None and p.alive()
                        else None
                    ),
                    "pid": p.pid if p.alive() else None,
                }
                for p in self.procs
            ]

    # -- stopping --------------------------------------------------------------------------
    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every process (reverse start order), with no restart during the shutdown."""
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=30)
        self._watcher = None
        with self._lock:
            for proc in self.procs:
                proc.state = STOPPED
            for proc in reversed(self.procs):
                proc.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for proc in reversed(self.procs):
                remaining = max(0.1, deadline - time.monotonic())
                proc.stop(remaining)
            self.procs.clear()
            self._pending.clear()
            # Only ours: a launcher that failed to start must not forget another's processes.
            if self.pid_file is not None and self._wrote_pid_file:
                self.pid_file.unlink(missing_ok=True)

    def _write_pids(self) -> None:
        if self.pid_file is None:
            return
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self._wrote_pid_file = True
        pids = {p.name: p.pid for p in self.procs if p.pid is not None}
        text = json.dumps(pids, indent=2)
        if not self.pid_file.exists() or self.pid_file.read_text() != text:
            tmp = self.pid_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.pid_file)

    @staticmethod
    def stop_from_pid_file(pid_file: Path, grace_s: float = 10.0) -> list[str]:
        """Stop the process groups a `Supervisor` recorded in `pid_file` (from another shell).

        When the launcher that owns them is alive (its pid in `launcher.pid` beside the
        pid file), it is asked to stop (SIGTERM), so that it does not restart them; what
        is left after `grace_s` is killed from here.
        """
        try:
            pids: dict[str, int] = json.loads(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return []
        launcher = read_launcher_pid(pid_file.parent)
        if launcher is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(launcher, signal.SIGTERM)
            deadline = time.monotonic() + grace_s + 5
            while time.monotonic() < deadline and _pid_alive(launcher):
                time.sleep(0.1)
            with contextlib.suppress(FileNotFoundError, ValueError):
                pids = json.loads(pid_file.read_text())  # what it may have left
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
        with self._lock:
            return iter(list(self.procs))


def write_launcher_pid(run_dir: Path) -> Path:
    """Record this process as the launcher of the system in `run_dir` (for `consort stop`)."""
    path = run_dir / "launcher.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    return path


def read_launcher_pid(run_dir: Path) -> int | None:
    """The pid of the live launcher of `run_dir`, if there is one."""
    try:
        pid = int((run_dir / "launcher.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid != os.getpid() and _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_line(procs: Sequence[Proc], line: str) -> None:
    """Note a supervisor problem where an operator looks: the first process's log."""
    if procs:
        with contextlib.suppress(OSError), procs[0].log_path.open("a") as log:
            log.write(line + "\n")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
