"""Cases: what review_triage opened, read from the orchestrator's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from apps.orchestrator.engine import kit, settings
from consort.contracts.cases import INSTANCE_ID_PATTERN, Case, CaseList, CaseStatus
from consort.contracts.common import Problem
from consort.kit.errors import ProblemError
from workflows import cases

router = APIRouter(prefix="/v1/cases", tags=["cases"])


@router.get("", response_model=CaseList)
async def list_cases(
    status: Annotated[CaseStatus | None, Query(description="Only cases in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CaseList:
    """Cases, most recently opened first."""
    found = await cases.list_cases(kit.sidecar, settings.statestore_name, status, limit)
    return CaseList(cases=found)


@router.get(
    "/{case_id}",
    response_model=Case,
    responses={404: {"model": Problem, "description": "No case with this id."}},
)
async def get_case(case_id: Annotated[str, PathParam(pattern=INSTANCE_ID_PATTERN)]) -> Case:
    """One case (its id is the id of the workflow that opened it)."""
    case = await cases.get_case(kit.sidecar, settings.statestore_name, case_id)
    if case is None:
        raise ProblemError(404, "Case not found", f"No case has the id {case_id!r}.")
    return case
