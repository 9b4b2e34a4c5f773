"""API keys of the public edge: the keys file, scopes, and a per-key rate limiter.

A key is `csk_<id>_<secret>`: the id names its record, the secret is 32 random bytes. The
keys file holds only each key's SHA-256 (a fast hash is enough for random secrets of 256
bits: nothing can be guessed, and an attacker who reads the file still cannot call), with
its name, scopes, rate and whether it was revoked. `consort keys` writes the file (0600,
atomically); the gateway reads it again whenever it changes, so a revocation takes effect
on every running gateway at once. Plain Python: no web framework here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: What a key may be allowed to call, one scope per area of the API.
SCOPES: dict[str, str] = {
    "text": "sentiment, nlp, text analysis and reviews (/v1/text, /v1/reviews)",
    "images": "image analysis and face blurring (/v1/images)",
    "timeseries": "forecasts, metrics and anomalies (/v1/forecasts, /v1/metrics, /v1/anomalies)",
    "recommendations": "recommendations, similar items, baskets, interactions",
    "workflows": "start review triage and forecast runs, read workflows and cases",
    "ops": "operations: /v1/ops/*, the catalog, workflow decisions, terminate, purge, schedules",
}
#: The keys file's name in the run folder, and that of the file `make run` keeps its
#: development key in.
KEYS_FILE_NAME = "gateway-keys.json"
DEV_KEY_FILE_NAME = "dev-key"
#: The rate of a key made without one, requests per second (its burst: twice that).
DEFAULT_RATE_PER_S = 10.0
MAX_RATE_PER_S = 100_000.0
KEY_PREFIX = "csk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_FORMAT_VERSION = 1
log = logging.getLogger(__name__)


class KeyProblem(ValueError):
    """A key could not be made or changed as asked; the message says why."""


@dataclass(frozen=True)
class KeyRecord:
    """One key as the keys file holds it (never the key itself)."""

    id: str
    name: str
    sha256: str
    scopes: tuple[str, ...]
    rate_per_s: float
    burst: int
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def public(self) -> dict[str, Any]:
        """What `consort keys list` shows: everything but the hash."""
        shown = asdict(self)
        del shown["sha256"]
        shown["scopes"] = list(self.scopes)
        return shown

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyRecord:
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            sha256=str(raw["sha256"]),
            scopes=tuple(str(s) for s in raw["scopes"]),
            rate_per_s=float(raw["rate_per_s"]),
            burst=int(raw["burst"]),
            created=str(raw["created"]),
            revoked=None if raw.get("revoked") is None else str(raw["revoked"]),
        )


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str | Iterable[str]) -> tuple[str, ...]:
    """`text,ops` (or a list) as known scopes, in the order of SCOPES; `all` is every one."""
    wanted = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    wanted = [s for s in wanted if s]
    if wanted == ["all"]:
        return tuple(SCOPES)
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown or not wanted:
        raise KeyProblem(
            f"scopes must be one or more of {', '.join(SCOPES)} (or `all`), "
            f"not {', '.join(unknown) or 'none'}"
        )
    return tuple(s for s in SCOPES if s in wanted)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyFile:
    """The keys file at `path`: read it, add a key, revoke one. Writers hold a lock, and
    write a new file (0600) in place of the old, so a reader never sees half a file."""

    path: Path

    def read(self) -> list[KeyRecord]:
        """Every key, revoked ones included; none when the file does not exist."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [KeyRecord.from_json(raw) for raw in doc["keys"]]

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int | None = None,
    ) -> tuple[KeyRecord, str]:
        """Add a key; returns its record and the key, which is shown this once only.

        Args:
            name: who or what uses it (letters, digits, ` ._-`, up to 64).
            scopes: what it may call (see SCOPES).
            rate_per_s: requests per second it may make on each gateway instance.
            burst: requests it may make at once above the rate (default: twice the rate).
        """
        if not _NAME.match(name):
            raise KeyProblem(
                "name must be 1 to 64 letters, digits, spaces, dots, dashes or underscores"
            )
        if not 0 < rate_per_s <= MAX_RATE_PER_S:
            raise KeyProblem(f"rate must be above 0 and at most {MAX_RATE_PER_S:g} per second")
        burst = max(1, math.ceil(2 * rate_per_s)) if burst is None else burst
        if burst < 1:
            raise KeyProblem("burst must be at least 1")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(
            id=key_id,
            name=name,
            sha256=digest(key),
            scopes=parse_scopes(scopes),
            rate_per_s=float(rate_per_s),
            burst=burst,
            created=_now(),
        )
        with self._locked() as records:
            records.append(record)
        return record, key

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke the key `key_id` (its record stays, marked with when)."""
        with self._locked() as records:
            for i, record in enumerate(records):
                if record.id == key_id:
                    if record.active:
                        records[i] = replace(record, revoked=_now())
                    return records[i]
        known = ", ".join(r.id for r in records) or "none"
        raise KeyProblem(f"no key {key_id!r} in {self.path} (there are: {known})")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[KeyRecord]]:
        """The records to change; written back when the block ends without an error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.read()
            yield records
            self._write(records)

    def _write(self, records: list[KeyRecord]) -> None:
        doc = {"version": _FORMAT_VERSION, "keys": [asdict(r) for r in records]}
        write_private(self.path, json.dumps(doc, indent=2) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), replacing it atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyRing:
    """The keys a gateway accepts, read from the keys file again whenever it changes.

    A missing file means no key (every request is refused); so does a file that cannot be
    read or parsed, with `problem` saying why: the edge fails closed.
    """

    def __init__(self, path: Path | None, *, recheck_s: float = 0.0) -> None:
        """`recheck_s`: `refresh` looks at the file at most this often (0: every call)."""
        self.path = path
        self.recheck_s = recheck_s
        self._stamp: tuple[int, int, int] | None | str = "unread"
        self._checked = -math.inf
        self._by_id: dict[str, KeyRecord] = {}
        self.problem: str | None = None
        self.refresh()

    def refresh(self, *, now: bool = False) -> bool:
        """Read the file again if it changed since the last read; True when it did.

        Within `recheck_s` of the last look it does not look again, unless `now`."""
        if self.path is None:
            self.problem = "no keys file is configured (GATEWAY_KEYS_FILE)"
            return False
        at = time.monotonic()
        if not now and at - self._checked < self.recheck_s:
            return False
        self._checked = at
        try:
            st = self.path.stat()
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            records = KeyFile(self.path).read()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            records, self.problem = [], f"{self.path} cannot be read: {exc}"
        else:
            self.problem = None
        self._by_id = {r.id: r for r in records if r.active}
        if not self._by_id and self.problem is None:
            self.problem = f"there is no active key in {self.path}"
        if self.problem:
            log.warning("every API call will be refused: %s", self.problem)
        else:
            log.info("%d active API keys of %d in %s", len(self._by_id), len(records), self.path)
        return True

    def authenticate(self, presented: str) -> KeyRecord | None:
        """The active key `presented` is, or None (unknown, revoked, malformed)."""
        match = _KEY.match(presented)
        if match is None:
            return None
        record = self._by_id.get(match[1])
        if record is None or not hmac.compare_digest(record.sha256, digest(presented)):
            return None
        return record


