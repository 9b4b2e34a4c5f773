"""Settings of the sentiment service (env prefix `SENTIMENT_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.kit.settings import ServiceSettings, app_id_field


class SentimentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore")

    app_id: str = app_id_field("sentiment")
    cache_ttl_s: int = Field(
        default=7 * 24 * 3600, description="How long a cached result lives in the state store."
    )
    local_cache_entries: int = Field(
        default=10_000,
        ge=0,
        description="Results kept in process in front of the state store (0: none).",
    )
