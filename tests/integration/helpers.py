"""Small helpers for tests that talk to a running system."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from consort.dev.system import LocalSystem

T = TypeVar("T")


def needs_redis_streams(system: LocalSystem, what: str) -> None:
    """Skip the rest of a test that reads a topic's Redis stream (what the broker kept)
    when the profile's broker is not Redis: RabbitMQ keeps an event only in the queues of
    its subscribers, and a topic only listeners take has none (docs/profiles.md)."""
    if "redis" not in system.servers:
        pytest.skip(f"{what}: reads the topic's Redis stream; profile {system.profile}")


def eventually(probe: Callable[[], T], until: Callable[[T], bool], deadline_s: float = 15) -> T:
    """Call `probe` until `until(result)` holds; fail with the last result at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        result = probe()
        if until(result):
            return result
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline_s} s; last: {result!r}")
        time.sleep(0.05)


def unique_text(prefix: str = "Consort test") -> str:
    """A text no other test sends, so caches and counters start clean for it."""
    return f"{prefix} {uuid.uuid4().hex}: the service is wonderful."
