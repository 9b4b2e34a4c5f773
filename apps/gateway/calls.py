"""What every gateway route uses: the service kit, and calls to the AI services through
the sidecar with their failures mapped to problems.

Routes live in one module per area, `apps.gateway.routes.<area>` (each an `APIRouter`,
included under `/v1` by `main`); they take the sidecar as `SidecarDep`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
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
        401: "No API key, or one that is unknown or revoked (`WWW-Authenticate` says how).",
        403: "The API key lacks the scope this route needs; `detail` names it.",
        415: "The body is not JSON.",
        422: "A field breaks the contract; `errors` names each one and its limit.",
        429: "The API key is over its rate; retry after the `Retry-After` seconds.",
        503: "The AI service did not answer in time; retry after the `Retry-After` seconds.",
    }.items()
}


async def sidecar() -> Sidecar:
    # async: a plain function dependency would be run in a worker thread, per request.
    return kit.sidecar


SidecarDep = Annotated[Sidecar, Depends(sidecar)]


JSON_BODY = {"content-type": "application/json"}


async def send(
    sc: Sidecar, app_id: str, method: str, payload: BaseModel, timeout_s: float | None = None
) -> Reply:
    """Invoke `method` on `app_id` with `payload` as its JSON body (`forward`'s mapping of
    failures to problems)."""
    return await forward(
        sc,
        app_id,
        method,
        data=payload.model_dump_json().encode(),
        headers=JSON_BODY,
        timeout_s=timeout_s,
    )


async def relay(
    sc: Sidecar, app_id: str, method: str, payload: BaseModel, timeout_s: float | None = None
) -> Response:
    """Invoke `method` on `app_id` with a JSON body and pass its JSON answer on as it
    came. The service answered in the same contract (`consort/contracts`, checked on both
    sides in CI), so parsing and validating it again here only spent the gateway's CPU
    (over a third of it for a batch of anomaly points); the route's `response_model` still
    documents it."""
    return passed_on(await send(sc, app_id, method, payload, timeout_s))


def passed_on(reply: Reply) -> Response:
    """A service's successful JSON answer, as the gateway's (the body untouched)."""
    return json_body(reply.body, reply.status)


def json_body(body: bytes, status: int = 200) -> Response:
    """JSON already serialised (a service's answer, or a model dumped once), answered as
    it is: FastAPI would otherwise validate and serialise it again for `response_model`."""
    return Response(content=body, status_code=status, media_type="application/json")


async def forward(
    sc: Sidecar,
    app_id: str,
    method: str,
    *,
    timeout_s: float | None = None,
    **request: Any,
) -> Reply:
    """Invoke `method` on `app_id` and return its successful reply, mapping failures to
    problems.

    The service's own problem passes on unchanged with its `Retry-After`: a 4xx (the
    caller's mistake, the limits being the contract's) and a 429 or 503 of its own type
    (`model-not-ready`, `time-budget-exceeded`). A service that cannot be reached, is too
    slow, or whose breaker is open is the gateway's 503 `service-unavailable`; any other
    failure of the service is a 502 `upstream-failure`.
    """
    timeout_s = timeout_s or settings.invoke_timeout_s
    try:
        response = await sc.invoke(app_id, method, timeout_s=timeout_s, **request)
    except TargetUnavailable as exc:
        log.warning("%s unavailable: %s", app_id, exc)
        raise unavailable(
            "Service unavailable",
            f"The {app_id} service did not answer within {timeout_s:g} s"
            + (" and is cut off for a few seconds" if "circuit breaker" in str(exc) else "")
            + "; try again shortly.",
            retry_after_s=2,
        ) from exc
    if response.status < 400:
        return response
    if _passes_on(response):
        raise _Passthrough(response)
    log.error("%s answered %s: %s", app_id, response.status, response.text[:300])
    failure = f"The {app_id} service failed (HTTP {response.status})."
    if response.status in (429, 502, 503, 504):
        raise unavailable("Upstream failure", failure, slug="upstream-failure")
    raise ProblemError(
        502, "Upstream failure", failure, slug="upstream-failure", headers={"Retry-After": "2"}
    )


def _passes_on(response: Reply) -> bool:
    """True for a problem the service answered itself, which the client should see."""
    if not response.content_type.startswith(PROBLEM_JSON):
        return False
    if response.status < 500:
        return True
    # Its own 503 says why: not ready or restarting (with a Retry-After), or over its time
    # budget (none: the same request would run out again). A 500 is a bug whose details
    # stay in the service's log, under the trace id.
    return response.status == 503


class _Passthrough(Exception):
    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.body = reply.json()
        retry_after = reply.headers.get("retry-after")
        self.headers = {"Retry-After": retry_after} if retry_after else None


def install_passthrough(app: FastAPI) -> None:
    """Answer a service's own problem (raised by `forward`) unchanged."""

    @app.exception_handler(_Passthrough)
    async def _passthrough(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _Passthrough)
        return JSONResponse(
            exc.body, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers
        )
