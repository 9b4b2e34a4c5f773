"""The gateway's API keys (`consort.kit.keys`): hashed at rest, scopes, revocation seen by
a running key ring, the token bucket, and the run folder's development key."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from consort.dev import keys_cli
from consort.kit.keys import (
    SCOPES,
    KeyFile,
    KeyProblem,
    KeyRing,
    RateLimiter,
    TokenBucket,
    dev_key,
    parse_scopes,
)


@pytest.fixture
def keys(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "gateway-keys.json")


def test_the_file_holds_the_hash_never_the_key_and_only_its_owner_reads_it(keys: KeyFile) -> None:
    record, key = keys.create("reporting", ["text", "images"], rate_per_s=5)
    text = keys.path.read_text()
    assert key not in text and key.split("_")[2] not in text
    assert json.loads(text)["keys"][0]["sha256"] == record.sha256
    assert os.stat(keys.path).st_mode & 0o777 == 0o600
    assert record.scopes == ("text", "images") and record.burst == 10
    assert "sha256" not in record.public()
    assert KeyRing(keys.path).authenticate(key) == record


def test_a_key_that_is_unknown_altered_or_malformed_is_refused(keys: KeyFile) -> None:
    _, key = keys.create("a", ["text"])
    ring = KeyRing(keys.path)
    other = KeyFile(keys.path.with_name("other.json")).create("b", ["text"])[1]
    assert ring.authenticate(other) is None  # well formed, not in this file
    assert ring.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ring.authenticate("") is None
    assert ring.authenticate("Bearer " + key) is None


def test_a_revocation_reaches_a_running_ring_at_its_next_refresh(keys: KeyFile) -> None:
    record, key = keys.create("ci", ["ops"])
    ring = KeyRing(keys.path)
    assert ring.authenticate(key) is not None
    assert ring.refresh() is False  # unchanged: not read again
    revoked = keys.revoke(record.id)
    assert revoked.revoked is not None
    assert ring.refresh() is True
    assert ring.authenticate(key) is None
    assert keys.read()[0].revoked == revoked.revoked  # kept, marked
    assert keys.revoke(record.id).revoked == revoked.revoked  # again: no change


def test_revoking_an_unknown_id_says_which_ids_there_are(keys: KeyFile) -> None:
    record, _ = keys.create("ci", ["ops"])
    with pytest.raises(KeyProblem, match=record.id):
        keys.revoke("0123456789ab")


def test_no_file_or_a_broken_file_refuses_every_key(keys: KeyFile) -> None:
    ring = KeyRing(keys.path)
    assert ring.problem is not None and "no active key" in ring.problem
    _, key = keys.create("a", ["text"])
    assert ring.refresh() and ring.authenticate(key) is not None and ring.problem is None
    keys.path.write_text("{not json")
    assert ring.refresh()
    assert ring.authenticate(key) is None
    assert ring.problem is not None and "cannot be read" in ring.problem
    assert KeyRing(None).problem is not None


@pytest.mark.parametrize(
    ("scopes", "says"),
    [("text,secrets", "not secrets"), ("", "not none"), (" , ", "not none")],
)
def test_unknown_or_no_scopes_name_the_allowed_ones(scopes: str, says: str) -> None:
    with pytest.raises(KeyProblem, match=says) as raised:
        parse_scopes(scopes)
    assert all(scope in str(raised.value) for scope in SCOPES)


def test_scopes_parse_in_a_fixed_order_and_all_means_every_one() -> None:
    assert parse_scopes("ops, text") == ("text", "ops")
    assert parse_scopes("all") == tuple(SCOPES)


@pytest.mark.parametrize(
    ("name", "rate", "burst", "says"),
    [
        ("", 1.0, None, "name must be"),
        ("x" * 65, 1.0, None, "name must be"),
        ("ok", 0.0, None, "rate must be above 0"),
        ("ok", 1e9, None, "at most"),
        ("ok", 1.0, 0, "burst must be at least 1"),
    ],
)
def test_a_key_with_a_bad_name_or_rate_is_not_made(
    keys: KeyFile, name: str, rate: float, burst: int | None, says: str
) -> None:
    with pytest.raises(KeyProblem, match=says):
        keys.create(name, ["text"], rate, burst)
    assert keys.read() == []


def test_the_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    start = bucket.at
    assert [bucket.take(start) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(start) == pytest.approx(0.5)
    assert bucket.take(start + 0.25) == pytest.approx(0.25)  # half a token back
    assert bucket.take(start + 0.5) == 0.0
    assert bucket.take(start + 100) == 0.0  # refilled to the burst, not beyond
    assert [bucket.take(start + 100) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(start + 100) > 0


def test_the_limiter_keeps_a_bucket_per_key_and_a_new_one_when_its_limits_change(
    keys: KeyFile,
) -> None:
    a, _ = keys.create("a", ["text"], rate_per_s=1, burst=1)
    b, _ = keys.create("b", ["text"], rate_per_s=1, burst=1)
    limiter = RateLimiter()
    now = 1000.0
    assert limiter.take(a, now) == 0.0
    assert limiter.take(a, now) > 0
    assert limiter.take(b, now) == 0.0  # its own bucket
    raised = type(a)(**{**a.__dict__, "burst": 5})
    assert limiter.take(raised, now) == 0.0


def test_the_dev_key_is_kept_private_reused_and_made_again_once_revoked(tmp_path: Path) -> None:
    first = dev_key(tmp_path)
    kept = tmp_path / "dev-key"
    assert kept.read_text().strip() == first
    assert os.stat(kept).st_mode & 0o777 == 0o600
    assert dev_key(tmp_path) == first
    keys = KeyFile(tmp_path / "gateway-keys.json")
    (record,) = keys.read()
    assert record.scopes == tuple(SCOPES)
    keys.revoke(record.id)
    second = dev_key(tmp_path)
    assert second != first
    assert KeyRing(keys.path).authenticate(second) is not None


def test_the_cli_prints_the_key_once_lists_without_secrets_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from consort.dev.cli import main

    path = tmp_path / "keys.json"
    monkeypatch.setenv("GATEWAY_KEYS_FILE", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    assert keys_cli.keys_file() == path
    assert main(["keys", "create", "--name", "batch", "--scopes", "text", "--rate", "3"]) == 0
    key = capsys.readouterr().out.strip()
    (record,) = KeyFile(path).read()
    assert KeyRing(path).authenticate(key) == record and record.burst == 6
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert record.id in listed and "batch" in listed and key not in listed
    assert main(["keys", "revoke", record.id]) == 0
    assert KeyRing(path).authenticate(key) is None
    assert main(["keys", "create", "--name", "x", "--scopes", "root"]) == 1
    assert "scopes must be" in capsys.readouterr().err


def test_a_ring_with_a_recheck_interval_looks_at_the_file_at_most_that_often(
    keys: KeyFile,
) -> None:
    record, key = keys.create("ci", ["ops"])
    ring = KeyRing(keys.path, recheck_s=0.2)
    keys.revoke(record.id)
    assert ring.refresh() is False  # looked at just now, when it was made
    assert ring.authenticate(key) is not None
    assert ring.refresh(now=True) is True
    assert ring.authenticate(key) is None
    _, made = keys.create("new", ["ops"])
    assert ring.refresh() is False
    time.sleep(0.25)
    assert ring.refresh() is True
    assert ring.authenticate(made) is not None
