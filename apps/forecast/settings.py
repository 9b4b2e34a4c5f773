"""Settings of the forecast service (env prefix `FORECAST_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.kit.settings import ServiceSettings, app_id_field


class ForecastSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FORECAST_", extra="ignore")

    app_id: str = app_id_field("forecast")
    max_parallel_series: int = Field(
        default=2,
        ge=1,
        description="Series of one request fitted at once (processes; about one per core).",
    )
    time_budget_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest a request may take; past it the service answers 503 and names it.",
    )
