"""Operations routes: the catalog of running services, dead letters, the recommender's
model (status, retraining)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam

from apps.gateway.calls import SidecarDep, forward, settings
from apps.gateway.edge import requires
from apps.gateway.read_models import DEAD_LETTERS_KEY
from consort.contracts.catalog import Catalog, CatalogEntry, ServiceInfo
from consort.contracts.gateway import DeadLetters
from consort.contracts.recommender import ModelStatus, RetrainAccepted
from consort.kit.dapr import Sidecar, TargetUnavailable
from consort.kit.events import read_tracked

router = APIRouter(tags=["operations"], dependencies=[requires("ops")])


@router.get("/ops/dead-letters/{topic}", response_model=DeadLetters)
async def list_dead_letters(
    topic: Annotated[str, PathParam(pattern=r"^[a-z0-9][a-z0-9.-]{0,99}$")], sc: SidecarDep
) -> DeadLetters:
    """The most recent events of `topic` that went to its dead-letter topic."""
    key = DEAD_LETTERS_KEY.format(topic=topic)
    stored = await read_tracked(sc, settings.statestore_name, key, DeadLetters)
    return stored or DeadLetters(topic=topic, dead_letters=[])


async def catalog_entry(sc: Sidecar, app_id: str) -> CatalogEntry:
    """What `app_id` says of itself (`/info`), or why it could not be asked."""
    try:
        response = await sc.invoke(
            app_id, "info", http_method="GET", timeout_s=settings.catalog_timeout_s
        )
    except TargetUnavailable as exc:
        return CatalogEntry(app_id=app_id, status="unreachable", detail=str(exc))
    if response.status != 200:
        return CatalogEntry(
            app_id=app_id, status="unreachable", detail=f"/info answered {response.status}"
        )
    return CatalogEntry(
        app_id=app_id, status="available", info=ServiceInfo.model_validate(response.json())
    )


@router.get("/catalog", response_model=Catalog)
async def catalog(sc: SidecarDep) -> Catalog:
    """Every service, its version, models, routes and topics, read from the running system.

    Each service describes itself (`/info`, reached through Dapr) with what its own sidecar
    reports through the metadata API: runtime version, components, subscriptions.
    """
    entries = await asyncio.gather(*(catalog_entry(sc, a) for a in settings.catalog_apps))
    return Catalog(services=list(entries))


@router.get("/ops/recommender/model", response_model=ModelStatus)
async def recommender_model(sc: SidecarDep) -> Any:
    """The recommender's serving model version, what it learnt from, its last snapshot."""
    reply = await forward(sc, settings.recommender_app_id, "v1/model", http_method="GET")
    return reply.json()


@router.post("/ops/recommender/retrain", status_code=202, response_model=RetrainAccepted)
async def retrain_recommender(sc: SidecarDep) -> Any:
    """Retrain the recommender's ALS and rules now (beside the serving ones); poll
    `GET /v1/ops/recommender/model` for the new version."""
    reply = await forward(sc, settings.recommender_app_id, "v1/model/retrain")
    return reply.json()
