"""A fresh local system for one benchmark: free ports, a temporary run folder, stopped after."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from consort.dev.system import InfraPorts, LocalSystem, RunFile


@contextmanager
def local_system(
    apps: list[str],
    *,
    tracing: bool = False,
    env: dict[str, str] | None = None,
    secure: bool = True,
    profile: str | None = None,
) -> Iterator[LocalSystem]:
    """Start `apps` (with the profile's servers, placement, scheduler, and Zipkin when
    `tracing`) as the tests do, yield the running system, and stop every process
    afterwards. `secure=False` only to measure what security costs
    (bench/security_cost.py); `profile` (default: `CONSORT_PROFILE`, else redis) picks
    the servers (docs/profiles.md)."""
    with tempfile.TemporaryDirectory(prefix="consort-bench-") as tmp:
        system = LocalSystem(
            RunFile.load(profile=profile).with_free_ports(),
            Path(tmp),
            InfraPorts.free(),
            extra_env=env,
            tracing=tracing,
            secure=secure,
        )
        try:
            system.start(apps)
            yield system
        finally:
            system.stop()
