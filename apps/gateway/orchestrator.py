"""Calls to the orchestrator, which hosts the workflows and the cases they open.

A workflow belongs to the app id that hosts it: another app's sidecar can neither start
nor read it, and the cases are in the orchestrator's state. So the gateway's workflow and
case routes validate against the shared contract here and forward to the orchestrator's
route of the same path; its problems (404, 409, 422) pass through.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response

from apps.gateway.calls import forward, settings
from consort.kit.dapr import Sidecar


async def call_orchestrator(sc: Sidecar, method: str, response: Response, **request: Any) -> Any:
    """Forward to the orchestrator's route `method`; its status and JSON body.

    Args:
        sc: the gateway's sidecar.
        method: the orchestrator's route, e.g. `v1/workflows/review-triage`.
        response: the gateway's response, which takes the orchestrator's status.
        **request: passed to `forward` (`http_method`, `json`, `params`).
    """
    reply = await forward(sc, settings.orchestrator_app_id, method, **request)
    response.status_code = reply.status
    return reply.json() if reply.body else None
