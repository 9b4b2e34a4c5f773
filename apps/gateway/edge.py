"""The public edge: API keys, their scopes and rates, CORS and security headers.

Every request under `/v1` needs a key (`Authorization: Bearer <key>` or `X-API-Key`);
`ApiKeyMiddleware` refuses one without a valid key (401) or over its rate (429, with
`Retry-After`) before the body is read, and each route names the scope it needs with
`requires(...)` (403 without it), which the OpenAPI document declares. Health, readiness,
`/docs`, `/openapi.json` and what daprd calls (`/dapr/*`, `/events/*`) are not under `/v1`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.params import Security as SecurityParam
from fastapi.responses import HTMLResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apps.gateway.settings import GatewaySettings
from consort.kit.errors import ProblemError
from consort.kit.keys import KeyRecord, KeyRing, RateLimiter

PROTECTED_PREFIX = "/v1"
#: Where the middleware leaves the caller's key for `requires`.
KEY_SCOPE_FIELD = "consort.api_key"
API_KEY_HEADER = "x-api-key"
CHALLENGE = 'Bearer realm="consort"'
log = logging.getLogger("gateway")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key from `consort keys create` (`make run` prints one).",
)
api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The same API key in a header of its own.",
)


def _presented(headers: dict[bytes, bytes]) -> str | None:
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else ""
    key = headers.get(API_KEY_HEADER.encode(), b"").decode("latin-1").strip()
    return key or None


class ApiKeyMiddleware:
    """Authenticate and rate-limit every request under `/v1` before the app reads it."""

    def __init__(self, app: ASGIApp, ring: KeyRing, limiter: RateLimiter) -> None:
        self.app = app
        self.ring = ring
        self.limiter = limiter
        self._told = False  # that no keys file is configured, once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        problem = self._check(scope)
        if problem is not None:
            await problem.response(path)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> ProblemError | None:
        """None when the request may go on (its key in the scope), else the refusal."""
        presented = _presented(dict(scope.get("headers") or []))
        if presented is None:
            return _unauthorized(
                "API key required",
                "Send an API key as `Authorization: Bearer <key>` (or `X-API-Key`); "
                "`consort keys create` makes one.",
            )
        self.ring.refresh()
        if self.ring.path is None and not self._told:
            log.warning("every API key is refused: %s", self.ring.problem)
            self._told = True
        record = self.ring.authenticate(presented)
        if record is None and self.ring.refresh(now=True):  # a key made a moment ago
            record = self.ring.authenticate(presented)
        if record is None:
            return _unauthorized(
                "Invalid API key",
                "This API key is unknown or revoked.",
                challenge=f'{CHALLENGE}, error="invalid_token"',
            )
        wait_s = self.limiter.take(record)
        if wait_s > 0:
            retry_after = max(1, math.ceil(wait_s))
            return ProblemError(
                429,
                "Too many requests",
                f"Key {record.id} may make {record.rate_per_s:g} requests per second "
                f"(bursts of {record.burst}) on each gateway instance; retry after "
                f"{retry_after} s.",
                slug="rate-limited",
                headers={"Retry-After": str(retry_after)},
            )
        scope[KEY_SCOPE_FIELD] = record
        return None


def _unauthorized(title: str, detail: str, challenge: str = CHALLENGE) -> ProblemError:
    return ProblemError(
        401, title, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge}
    )


async def authorize(
    security: SecurityScopes,
    request: Request,
    # Declared for the OpenAPI document; the middleware has read the key already.
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    _header: Annotated[str | None, Depends(api_key_header)],
) -> KeyRecord:
    """The caller's key, if it holds every scope the route requires (403 otherwise)."""
    record = request.scope.get(KEY_SCOPE_FIELD)
    if not isinstance(record, KeyRecord):  # the middleware did not run: refuse
        raise _unauthorized("API key required", "This route needs an API key.")
    missing = [s for s in security.scopes if not record.allows(s)]
    if missing:
        raise ProblemError(
            403,
            "Missing scope",
            f"This route needs the scope `{'`, `'.join(missing)}`; key {record.id} "
            f"({record.name}) has {', '.join(record.scopes)}.",
            slug="missing-scope",
        )
    return record


def requires(scope: str) -> SecurityParam:
    """The dependency of a route that needs `scope` (`dependencies=[requires("ops")]`)."""
    return Security(authorize, scopes=[scope])  # type: ignore[no-any-return]


class SecurityHeadersMiddleware:
    """Headers that keep browsers from sniffing, framing, caching or leaking responses;
    a response that sets one itself (the docs page's policy) keeps its own."""

    HEADERS = {
        b"x-content-type-options": b"nosniff",
        b"x-frame-options": b"DENY",
        b"referrer-policy": b"no-referrer",
        b"cache-control": b"no-store",
        b"cross-origin-resource-policy": b"same-origin",
        b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
    }

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.HEADERS.items() if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_page(app: FastAPI) -> tuple[str, str]:
    """Swagger UI's page, and a policy that lets only its assets and inline script run."""
    assert app.openapi_url is not None
    page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI")
    html = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    cdn = "https://cdn.jsdelivr.net"
    policy = (
        f"default-src 'none'; script-src {cdn} {hashes}; style-src {cdn} 'unsafe-inline'; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return html, policy


def install_edge(app: FastAPI, settings: GatewaySettings) -> None:
    """The docs page, CORS when origins are configured, and the security headers (outermost,
    so every answer carries them)."""
    if app.docs_url is not None:
        raise ValueError("create the app with docs_url=None: the edge serves /docs itself")
    html, policy = docs_page(app)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "traceparent"],
            expose_headers=["Retry-After", "x-trace-id"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)


def api_key_middleware(settings: GatewaySettings) -> dict[str, Any]:
    """The arguments of `ApiKeyMiddleware` for `settings`."""
    # The file is looked at every quarter second, not on every request (a stat per request
    # was 2 % of the gateway's CPU): a revoked key is refused within that; an unknown key
    # makes it look at once, so a key just made is never refused.
    return {"ring": KeyRing(settings.keys_file, recheck_s=0.25), "limiter": RateLimiter()}
