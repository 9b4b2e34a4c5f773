"""Settings of the gateway (env prefix `GATEWAY_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    app_id: str = "gateway"
    sentiment_app_id: str = Field(
        default="sentiment", description="App id of the sentiment service."
    )
    invoke_timeout_s: float = Field(
        default=4.0,
        description=(
            "Longest wait for an AI service, retries included, before answering 503. "
            "Keep it above the resiliency timeout for the target app."
        ),
    )
    dead_letters_kept: int = Field(default=100, description="Dead letters kept per topic.")
