"""Secure by default, through the real system: every refused path is asked and refused.

mTLS between sidecars (identities from sentry), the Dapr API token on every sidecar, the
app token on every app, each app's access-control policy (default deny), the pub/sub
topic scopes, the profile's servers' passwords, and every listener on the loopback interface.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2

from consort.dev.processes import free_port, http_ok, wait_until
from consort.dev.servers import PG_BIN
from consort.dev.system import LocalSystem

AI_APPS = ("sentiment", "nlp", "vision", "forecast", "anomaly", "recommender")


def test_an_app_refuses_a_caller_without_its_sidecars_token(system: LocalSystem) -> None:
    url = f"{system.url('sentiment')}/v1/sentiment"
    refused = httpx.post(url, json={"text": "fine"}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "dapr-api-token" in refused.json()["detail"]
    # A forged event is refused the same way.
    forged = httpx.post(f"{system.url('gateway')}/events/texts-analyzed", json={}, timeout=10)
    assert forged.status_code == 401
    # With the token its sidecar sends, the same call is served; health stays open.
    served = httpx.post(url, json={"text": "fine"}, headers=system.app_headers("sentiment"))
    assert served.status_code == 200
    assert httpx.get(f"{system.url('sentiment')}/readyz", timeout=10).status_code == 200


def test_a_sidecar_refuses_its_api_without_the_dapr_token(system: LocalSystem) -> None:
    sidecar = system.sidecar_url("sentiment")
    assert httpx.get(f"{sidecar}/v1.0/metadata", timeout=10).status_code == 401
    state = httpx.get(f"{sidecar}/v1.0/state/statestore/anything", timeout=10)
    assert state.status_code == 401
    assert httpx.get(f"{sidecar}/v1.0/healthz", timeout=10).status_code == 204
    token = system.sidecar_headers("sentiment")
    assert httpx.get(f"{sidecar}/v1.0/metadata", headers=token, timeout=10).status_code == 200

    # The gRPC API as well.
    port = system.run_file.app("sentiment").dapr_grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = [("dapr-api-token", token["dapr-api-token"])]
        reply = stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=metadata, timeout=10)
        assert reply.id == "sentiment"


def _invoke(system: LocalSystem, caller: str, target: str, method: str, **kw: object):  # type: ignore[no-untyped-def]
    url = f"{system.sidecar_url(caller)}/v1.0/invoke/{target}/method/{method}"
    return httpx.request(
        str(kw.pop("verb", "POST")), url, headers=system.sidecar_headers(caller), timeout=15, **kw
    )


def test_the_access_policy_refuses_callers_and_operations_it_does_not_allow(
    system: LocalSystem,
) -> None:
    values = [10.0 + v % 7 for v in range(40)]
    body = {"series": [{"id": "s", "values": values, "horizon": 3, "model": "ets"}]}
    # An AI service may not call another one.
    denied = _invoke(system, "sentiment", "forecast", "v1/forecasts", json=body)
    assert denied.status_code == 403, denied.text
    assert "access control policy has denied access" in denied.text
    assert "spiffe://public/ns/default/sentiment" in denied.text  # known by its certificate
    # The orchestrator may call forecast, but only the operation its workflow uses.
    assert _invoke(system, "orchestrator", "forecast", "v1/forecasts", json=body).status_code == 200
    other = _invoke(system, "orchestrator", "forecast", "info", verb="GET")
    assert other.status_code == 403, other.text
    # The gateway reaches every AI service; nothing reaches the gateway through Dapr.
    for app_id in AI_APPS:
        assert _invoke(system, "gateway", app_id, "info", verb="GET").status_code == 200
    inward = _invoke(system, "orchestrator", "gateway", "info", verb="GET")
    assert inward.status_code == 403, inward.text


def test_plaintext_grpc_to_a_sidecars_internal_port_fails(system: LocalSystem) -> None:
    instance = system.instances["sentiment"][0]
    with grpc.insecure_channel(instance.address) as channel:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=5)


@pytest.fixture
def intruder(system: LocalSystem, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A daprd of an app id nobody knows, in the same name resolution, WITHOUT mTLS (no
    certificate from sentry), with no app and no components. Yields its HTTP API root and
    its log (it never becomes fully healthy: placement and scheduler refuse it too, so
    only its outbound side is waited for)."""
    spec = dataclasses.replace(
        system.run_file.app("forecast"),
        app_id="intruder",
        dapr_http_port=free_port(),
        dapr_grpc_port=free_port(),
        metrics_port=free_port(),
    )
    argv = _without_app_and_mtls(system.daprd_argv(spec))
    log = (tmp_path / "intruder-daprd.log").open("wb")
    env = {**os.environ, "CONSORT_RUN_DIR": str(system.run_dir), "CONSORT_ZIPKIN_URL": ""}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    try:
        url = f"http://127.0.0.1:{spec.dapr_http_port}"
        wait_until("intruder daprd", http_ok(f"{url}/v1.0/healthz/outbound"), 60, [])
        yield url, tmp_path / "intruder-daprd.log"
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _without_app_and_mtls(argv: list[str]) -> list[str]:
    """`argv` minus its app, components, health checks and mTLS."""
    dropped_with_value = {"--app-port", "--sentry-address", "--resources-path"}
    dropped = {"--enable-mtls", "--enable-app-health-check"}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in dropped_with_value or arg.startswith("--app-health"):
            skip = True
        elif arg not in dropped:
            kept.append(arg)
    return kept


