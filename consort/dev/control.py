"""The control endpoint of a running `consort run`: `consort scale` and `consort rollout`
reach it from another shell.

A small HTTP server on loopback, on a free port written to `<run dir>/control.json`. Each
request runs to completion (a scale waits for new instances to be ready and old ones to
drain) and answers with the app's instances; one change runs at a time.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from consort.dev.processes import StartupError
from consort.dev.system import LocalSystem


class ControlServer:
    """Serves `POST /scale`, `POST /rollout` and `GET /instances` for `system`.

    Args:
        system: the running system to change.
        app_ids: the apps it runs (for `endpoints.json`, rewritten after each change).
    """

    def __init__(self, system: LocalSystem, app_ids: list[str]) -> None:
        self.system = system
        self.app_ids = app_ids
        self.path = system.run_dir / "control.json"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        # Changes run on one long-lived thread, not the request's: children are asked to
        # die with the thread that started them (PR_SET_PDEATHSIG), and a request's thread
        # ends with the request.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consort-control")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()
        self.path.write_text(json.dumps({"url": self.url}))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._worker.shutdown(wait=True)
        self.path.unlink(missing_ok=True)

    def instances(self) -> dict[str, list[dict[str, str]]]:
        """Each app's instances: name, app URL and sidecar URL."""
        return {
            a: [
                {"name": i.name, "app": i.url, "sidecar": i.sidecar_url}
                for i in self.system.instances.get(a, [])
            ]
            for a in self.app_ids
        }

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Run one control request; returns (HTTP status, JSON body)."""
        system = self.system
        try:
            if path == "/scale":
                system.scale(str(body["app"]), int(body["replicas"]))
            elif path == "/rollout":
                env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
                system.rollout(str(body["app"]), env=env)
            elif path != "/instances":
                return 404, {"detail": f"no {path}: try /scale, /rollout, /instances"}
        except KeyError as exc:
            return 400, {"detail": str(exc.args[0]) if exc.args else "missing field"}
        except ValueError as exc:
            return 400, {"detail": str(exc)}
        except StartupError as exc:
            return 500, {"detail": f"a new instance did not start: {exc}"}
        system.write_endpoints(self.app_ids)
        return 200, {"instances": self.instances()}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        control = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self._answer(*control._worker.submit(control.handle, self.path, {}).result())

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._answer(400, {"detail": "the body is not JSON"})
                    return
                self._answer(*control._worker.submit(control.handle, self.path, body).result())

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the launcher prints what changed

        return Handler


def request(run_dir: Path, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request to the control endpoint of the `consort run` using `run_dir`.

    Raises:
        FileNotFoundError: no `consort run` is running there.
        RuntimeError: the change failed (the message says why).
    """
    try:
        url = json.loads((run_dir / "control.json").read_text())["url"]
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{run_dir / 'control.json'} not found: is Consort running (`make run`)?"
        ) from exc
    # A rollout waits for every new instance and every drain: minutes, not seconds.
    timeout = httpx.Timeout(600, connect=5)
    if body is None:
        response = httpx.get(f"{url}{path}", timeout=timeout)
    else:
        response = httpx.post(f"{url}{path}", json=body, timeout=timeout)
    answer: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise RuntimeError(answer.get("detail", response.text))
    return answer