@dataclass
class TokenBucket:
    """`rate_per_s` tokens a second, up to `burst`; each request takes one."""

    rate_per_s: float
    burst: int
    tokens: float = field(init=False)
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def take(self, now: float | None = None) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        elapsed = max(0.0, now - self.at)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
        self.at = max(self.at, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """One token bucket per key, in this process (each gateway instance limits alone)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[tuple[float, int], TokenBucket]] = {}

    def take(self, record: KeyRecord, now: float | None = None) -> float:
        """0.0 when `record` may make a request now, else the seconds it must wait."""
        limits = (record.rate_per_s, record.burst)
        held = self._buckets.get(record.id)
        if held is None or held[0] != limits:  # new, or its limits changed
            held = (limits, TokenBucket(*limits))
            self._buckets[record.id] = held
        return held[1].take(now)


def dev_key(run_dir: Path, keys_file: Path | None = None) -> str:
    """The development key of the run folder `run_dir`: the one kept in `<run_dir>/dev-key`
    while the keys file still accepts it, else a new one with every scope."""
    keys = KeyFile(keys_file or run_dir / KEYS_FILE_NAME)
    kept = run_dir / DEV_KEY_FILE_NAME
    with contextlib.suppress(FileNotFoundError):
        key = kept.read_text().strip()
        ring = KeyRing(keys.path)
        if ring.authenticate(key) is not None:
            return key
    # Generous: `make run`, the tests and the benchmarks drive load through this key.
    _, key = keys.create("development", SCOPES, rate_per_s=5000, burst=10000)
    write_private(kept, key + "\n")
    return key
