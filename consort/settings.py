"""Settings every service shares. Each app subclasses `ServiceSettings` with its own prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SidecarSettings(BaseSettings):
    """Where this app's Dapr sidecar listens. daprd's launchers set these variables."""

    model_config = SettingsConfigDict(env_prefix="DAPR_", extra="ignore")

    http_port: int = 3500
    grpc_port: int = 50001
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


class ServiceSettings(BaseSettings):
    """Settings common to every Consort app (env prefix `CONSORT_`)."""

    model_config = SettingsConfigDict(env_prefix="CONSORT_", extra="ignore")

    app_id: str = "consort"
    log_level: str = "INFO"
    pubsub_name: str = Field(default="pubsub", description="Logical pub/sub component name.")
    statestore_name: str = Field(default="statestore", description="Logical state store name.")
    max_body_bytes: int = Field(default=1_048_576, description="Largest request body accepted.")
    sidecar_timeout_s: float = Field(
        default=5.0, description="How long a call through the sidecar may take."
    )
