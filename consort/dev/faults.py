"""Crashing processes of a running local system on purpose, and watching routes recover.

Used by the supervision tests and the recovery benchmark: `RouteLoad` calls one route
again and again from a thread (until stopped, or `max_s` at most) and records each answer;
`crash` SIGKILLs a supervised process as a crash would; `restarted` waits for the
supervisor to have started it again.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from consort.dev.processes import READY, Supervisor, wait_until

#: A call of one route: given a client, the HTTP status it answered.
Call = Callable[[httpx.Client], int]


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (monotonic), how long it took, its status (None: no
    answer within the client's timeout, or the connection failed)."""

    started: float
    elapsed_s: float
    status: int | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class RouteLoad:
    """One route called back to back from a thread, each answer recorded.

    Args:
        name: what the route is called in reports.
        base_url: the gateway's URL.
        call: makes one request and returns its status.
        timeout_s: the client's timeout (a request still waiting then counts as a hang).
        max_s: the load stops by itself after this long.
        headers: sent with every request (the gateway's API key).
    """

    name: str
    base_url: str
    call: Call
    timeout_s: float
    max_s: float = 180.0
    headers: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RouteLoad:
        self._thread = threading.Thread(target=self._run, name=f"load-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        end = time.monotonic() + self.max_s
        with httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout_s
        ) as client:
            while not self._stop.is_set() and time.monotonic() < end:
                started = time.monotonic()
                try:
                    status: int | None = self.call(client)
                except httpx.HTTPError:
                    status = None
                self.outcomes.append(Outcome(started, time.monotonic() - started, status))
                if status is None or status >= 500:
                    self._stop.wait(0.05)  # a failing route is not hammered in a busy loop

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def since(self, t: float) -> list[Outcome]:
        """The requests started at or after `t`."""
        return [o for o in list(self.outcomes) if o.started >= t]

    def first_ok_since(self, t: float) -> float | None:
        """When the first request started after `t` that succeeded ended (monotonic)."""
        for o in self.since(t):
            if o.ok:
                return o.started + o.elapsed_s
        return None

    def wait_ok(self, since: float, deadline_s: float) -> float:
        """Wait until a request started after `since` succeeded; when it ended."""
        wait_until(
            f"{self.name} answering 2xx", lambda: self.first_ok_since(since) is not None, deadline_s
        )
        ok = self.first_ok_since(since)
        assert ok is not None
        return ok


def crash(supervisor: Supervisor, name: str) -> tuple[int, float]:
    """SIGKILL the process `name` (its whole process group); its old pid and when."""
    proc = supervisor.get(name)
    pid = proc.pid
    assert pid is not None and proc.alive(), f"{name} is not running"
    killed_at = time.monotonic()
    proc.signal(signal.SIGKILL)
    return pid, killed_at


def restarted(
    supervisor: Supervisor, name: str, old_pid: int, deadline_s: float
) -> tuple[float, float]:
    """Wait until `name` runs again with a new pid and is ready; when it was started and
    when its readiness probe passed (monotonic)."""
    proc = supervisor.get(name)
    wait_until(
        f"{name} restarted",
        lambda: proc.pid != old_pid and proc.alive() and proc.state == READY,
        deadline_s,
    )
    assert proc.started_at is not None and proc.ready_at is not None
    return proc.started_at, proc.ready_at
