"""An app answers only its own sidecar: every request must carry the sidecar's app token.

daprd sends `dapr-api-token: <APP_API_TOKEN>` with every call it makes to its app
(invocations, event deliveries, actor and workflow calls, its subscription and config
queries); the launcher gives the app and its sidecar the same token. A request without it
(another process on the host calling the app's port directly, a forged event on
`/events/*`) gets 401. The health probes (`/healthz`, `/readyz`) and `/metrics` stay open:
launchers, daprd's health checks and scrapers call them without a token, and they carry
no payloads. The gateway's public API (`/v1`, its docs) is reached from outside, not
through its sidecar: it is guarded by API keys instead.

Without `APP_API_TOKEN` in the environment the app accepts every caller (the app runs
outside a secured launcher, e.g. in a unit test).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from consort.kit.errors import problem_response

#: The header daprd sends the app token in (Dapr's name).
TOKEN_HEADER = "dapr-api-token"
#: Open without a token.
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


class AppTokenGuard:
    """401 for a request without the sidecar's token, but on open and public paths."""

    def __init__(self, app: ASGIApp, token: str | None = None, public: Sequence[str] = ()) -> None:
        self.app = app
        self.token = (token if token is not None else os.environ.get("APP_API_TOKEN", "")).encode()
        self.open = tuple(OPEN_PATHS) + tuple(public)

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.open):
            return True
        given = dict(scope.get("headers") or []).get(TOKEN_HEADER.encode(), b"")
        return hmac.compare_digest(given, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            scope.get("path", ""),
            401,
            "Unauthorized",
            f"this app answers its own Dapr sidecar only: send the `{TOKEN_HEADER}` header",
            slug="unauthorized",
        )
        await response(scope, receive, send)
