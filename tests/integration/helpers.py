"""Small helpers for tests that talk to a running system."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
