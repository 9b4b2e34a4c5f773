"""Settings of the anomaly service (env prefix `ANOMALY_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.contracts.anomaly import Detector, SeriesConfig
from consort.kit.settings import ServiceSettings, app_id_field

_SERIES = SeriesConfig()


class AnomalySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANOMALY_", extra="ignore")

    app_id: str = app_id_field("anomaly")

    detector: Detector = Field(
        default=_SERIES.detector,
        description="How a new series (and an offline request naming none) is scored.",
    )
    period: int = Field(
        default=_SERIES.period, ge=1, description="Seasonal period of a new series, in steps."
    )
    step_s: float = Field(
        default=_SERIES.step_s, gt=0, description="Spacing of a new series' points, in seconds."
    )
    threshold: float | None = Field(
        default=_SERIES.threshold,
        gt=0,
        description="|robust z| above which a point is anomalous (instead of the score).",
    )
    score_threshold: float = Field(
        default=_SERIES.score_threshold,
        gt=0,
        lt=1,
        description="Anomaly score at or above which a point of a new series is anomalous.",
    )
    refit_interval_s: float = Field(
        default=300.0,
        ge=1,
        description="A series receiving points is refit this often (an actor reminder).",
    )
    actor_idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A series' actor idle this long leaves memory (its state stays stored).",
    )
    actor_scan_interval_s: float = Field(
        default=30.0, gt=0, description="How often daprd looks for idle actors."
    )
    actor_call_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest one call to a series' actor may take."
    )
    ingest_parallel_series: int = Field(
        default=16, ge=1, description="Series of one event delivery scored at once."
    )
    fit_processes: int = Field(
        default=2,
        ge=1,
        description="Worker processes that fit series models (about one per core).",
    )
    detect_time_budget_s: float = Field(
        default=20.0,
        gt=0,
        description="Longest an offline detection may take; past it the service answers 503.",
    )

    @property
    def default_series(self) -> SeriesConfig:
        return SeriesConfig(
            detector=self.detector,
            period=self.period,
            step_s=self.step_s,
            threshold=self.threshold,
            score_threshold=self.score_threshold,
        )
