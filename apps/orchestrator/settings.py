"""Settings of the orchestrator (env prefix `ORCHESTRATOR_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.contracts.forecast import MAX_HORIZON
from consort.contracts.workflows import (
    MAX_DECISION_TIMEOUT_S,
    MAX_TRIAGE_REQUEST_BYTES,
    SeriesWatch,
)
from consort.kit.settings import ServiceSettings, app_id_field


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    app_id: str = app_id_field("orchestrator")
    nlp_app_id: str = Field(default="nlp", description="App id of the nlp service.")
    sentiment_app_id: str = Field(default="sentiment", description="App id of sentiment.")
    vision_app_id: str = Field(default="vision", description="App id of the vision service.")
    forecast_app_id: str = Field(default="forecast", description="App id of the forecasts.")
    anomaly_app_id: str = Field(default="anomaly", description="App id of anomaly scoring.")
    invoke_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest one activity waits for nlp, sentiment, anomaly."
    )
    vision_timeout_s: float = Field(default=30.0, gt=0, description="... for vision.")
    forecast_timeout_s: float = Field(default=15.0, gt=0, description="... for forecast.")
    decision_timeout_s: float = Field(
        default=3 * 24 * 3600,
        gt=0,
        le=MAX_DECISION_TIMEOUT_S,
        description="How long a case waits for a decision before it is escalated.",
    )
    escalated_timeout_s: float = Field(
        default=2 * 24 * 3600,
        gt=0,
        le=MAX_DECISION_TIMEOUT_S,
        description="How long an escalated case waits before it expires.",
    )
    retry_first_interval_s: float = Field(
        default=0.5, ge=0, description="Wait before an activity's first retry."
    )
    retry_backoff: float = Field(default=2.0, ge=1, description="Each wait is this much longer.")
    retry_max_interval_s: float = Field(default=4.0, ge=0, description="Longest wait.")
    retry_attempts: int = Field(
        default=10,
        ge=1,
        description="Attempts of an activity before its failure is permanent (the default "
        "spans about 30 s: long enough for a service to restart).",
    )
    image_ttl_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        description="How long a review's image is kept for its workflow (then it is gone).",
    )
    tracked_series: list[SeriesWatch] = Field(
        default=[],
        description="Series forecast on the schedule, with their bounds (JSON list in the "
        "env); when set, the schedule is (re)registered from them at start-up.",
    )
    forecast_every_s: int = Field(default=300, ge=1, description="Seconds between runs.")
    forecast_horizon: int = Field(default=12, ge=1, le=MAX_HORIZON, description="Steps ahead.")
    forecast_max_points: int = Field(
        default=1000, ge=3, description="Latest points of a series a forecast is fitted on."
    )
    max_concurrent_activities: int = Field(
        default=100, ge=1, description="Activities the worker runs at once."
    )
    max_concurrent_workflows: int = Field(
        default=100, ge=1, description="Workflow steps the worker runs at once."
    )
    body_limits: dict[str, int] = Field(
        default={"/v1/workflows/review-triage": MAX_TRIAGE_REQUEST_BYTES},
        description="Body limits (bytes) for paths under given prefixes.",
    )
