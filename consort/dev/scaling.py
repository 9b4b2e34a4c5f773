"""`consort scale` and `consort rollout` on the running launcher's control channel.

`install` adds `POST /scale` and `POST /rollout` to the launcher's `ControlServer` (the
system serves `GET /instances` itself); `request` is their client for the CLI. Each
change runs to completion (a scale waits for new instances to be ready and old ones to
drain) on one long-lived thread:
children are asked to die with the thread that started them (PR_SET_PDEATHSIG), and a
request's thread ends with the request. One change runs at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from consort.dev.control import ControlServer, control_url
from consort.dev.processes import StartupError
from consort.dev.system import LocalSystem


class Scaling:
    """The scale and rollout routes for `system`.

    Args:
        system: the running system to change.
        app_ids: the apps it runs (for `endpoints.json`, rewritten after each change).
    """

    def __init__(self, system: LocalSystem, app_ids: list[str]) -> None:
        self.system = system
        self.app_ids = app_ids
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consort-scaling")

    def install(self, control: ControlServer) -> None:
        """Add the routes to the launcher's control channel."""
        control.route("POST", "/scale", lambda body: self._run(self.scale, body))
        control.route("POST", "/rollout", lambda body: self._run(self.rollout, body))

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    def instances(self) -> dict[str, list[dict[str, str]]]:
        """Each app's instances: name, app URL and sidecar URL."""
        return {
            a: [
                {"name": i.name, "app": i.url, "sidecar": i.sidecar_url}
                for i in self.system.instances.get(a, [])
            ]
            for a in self.app_ids
        }

    def scale(self, body: dict[str, Any]) -> None:
        self.system.scale(str(body["app"]), int(body["replicas"]))

    def rollout(self, body: dict[str, Any]) -> None:
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        self.system.rollout(str(body["app"]), env=env)

    def _run(self, change: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            self._worker.submit(change, body).result()
        except KeyError as exc:
            return 400, {"detail": str(exc.args[0]) if exc.args else "missing field"}
        except ValueError as exc:
            return 400, {"detail": str(exc)}
        except StartupError as exc:
            return 500, {"detail": f"a new instance did not start: {exc}"}
        self.system.write_endpoints(self.app_ids)
        return 200, {"instances": self.instances()}


def request(run_dir: Path, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send one request to the control channel of the `consort run` using `run_dir`.

    Raises:
        FileNotFoundError: no `consort run` is running there.
        RuntimeError: the change failed (the message says why).
    """
    url = control_url(run_dir)
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