def test_a_sidecar_without_a_certificate_from_sentry_reaches_nobody(
    system: LocalSystem, intruder: tuple[str, Path]
) -> None:
    url, log = intruder
    refused = httpx.get(f"{url}/v1.0/invoke/sentiment/method/info", timeout=30)
    assert refused.status_code >= 400, refused.text
    assert "sentiment" in refused.text
    # Nor the control plane: placement and scheduler speak mTLS only.
    assert "error reading server preface" in log.read_text()
    # The same call from a sidecar with its certificate (and the policy's leave) is served.
    assert _invoke(system, "gateway", "sentiment", "info", verb="GET").status_code == 200


def test_an_app_publishes_only_the_topics_of_its_contract(system: LocalSystem) -> None:
    # sentiment publishes texts.analyzed and reviews.sentiment-scored, not reviews.submitted.
    url = f"{system.sidecar_url('sentiment')}/v1.0/publish/pubsub/reviews.submitted"
    refused = httpx.post(url, json={"x": 1}, headers=system.sidecar_headers("sentiment"))
    assert refused.status_code == 403, refused.text
    assert "reviews.submitted" in refused.text
    # forecast publishes nothing: it does not even load the pub/sub component.
    url = f"{system.sidecar_url('forecast')}/v1.0/publish/pubsub/texts.analyzed"
    absent = httpx.post(url, json={"x": 1}, headers=system.sidecar_headers("forecast"))
    assert absent.status_code in (400, 404), absent.text
    assert "not found" in absent.text


