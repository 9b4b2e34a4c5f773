"""The public edge through the real system: no key 401, a revoked key 401 from the next
request on (no restart), a key without the scope 403, a key over its rate 429 with
Retry-After; security headers on every answer, no CORS unless configured."""

from __future__ import annotations

import time

import httpx
import pytest

from consort.dev.cli import main as consort
from consort.dev.system import LocalSystem
from consort.kit.keys import KEYS_FILE_NAME
from tests.integration.helpers import eventually, unique_text


def make_key(
    system: LocalSystem, capsys: pytest.CaptureFixture[str], scopes: str, *extra: str
) -> str:
    """A new key from `consort keys create` on the system's keys file."""
    capsys.readouterr()
    keys_file = str(system.run_dir / KEYS_FILE_NAME)
    args = ["keys", "create", "--file", keys_file, "--name", "test", "--scopes", scopes, *extra]
    assert consort(args) == 0
    return capsys.readouterr().out.strip()


def sentiment(system: LocalSystem, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{system.url('gateway')}/v1/text/sentiment",
        json={"text": unique_text()},
        headers=headers,
        timeout=10,
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_key_the_gateway_answers_401(system: LocalSystem) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": "csk_x"}):
        response = sentiment(system, headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith('Bearer realm="consort"')
        assert response.json()["trace_id"] == response.headers["x-trace-id"]
    # What is not under /v1 needs no key: probes, the API's description.
    assert httpx.get(f"{system.url('gateway')}/healthz").status_code == 200
    described = httpx.get(f"{system.url('gateway')}/openapi.json").json()
    assert set(described["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_a_revoked_key_is_refused_within_a_second_without_a_restart(
    system: LocalSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(system, capsys, "text")
    assert sentiment(system, bearer(key)).status_code == 200
    assert sentiment(system, {"X-API-Key": key}).status_code == 200
    pid = system.supervisor.get("gateway").pid
    listed = consort(["keys", "list", "--file", str(system.run_dir / KEYS_FILE_NAME)])
    assert listed == 0 and key not in capsys.readouterr().out
    key_id = key.split("_")[1]
    revoked_at = time.monotonic()
    assert consort(["keys", "revoke", key_id, "--file", str(system.run_dir / KEYS_FILE_NAME)]) == 0
    refused = eventually(
        lambda: sentiment(system, bearer(key)), lambda r: r.status_code == 401, deadline_s=2
    )
    assert time.monotonic() - revoked_at < 1.5
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert system.supervisor.get("gateway").pid == pid  # the same process, not restarted
    assert sentiment(system, system.api_headers).status_code == 200  # the others still work


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/ops/dead-letters/metrics.observed", None),
        ("POST", "/v1/ops/recommender/retrain", None),
        ("GET", "/v1/catalog", None),
        ("POST", "/v1/workflows/triage-x1/events/decision", {"decision": "approve"}),
        ("POST", "/v1/images/analyze", None),
    ],
)
def test_a_key_without_the_scope_gets_403_naming_it(
    system: LocalSystem,
    capsys: pytest.CaptureFixture[str],
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    key = make_key(system, capsys, "text,timeseries")
    response = httpx.request(
        method, f"{system.url('gateway')}{path}", json=body, headers=bearer(key), timeout=10
    )
    assert response.status_code == 403, response.text
    needed = "images" if "images" in path else "ops"
    assert f"`{needed}`" in response.json()["detail"]
    assert response.json()["type"] == "urn:consort:problem:missing-scope"
    # Its own scope still reaches the service through both sidecars.
    assert sentiment(system, bearer(key)).status_code == 200


def test_over_its_rate_a_key_gets_429_with_retry_after_then_serves_again(
    system: LocalSystem, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key(system, capsys, "text", "--rate", "0.5", "--burst", "3")
    statuses = [sentiment(system, bearer(key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = sentiment(system, bearer(key))
    assert refused.status_code == 429, refused.text
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert refused.json()["type"] == "urn:consort:problem:rate-limited"
    assert sentiment(system, system.api_headers).status_code == 200  # another key's own rate
    time.sleep(retry_after)
    assert sentiment(system, bearer(key)).status_code == 200


def test_answers_carry_security_headers_and_no_cors(system: LocalSystem) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    served = sentiment(system, {**system.api_headers, **origin})
    refused = sentiment(system, origin)
    for response in (served, refused):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "access-control-allow-origin" not in response.headers
    docs = httpx.get(f"{system.url('gateway')}/docs")
    assert docs.status_code == 200
    assert "'sha256-" in docs.headers["content-security-policy"]
