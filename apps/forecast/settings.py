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
        description="Series of one request fitted at once (about one per core).",
    )
    worker_processes: int = Field(
        default=3,
        ge=1,
        description=(
            "Processes that fit series. One more than a request may use at once, so a "
            "request whose fits run long leaves a worker to the others."
        ),
    )
    time_budget_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest a request may take; past it that request alone fails (503).",
    )