def _redis_refuses(system: LocalSystem) -> None:
    with socket.create_connection(("127.0.0.1", system.ports.redis), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(200).startswith(b"-NOAUTH")
        conn.sendall(b"AUTH " + system.secrets.redis_password.encode() + b"\r\n")
        assert conn.recv(200).startswith(b"+OK")
        conn.sendall(b"PING\r\n")
        assert conn.recv(200).startswith(b"+PONG")


def _postgres_refuses(system: LocalSystem) -> None:
    dsn = f"host=127.0.0.1 port={system.ports.postgres} user=consort dbname=consort"
    psql = [str(PG_BIN / "psql"), "-w", "-tA", "-c", "select 1", dsn]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    refused = subprocess.run(psql, capture_output=True, text=True, env=env, check=False)
    assert refused.returncode != 0 and "password" in refused.stderr, refused
    wrong = subprocess.run(
        psql, capture_output=True, text=True, env={**env, "PGPASSWORD": "guess"}, check=False
    )
    assert "password authentication failed" in wrong.stderr, wrong
    let_in = {**env, "PGPASSWORD": system.secrets.postgres_password}
    ok = subprocess.run(psql, capture_output=True, text=True, env=let_in, check=False)
    assert ok.stdout.strip() == "1", ok


def _amqp_login(port: int, user: str, password: str) -> bool:
    """An AMQP 0-9-1 handshake with PLAIN credentials: whether the broker let us in (it
    answers Connection.Tune) or shut the door (it closes the connection)."""

    def frame(payload: bytes) -> bytes:
        return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"

    def read_method(conn: socket.socket) -> tuple[int, int] | None:
        head = conn.recv(7, socket.MSG_WAITALL)
        if len(head) < 7:
            return None
        size = struct.unpack(">I", head[3:])[0]
        body = conn.recv(size + 1, socket.MSG_WAITALL)
        cls, method = struct.unpack(">HH", body[:4])
        return cls, method

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"AMQP\x00\x00\x09\x01")
        assert read_method(conn) == (10, 10)  # Connection.Start
        response = f"\x00{user}\x00{password}".encode()
        start_ok = (
            struct.pack(">HH", 10, 11)
            + struct.pack(">I", 0)  # client properties: an empty table
            + bytes([5]) + b"PLAIN"
            + struct.pack(">I", len(response)) + response
            + bytes([5]) + b"en_US"
        )  # fmt: skip
        conn.sendall(frame(start_ok))
        try:
            return read_method(conn) == (10, 30)  # Connection.Tune
        except ConnectionResetError:
            return False


def _rabbitmq_refuses(system: LocalSystem) -> None:
    port = system.ports.rabbitmq
    assert not _amqp_login(port, "consort", "guess")
    assert not _amqp_login(port, "guest", "guest")  # the default user is not there
    assert _amqp_login(port, "consort", system.secrets.rabbitmq_password)


def test_the_servers_refuse_a_client_without_the_password(system: LocalSystem) -> None:
    """Each server of the profile (docs/profiles.md) lets in only the password the
    components get from the secret store."""
    checks = {"redis": _redis_refuses, "postgres": _postgres_refuses, "rabbitmq": _rabbitmq_refuses}
    assert system.servers, "the profile runs no server"
    for server in system.servers:
        checks[server](system)


def test_secrets_are_private_files_and_never_logged(system: LocalSystem) -> None:
    secrets_dir = system.secrets.dir
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    tokens = [
        system.secrets.redis_password,
        system.secrets.postgres_password,
        system.secrets.rabbitmq_password,
    ]
    for app_id in ("gateway", *AI_APPS):
        tokens += [system.secrets.dapr_api_token(app_id), system.secrets.app_api_token(app_id)]
    for path in secrets_dir.glob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for log in system.logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not [t for t in tokens if t in text], f"a secret is written in {log}"


def _listening(pids: set[int]) -> set[str]:
    """The local addresses (`ip:port`) TCP sockets of `pids` listen on."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.add(f"{_ip(address, width)}:{int(port, 16)}")
    return found


def _ip(hex_address: str, width: int) -> str:
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_address)[::-1])
    words = [bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def test_every_listener_is_on_the_loopback_interface(system: LocalSystem) -> None:
    pids = {p.popen.pid for p in system.supervisor.procs if p.popen and p.alive()}
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", ",".join(map(str, pids))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    listening = _listening(pids | {int(c) for c in children})
    assert len(listening) > 20, listening  # every app, sidecar and server was seen
    exposed = sorted(a for a in listening if not a.startswith(("127.0.0.1:", "::1:")))
    assert exposed == [], exposed


def test_sentry_never_restarts_its_server_under_the_sidecars(system: LocalSystem) -> None:
    # A sentry that writes a fresh root and issuer then reloads on its own writes, 2 s
    # apart, and a sidecar asking for its identity in a gap exits; the launcher has the
    # files written by a first sentry, so the one the sidecars use never reloads.
    log = (system.logs / "sentry.log").read_text()
    assert "Issuer credentials changed" not in log, log[-3000:]
    assert system.secrets.trust_anchors_file.exists()
