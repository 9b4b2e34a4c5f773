"""Case routes: the cases review_triage workflows open, kept by the orchestrator."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam

from apps.gateway.calls import SidecarDep
from apps.gateway.edge import requires
from apps.gateway.orchestrator import call_orchestrator
from consort.contracts.cases import INSTANCE_ID_PATTERN, Case, CaseList, CaseStatus
from consort.contracts.common import Problem

router = APIRouter(prefix="/cases", tags=["cases"], dependencies=[requires("workflows")])


@router.get("", response_model=CaseList)
async def list_cases(
    sc: SidecarDep,
    response: Response,
    status: Annotated[CaseStatus | None, Query(description="Only cases in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Cases opened by review_triage workflows, most recent first (`?status=open`)."""
    params = {"limit": str(limit)} | ({"status": status.value} if status else {})
    return await call_orchestrator(sc, "v1/cases", response, http_method="GET", params=params)


@router.get(
    "/{case_id}",
    response_model=Case,
    responses={404: {"model": Problem, "description": "No case with this id."}},
)
async def get_case(
    case_id: Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)],
    sc: SidecarDep,
    response: Response,
) -> Any:
    """One case; its id is the id of the workflow that opened it."""
    return await call_orchestrator(sc, f"v1/cases/{case_id}", response, http_method="GET")
