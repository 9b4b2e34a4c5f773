"""The vision service's contract: faces, text in images, image quality, and their limits."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from consort.contracts.common import ModelInfo

#: Largest image accepted, in bytes (4 MiB: sidecars are set to carry it with headroom).
MAX_IMAGE_BYTES = 4 * 1024 * 1024
#: Most pixels an image may decode to (width x height): refuses decompression bombs.
MAX_IMAGE_PIXELS = 40_000_000
#: Formats accepted, by media type.
IMAGE_MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


class Feature(StrEnum):
    FACES = "faces"
    TEXT = "text"
    QUALITY = "quality"


class FaceModel(StrEnum):
    BLAZEFACE = "blazeface"
    HAAR = "haar"


class Box(BaseModel):
    """An axis-aligned box in pixels of the original image."""

    x: float
    y: float
    width: float
    height: float


class Point(BaseModel):
    x: float
    y: float


class Face(BaseModel):
    box: Box
    score: float = Field(ge=0, le=1, description="Detection confidence (Haar: always 1).")
    landmarks: list[Point] = Field(
        default_factory=list,
        description="BlazeFace: right eye, left eye, nose tip, mouth, right ear, left ear.",
    )


class Faces(BaseModel):
    model: ModelInfo
    faces: list[Face]


class TextLine(BaseModel):
    text: str
    confidence: float = Field(ge=0, le=1)
    polygon: list[Point] = Field(description="The line's four corners, clockwise from top left.")


class TextInImage(BaseModel):
    model: ModelInfo
    lines: list[TextLine]


class Quality(BaseModel):
    """Measures of the image itself (no model)."""

    width: int
    height: int
    megapixels: float
    sharpness: float = Field(description="Variance of the Laplacian of the grey image.")
    brightness: float = Field(ge=0, le=255, description="Mean grey level.")
    contrast: float = Field(ge=0, description="Standard deviation of the grey level.")
    phash: str = Field(description="64-bit perceptual hash (DCT), 16 hex digits.")


class ImageInfo(BaseModel):
    format: str
    width: int
    height: int
    bytes: int
    sha256: str


class ImageAnalysis(BaseModel):
    """What was asked for: `faces`, `text` and `quality` are None unless requested."""

    image: ImageInfo
    faces: Faces | None = None
    text: TextInImage | None = None
    quality: Quality | None = None
    models: list[ModelInfo]


class ImagesAnalyzed(BaseModel):
    """Data of the `images.analyzed` event (the image itself is not sent)."""

    image_sha256: str
    format: str
    width: int
    height: int
    features: list[Feature]
    faces: int | None = None
    text_lines: int | None = None
    sharpness: float | None = None
    models: list[ModelInfo]
