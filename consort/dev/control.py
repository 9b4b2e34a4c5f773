"""The running launcher's control channel: a small HTTP server on loopback.

`consort run` serves it; `consort status` (and other commands run from another shell) find
it through `<run dir>/control.json`. `GET /status` is built in; more routes are added with
`ControlServer.route`, each a function of the request's JSON body that answers
`(status code, JSON-able body)`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

Handler = Callable[[dict[str, Any]], tuple[int, Any]]


class ControlServer:
    """Serves the launcher's routes on 127.0.0.1 (a port the kernel picks).

    Args:
        run_dir: where `control.json` (its URL and the launcher's pid) is written.
        status: what `GET /status` answers.
    """

    def __init__(self, run_dir: Path, status: Callable[[], Any]) -> None:
        self.run_dir = run_dir
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/status"): lambda _: (200, status())
        }
        self._server: ThreadingHTTPServer | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Add a route, e.g. `route("POST", "/scale", lambda body: (200, {...}))`.

        Args:
            method: the HTTP method, upper case.
            path: the exact path.
            handler: called with the JSON body ({} when none); returns (status, body).
        """
        self.routes[(method, path)] = handler

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        """Serve in a thread; write `control.json`; return the URL (once: a second call
        answers the same URL)."""
        if self._server is not None:
            return self.url
        routes = self.routes

        class Request(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                handler = routes.get((method, self.path.split("?", 1)[0]))
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    code, reply = handler(body) if handler else (404, {"detail": "no such route"})
                except Exception as exc:  # noqa: BLE001 - answered, not raised into the server
                    code, reply = 500, {"detail": repr(exc)}
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: the launcher's console is for the operator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Request)
        threading.Thread(target=self._server.serve_forever, name="control", daemon=True).start()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "control.json").write_text(
            json.dumps({"url": self.url, "pid": os.getpid()}, indent=2)
        )
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        (self.run_dir / "control.json").unlink(missing_ok=True)


def control_url(run_dir: Path) -> str:
    """The running launcher's control URL, from `control.json`."""
    path = run_dir / "control.json"
    try:
        return str(json.loads(path.read_text())["url"])
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise FileNotFoundError(f"{path} not found: is Consort running (`make run`)?") from exc


def call(run_dir: Path, method: str, path: str, body: Any = None, timeout_s: float = 30) -> Any:
    """Call a route of the running launcher; its JSON answer (raises on an error status)."""
    response = httpx.request(method, f"{control_url(run_dir)}{path}", json=body, timeout=timeout_s)
    response.raise_for_status()
    return response.json()
