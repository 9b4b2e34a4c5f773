"""What a service says about itself (`/info`), and the gateway's catalog of all of them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from consort.contracts.common import ModelInfo


class Route(BaseModel):
    method: str
    path: str


class Subscription(BaseModel):
    """A subscription as the sidecar registered it."""

    pubsub: str
    topic: str
    dead_letter_topic: str | None = None


class Component(BaseModel):
    name: str
    type: str
    version: str = ""


class SidecarInfo(BaseModel):
    """What the app's own daprd reports through its metadata API."""

    runtime_version: str
    components: list[Component]
    subscriptions: list[Subscription]
    actor_types: list[str] = Field(default_factory=list)


class ServiceInfo(BaseModel):
    """One service, read from the running app and its sidecar."""

    app_id: str
    version: str
    models: list[ModelInfo]
    routes: list[Route]
    publishes: list[str] = Field(description="Topics this service publishes.")
    subscribes: list[str] = Field(description="Topics its sidecar is subscribed to.")
    sidecar: SidecarInfo | None = Field(
        default=None, description="None when the sidecar's metadata could not be read."
    )


class CatalogEntry(BaseModel):
    app_id: str
    status: Literal["available", "unreachable"]
    detail: str | None = None
    info: ServiceInfo | None = None


class Catalog(BaseModel):
    """Every service of the system, as the running system describes itself."""

    services: list[CatalogEntry]
