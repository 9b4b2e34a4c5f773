"""What every gateway route uses: the service kit, and calls to the AI services through
the sidecar with their failures mapped to problems.

Routes live in one module per area, `apps.gateway.routes.<area>` (each an `APIRouter`,
included under `/v1` by `main`); they take the sidecar as `SidecarDep`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from apps.gateway.settings import GatewaySettings
from consort.contracts.common import Problem
from consort.kit.dapr import Reply, Sidecar, TargetUnavailable
from consort.kit.errors import PROBLEM_JSON, ProblemError, unavailable
from consort.kit.service import ServiceKit

log = logging.getLogger("gateway")
settings = GatewaySettings()
kit = ServiceKit(settings, version="1.0.0")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in {
        400: "The body is not valid JSON.",
        413: "The body is over the size limit.",
        415: "The body is not JSON.",
        422: "A field breaks the contract; `errors` names each one and its limit.",
        503: "The AI service did not answer in time; retry after the `Retry-After` seconds.",
    }.items()
}


def sidecar() -> Sidecar:
    return kit.sidecar


SidecarDep = Annotated[Sidecar, Depends(sidecar)]


async def call_service(sc: Sidecar, app_id: str, method: str, payload: BaseModel) -> Any:
    """Invoke `method` on `app_id` with a JSON body and return its JSON."""
    reply = await forward(sc, app_id, method, json=payload.model_dump(mode="json"))
    return reply.json()


async def forward(
    sc: Sidecar,
    app_id: str,
    method: str,
    *,
    timeout_s: float | None = None,
    **request: Any,
) -> Reply:
    """Invoke `method` on `app_id` and return its successful reply, mapping failures to
    problems: unreachable or too slow is a 503, the service's own 4xx problem passes on."""
    timeout_s = timeout_s or settings.invoke_timeout_s
    try:
        response = await sc.invoke(app_id, method, timeout_s=timeout_s, **request)
    except TargetUnavailable as exc:
        log.warning("%s unavailable: %s", app_id, exc)
        raise unavailable(
            "Service unavailable",
            f"The {app_id} service did not answer within {timeout_s:g} s; try again shortly.",
            retry_after_s=2,
        ) from exc
    if response.status < 400:
        return response
    if response.status < 500 and response.content_type.startswith(PROBLEM_JSON):
        # The service's own problem (its limits are the contract's): pass it on unchanged.
        raise _Passthrough(response.status, response.json())
    log.error("%s answered %s: %s", app_id, response.status, response.text[:300])
    raise ProblemError(
        503 if response.status in (429, 502, 503, 504) else 502,
        "Upstream failure",
        f"The {app_id} service failed (HTTP {response.status}).",
        slug="upstream-failure",
        headers={"Retry-After": "2"},
    )


class _Passthrough(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def install_passthrough(app: FastAPI) -> None:
    """Answer a service's own 4xx problem (raised by `forward`) unchanged."""

    @app.exception_handler(_Passthrough)
    async def _passthrough(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _Passthrough)
        return JSONResponse(exc.body, status_code=exc.status, media_type=PROBLEM_JSON)
