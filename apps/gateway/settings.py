"""Settings of the gateway (env prefix `GATEWAY_`, shared ones `CONSORT_`)."""

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.contracts.vision import MAX_IMAGE_BYTES
from consort.contracts.workflows import MAX_TRIAGE_REQUEST_BYTES
from consort.kit.keys import KEYS_FILE_NAME
from consort.kit.settings import ServiceSettings, app_id_field


def _run_folder_keys() -> Path | None:
    """The keys file of the run folder the launcher names (`CONSORT_RUN_DIR`), if any."""
    run_dir = os.environ.get("CONSORT_RUN_DIR")
    return Path(run_dir) / KEYS_FILE_NAME if run_dir else None


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    app_id: str = app_id_field("gateway")
    sentiment_app_id: str = Field(
        default="sentiment", description="App id of the sentiment service."
    )
    nlp_app_id: str = Field(default="nlp", description="App id of the nlp service.")
    vision_app_id: str = Field(default="vision", description="App id of the vision service.")
    forecast_app_id: str = Field(default="forecast", description="App id of the forecast service.")
    orchestrator_app_id: str = Field(
        default="orchestrator", description="App id of the orchestrator (workflows)."
    )
    recommender_app_id: str = Field(
        default="recommender", description="App id of the recommender service."
    )
    forecast_timeout_s: float = Field(
        default=15.0,
        description="Longest wait for the forecast service (above its own time budget).",
    )
    anomaly_app_id: str = Field(default="anomaly", description="App id of the anomaly service.")
    anomaly_timeout_s: float = Field(
        default=25.0,
        description="Longest wait for the anomaly service (above its offline time budget).",
    )
    anomalies_kept: int = Field(
        default=200, description="Recent `anomalies.detected` events kept for GET /v1/anomalies."
    )
    search_app_id: str = Field(default="search", description="App id of the search service.")
    search_timeout_s: float = Field(
        default=16.0,
        description="Longest wait for the search service (indexing 128 documents on busy cores).",
    )
    vision_timeout_s: float = Field(
        default=30.0, description="Longest wait for the vision service (OCR of a large image)."
    )
    body_limits: dict[str, int] = Field(
        # An image of MAX_IMAGE_BYTES, with room for a multipart envelope.
        default={
            "/v1/images": MAX_IMAGE_BYTES + 64 * 1024,
            "/v1/workflows/review-triage": MAX_TRIAGE_REQUEST_BYTES,
        },
        description="Body limits (bytes) for paths under given prefixes.",
    )
    invoke_timeout_s: float = Field(
        default=4.0,
        description=(
            "Longest wait for an AI service, retries included, before answering 503. "
            "Keep it above the resiliency timeout for the target app."
        ),
    )
    coalesce_max_items: int = Field(
        default=32,
        ge=1,
        description=(
            "The most sentiment or nlp calls of concurrent requests that one invocation of "
            "the service's batch route carries (within its own limit); 1: every request "
            "makes its own call (`apps.gateway.coalesced`)."
        ),
    )
    coalesce_inflight: int = Field(
        default=2,
        ge=1,
        description=(
            "How many calls to one such route may be on their way before the next requests' "
            "calls wait to go together; a lone request always goes at once, alone."
        ),
    )
    coalesce_max_chars: int = Field(
        default=100_000,
        ge=1,
        description="The most characters of text one coalesced invocation carries.",
    )
    catalog_apps: list[str] = Field(
        default=[
            "gateway",
            "nlp",
            "sentiment",
            "vision",
            "forecast",
            "anomaly",
            "recommender",
            "orchestrator",
            "search",
        ],
        description="App ids the catalog asks for their description (JSON list in the env).",
    )
    catalog_timeout_s: float = Field(default=2.0, description="How long the catalog waits per app.")
    dead_letters_kept: int = Field(default=100, description="Dead letters kept per topic.")
    overview_sample_s: float = Field(
        default=5.0, gt=0, description="Seconds between the console's load samples."
    )
    overview_window_s: float = Field(
        default=600.0, gt=0, description="How long the console's load samples are kept."
    )
    overview_idle_s: float = Field(
        default=120.0,
        gt=0,
        description="Sampling stops when the overview was not asked for this long.",
    )
    launcher_run_dir: str | None = Field(
        default_factory=lambda: os.environ.get("CONSORT_RUN_DIR"),
        description=(
            "The launcher's run folder, whose `control.json` names where it tells the "
            "instances it runs (default `$CONSORT_RUN_DIR`); unset: instances unknown."
        ),
    )
    keys_file: Path | None = Field(
        default_factory=_run_folder_keys,
        description=(
            "The API keys file (`consort keys` writes it; a mounted Secret on Kubernetes); "
            "default `$CONSORT_RUN_DIR/gateway-keys.json`. Without it every /v1 call is 401."
        ),
    )
    cors_origins: list[str] = Field(
        default=[],
        description="Browser origins allowed to call the API (JSON list); empty: CORS off.",
    )
