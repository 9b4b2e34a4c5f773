"""The benchmarks' Go load generator (`bench.load.http_loop`), against a local HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import http_loop


class Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the services serve
    seen: list[tuple[str, str, str, str]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"])).decode()
        with self.lock:
            self.seen.append((self.command, self.path, self.headers["x-key"], body))
        status = 422 if json.loads(body)["text"] == "bad" else 200
        answer = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recording.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_every_target_is_sent_in_turn_and_failures_are_counted(server: str) -> None:
    targets = [{"url": f"{server}/a", "json": {"text": t}} for t in ("one", "two", "bad")]
    run = asyncio.run(
        http_loop(
            targets,
            method="POST",
            headers={"x-key": "k1"},
            requests=30,
            concurrency=4,
            warmup=3,
        )
    )
    assert (run.requests, run.errors, run.concurrency) == (30, 10, 4)
    assert len(Recording.seen) == 33
    assert {s[:3] for s in Recording.seen} == {("POST", "/a", "k1")}
    bodies = [json.loads(s[3])["text"] for s in Recording.seen]
    assert sorted(bodies) == sorted(["one", "two", "bad"] * 11)
    assert 0 < run.p50_ms <= run.p90_ms <= run.p99_ms
    assert run.throughput_rps > 0
    assert run.client_cpu_ms_per_request is not None and run.client_cpu_ms_per_request >= 0


def test_a_run_where_every_request_fails_says_why(server: str) -> None:
    with pytest.raises(RuntimeError, match="every request failed: status 422"):
        asyncio.run(
            http_loop(
                [{"url": f"{server}/a", "json": {"text": "bad"}}],
                method="POST",
                requests=3,
                concurrency=1,
            )
        )
