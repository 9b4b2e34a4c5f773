"""The case store: cases, the index that lists them, images and evidence, in state.

Every write here may run twice: an activity replays when its worker died before the
engine recorded its result. So each write is idempotent. A case is created with
first-write (a second attempt finds it and changes nothing), and changed with a
compare-and-set whose change is a no-op once applied (an escalation to a level the case
has reached, a close of a closed case). Keys, inside the orchestrator's prefix:

    case:<workflow id>       the case
    cases:index              ids of cases, oldest first (for listing)
    image:<sha256>           an image a workflow will need, kept `image_ttl_s`
    evidence:<workflow id>   an approved case's image, faces blurred
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from consort.contracts.cases import Case, CaseEntry, CaseOutcome, CaseStatus
from consort.contracts.workflows import CaseClosing, ImageRef
from consort.kit.dapr import UNCHANGED, EtagMismatch, Sidecar

CASE_KEY = "case:{id}"
INDEX_KEY = "cases:index"
IMAGE_KEY = "image:{sha256}"
EVIDENCE_KEY = "evidence:{id}"
#: Most ids the index keeps (the oldest leave it; their cases stay readable by id).
INDEX_LIMIT = 10_000
#: Compare-and-set races to lose before giving up (the activity is then retried).
ATTEMPTS = 100


class CaseIndex(BaseModel):
    ids: list[str]


class StoredImage(BaseModel):
    media_type: str
    data: str  # base64


class CaseNotFound(LookupError):
    """There is no case with this id."""


async def get_case(sc: Sidecar, store: str, case_id: str) -> Case | None:
    item = await sc.get_state(store, CASE_KEY.format(id=case_id))
    return Case.model_validate(item.value) if item else None


async def open_case(sc: Sidecar, store: str, case: Case) -> tuple[Case, bool]:
    """Store `case` unless a case with its id exists; the stored case, and whether it is
    new. Listed (in the index) before it exists, so no stored case is ever unlisted."""
    await _add_to_index(sc, store, case.id)
    try:
        await sc.save_state(
            store,
            CASE_KEY.format(id=case.id),
            case.model_dump(mode="json"),
            options={"concurrency": "first-write"},
        )
    except EtagMismatch:
        existing = await get_case(sc, store, case.id)
        if existing is None:  # deleted in between: nothing sensible to answer
            raise
        return existing, False
    return case, True


async def update_case(
    sc: Sidecar, store: str, case_id: str, change: Callable[[Case], Case | None]
) -> tuple[Case, bool]:
    """Apply `change` to the case by compare-and-set; `change` returns None when there is
    nothing to do (it was done before). The case after, and whether it changed."""

    def step(value: Any | None) -> Any:
        if value is None:
            raise CaseNotFound(case_id)
        changed = change(Case.model_validate(value))
        return UNCHANGED if changed is None else changed.model_dump(mode="json")

    value, changed = await sc.update_state(
        store, CASE_KEY.format(id=case_id), step, attempts=ATTEMPTS
    )
    return Case.model_validate(value), changed


async def list_cases(
    sc: Sidecar, store: str, status: CaseStatus | None = None, limit: int = 100
) -> list[Case]:
    """Cases, most recently opened first, those with `status` only when it is given."""
    item = await sc.get_state(store, INDEX_KEY)
    ids = list(reversed(CaseIndex.model_validate(item.value).ids)) if item else []
    found: list[Case] = []
    for start in range(0, len(ids), 100):
        chunk = [CASE_KEY.format(id=i) for i in ids[start : start + 100]]
        stored = {
            s.key: Case.model_validate(s.value) for s in await sc.get_bulk_state(store, chunk)
        }
        for key in chunk:
            case = stored.get(key)
            if case is not None and (status is None or case.status is status):
                found.append(case)
                if len(found) >= limit:
                    return found
    return found


async def _add_to_index(sc: Sidecar, store: str, case_id: str) -> None:
    def step(value: Any | None) -> Any:
        index = CaseIndex.model_validate(value) if value is not None else CaseIndex(ids=[])
        if case_id in index.ids:
            return UNCHANGED
        return CaseIndex(ids=[*index.ids, case_id][-INDEX_LIMIT:]).model_dump()

    await sc.update_state(store, INDEX_KEY, step, attempts=ATTEMPTS)


# -- a case's transitions: the new case, or None when it is there already ----------------------
def escalated(case: Case, level: int, at: datetime) -> Case | None:
    """Escalated to `level`: only an open case, and only once per level."""
    if case.status is not CaseStatus.OPEN or case.escalations >= level:
        return None
    entry = CaseEntry(at=at, what="escalated", detail=f"level {level}")
    return case.model_copy(
        update={
            "status": CaseStatus.ESCALATED,
            "escalations": level,
            "history": [*case.history, entry],
        }
    )


def closed(case: Case, closing: CaseClosing) -> Case | None:
    """Closed with an outcome (approved, dismissed, expired): once; never a failed case."""
    if case.status in (CaseStatus.CLOSED, CaseStatus.FAILED):
        return None
    detail = closing.outcome.value + (f" by {closing.by}" if closing.by else "")
    return case.model_copy(
        update={
            "status": CaseStatus.CLOSED,
            "outcome": closing.outcome,
            "decision": closing.decision,
            "decided_by": closing.by,
            "note": closing.note,
            "evidence": closing.evidence,
            "closed_at": closing.at,
            "history": [*case.history, CaseEntry(at=closing.at, what="closed", detail=detail)],
        }
    )


def failed(case: Case, reason: str, at: datetime) -> Case | None:
    """Failed (the compensation of a permanent failure): its evidence is gone with it."""
    if case.status is CaseStatus.FAILED:
        return None
    return case.model_copy(
        update={
            "status": CaseStatus.FAILED,
            "outcome": CaseOutcome.FAILED,
            "evidence": None,
            "failure": reason,
            "closed_at": at,
            "history": [*case.history, CaseEntry(at=at, what="failed", detail=reason[:200])],
        }
    )


def terminated(case: Case, reason: str, at: datetime) -> Case | None:
    """Closed because its workflow was terminated (which runs no more of its code)."""
    return closed(
        case, CaseClosing(case_id=case.id, outcome=CaseOutcome.TERMINATED, note=reason, at=at)
    )


# -- images ------------------------------------------------------------------------------------
async def save_image(sc: Sidecar, store: str, data: bytes, media_type: str, ttl_s: int) -> ImageRef:
    """Keep an image for a workflow, by its hash (saving it twice writes the same value)."""
    sha = hashlib.sha256(data).hexdigest()
    await sc.save_states(
        store,
        {
            IMAGE_KEY.format(sha256=sha): StoredImage(
                media_type=media_type, data=base64.b64encode(data).decode()
            ).model_dump()
        },
        ttl_s=ttl_s,
    )
    return ImageRef(sha256=sha, media_type=media_type, bytes=len(data))


async def load_image(sc: Sidecar, store: str, ref: ImageRef) -> bytes | None:
    """The image, or None when it is no longer kept (its time to live passed)."""
    item = await sc.get_state(store, IMAGE_KEY.format(sha256=ref.sha256))
    if item is None:
        return None
    return base64.b64decode(StoredImage.model_validate(item.value).data)


async def save_evidence(sc: Sidecar, store: str, case_id: str, data: bytes, media_type: str) -> str:
    key = EVIDENCE_KEY.format(id=case_id)
    await sc.save_state(
        store,
        key,
        StoredImage(media_type=media_type, data=base64.b64encode(data).decode()).model_dump(),
    )
    return key


async def delete_evidence(sc: Sidecar, store: str, case_id: str) -> None:
    await sc.delete_state(store, EVIDENCE_KEY.format(id=case_id))
