"""Settings every service shares. Each app subclasses `ServiceSettings` with its own prefix.

Shared settings are read from `CONSORT_<NAME>` whatever the app's prefix (and the app id
from `APP_ID`, which launchers set), so one variable configures every app alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _shared(name: str) -> AliasChoices:
    return AliasChoices(f"CONSORT_{name.upper()}", name)


def app_id_field(default: str) -> str:
    """The `app_id` field of an app's settings: `APP_ID` from the launcher, else `default`."""
    return Field(default=default, validation_alias=AliasChoices("APP_ID", "app_id"))


class SidecarSettings(BaseSettings):
    """Where this app's Dapr sidecar listens. daprd's launchers set these variables."""

    model_config = SettingsConfigDict(env_prefix="DAPR_", extra="ignore")

    http_port: int = 3500
    grpc_port: int = 50001
    host: str = "127.0.0.1"
    #: `DAPR_API_TOKEN`: sent with every call; a secured sidecar refuses calls without it.
    api_token: str = ""

    @property
    def http_url(self) -> str:
        """The sidecar's HTTP API root."""
        return f"http://{self.host}:{self.http_port}"


class ServiceSettings(BaseSettings):
    """Settings common to every Consort app."""

    model_config = SettingsConfigDict(env_prefix="CONSORT_", extra="ignore", populate_by_name=True)

    app_id: str = app_id_field("consort")
    log_level: str = Field(default="INFO", validation_alias=_shared("log_level"))
    pubsub_name: str = Field(
        default="pubsub",
        validation_alias=_shared("pubsub_name"),
        description="Logical pub/sub component name.",
    )
    statestore_name: str = Field(
        default="statestore",
        validation_alias=_shared("statestore_name"),
        description="Logical state store name.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        validation_alias=_shared("max_body_bytes"),
        description="Largest request body accepted.",
    )
    body_limits: dict[str, int] = Field(
        default_factory=dict,
        description="Body limits (bytes) for paths under given prefixes, over max_body_bytes.",
    )
    zipkin_url: str | None = Field(
        default=None,
        validation_alias=_shared("zipkin_url"),
        description="Zipkin span endpoint (…/api/v2/spans); unset: spans are not exported.",
    )
    trace_sampling: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=_shared("trace_sampling"),
        description="Share of the traces this app starts that are recorded (0 to 1); a trace "
        "that arrives sampled (a caller's `traceparent` with flag 01) is always recorded.",
    )
    sidecar_timeout_s: float = Field(
        default=5.0,
        validation_alias=_shared("sidecar_timeout_s"),
        description="How long a call through the sidecar may take.",
    )


def cache_dir() -> Path:
    """The cache outside the clone (`CONSORT_CACHE`, else XDG cache/consort)."""
    if "CONSORT_CACHE" in os.environ:
        return Path(os.environ["CONSORT_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "consort"
