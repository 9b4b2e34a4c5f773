"""What the replica tests share: a bounded closed-loop load through the gateway, the
requests each instance served, and the `consort` CLI run as an operator's second shell."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from consort.dev.observe import request_counts
from tests.integration.helpers import eventually

if TYPE_CHECKING:
    from consort.dev.system import LocalSystem


def _is_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


@dataclass
class Load:
    """Closed-loop requests to one gateway route from a background thread until stopped,
    `concurrency` at a time, never longer than `limit_s`. An answer `accept` refuses (by
    default: any but a 200) is a failure, with its time and text."""

    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    concurrency: int = 16
    limit_s: float = 180
    accept: Callable[[httpx.Response], bool] = _is_ok
    #: How long `wait_for` waits by default.
    wait_s: float = 60
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def ok(self) -> int:
        return self.statuses[200]

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(self.limit_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.limit_s
        # A fresh connection per request: no request can race a keep-alive connection the
        # server is closing, so a reset here is the system's failure, not the client's.
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=0)
        async with httpx.AsyncClient(headers=self.headers, timeout=30, limits=limits) as client:

            async def worker() -> None:
                while not self._stop.is_set() and loop.time() < end:
                    try:
                        response = await client.post(self.url, json=self.body)
                    except httpx.HTTPError as exc:
                        self.statuses[0] += 1
                        self.failures.append(f"{datetime.now(UTC):%H:%M:%S.%f} {exc!r}")
                        continue
                    self.statuses[response.status_code] += 1
                    if not self.accept(response):
                        self.failures.append(
                            f"{datetime.now(UTC):%H:%M:%S.%f} {response.status_code} "
                            f"{response.text[:300]}"
                        )

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    def wait_for(self, more: int, deadline_s: float | None = None) -> None:
        """Wait until `more` further requests have succeeded."""
        target = self.ok + more
        eventually(lambda: self.ok, lambda n: n >= target, deadline_s or self.wait_s)


def served(system: LocalSystem, app_id: str) -> dict[str, float]:
    """Requests each instance of `app_id` has served (its own /metrics)."""
    return {
        i.name: request_counts(httpx.get(f"{i.url}/metrics", timeout=5).text)[0]
        for i in system.instances[app_id]
    }


def consort_cli(system: LocalSystem, *args: str) -> subprocess.CompletedProcess[str]:
    """`consort <args>` from another process, as an operator's second shell would run it
    (240 columns wide, so no table cell is cut)."""
    env = {**os.environ, "CONSORT_RUN_DIR_ROOT": str(system.run_dir), "COLUMNS": "240"}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "consort", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
