"""The vision service: transport only. Decoding, models and measures live in plain modules.

Images arrive as raw bodies (Content-Type image/jpeg, image/png or image/webp), through
the gateway and two sidecars. Each model is loaded once per process, in the background;
CPU-bound work runs in a worker thread so health probes keep answering. Every analysis is
announced as an `images.analyzed` event (without the image).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import Query, Request, Response
from numpy.typing import NDArray

from apps.vision.decoding import DecodedImage, ImageError, decode_image, encode_image
from apps.vision.faces import BlazeFaceDetector, FaceDetector, HaarFaceDetector, redact
from apps.vision.ocr import TextReader
from apps.vision.quality import measure
from apps.vision.settings import VisionSettings
from consort.contracts.common import FieldProblem
from consort.contracts.events import IMAGES_ANALYZED
from consort.contracts.vision import (
    IMAGE_MEDIA_TYPES,
    FaceModel,
    Feature,
    ImageAnalysis,
    ImagesAnalyzed,
)
from consort.kit.dapr import SidecarError
from consort.kit.errors import ProblemError, invalid_field
from consort.kit.service import ServiceKit, create_app
from consort.kit.telemetry import tracer as get_tracer

log = logging.getLogger("vision")
tracer = get_tracer("vision")
settings = VisionSettings()
kit = ServiceKit(settings, version="1.0.0")

blazeface = kit.load_model(
    "blazeface",
    lambda: BlazeFaceDetector(
        settings.blazeface_model_path,
        score_threshold=settings.face_score_threshold,
        nms_iou=settings.face_nms_iou,
        threads=settings.onnx_threads,
    ),
)
haar = kit.load_model("haar", HaarFaceDetector)
ocr = (
    kit.load_model(
        "pp-ocr",
        lambda: TextReader(
            threads=settings.onnx_threads,
            max_side=settings.ocr_max_side,
            rotated_text=settings.ocr_rotated_text,
        ),
    )
    if settings.ocr_enabled
    else None
)

app = create_app(
    kit,
    title="Consort vision",
    description="Faces (BlazeFace, Haar), text in images (PP-OCR) and image quality.",
)
MEDIA_TYPE_OF = {fmt: media for media, fmt in IMAGE_MEDIA_TYPES.items()}


def _decode(data: bytes, media_type: str | None) -> DecodedImage:
    try:
        return decode_image(
            data,
            media_type,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
    except ImageError as exc:
        raise ProblemError(
            exc.status,
            exc.title,
            exc.detail,
            slug=exc.slug,
            errors=[FieldProblem(field="body", message=exc.detail, limit=exc.limit)],
        ) from exc


def _detector(model: FaceModel) -> FaceDetector:
    return blazeface.get() if model is FaceModel.BLAZEFACE else haar.get()


def _features(value: str) -> list[Feature]:
    names = [f.strip() for f in value.split(",") if f.strip()]
    try:
        return [Feature(n) for n in dict.fromkeys(names)] or list(Feature)
    except ValueError as exc:
        allowed = ", ".join(f.value for f in Feature)
        raise invalid_field(
            "query.features",
            f"must list some of: {allowed}",
            detail=f"query.features must list some of: {allowed}",
        ) from exc


def _analyze(image: DecodedImage, features: list[Feature], face_model: FaceModel) -> ImageAnalysis:
    """All requested features of one decoded image (CPU-bound: run in a worker thread)."""
    pixels: NDArray = image.pixels  # type: ignore[type-arg]
    result = ImageAnalysis(image=image.info, models=[])
    if Feature.FACES in features:
        detector = _detector(face_model)
        with kit.metrics.inferring(detector.model.name):
            result.faces = detector.detect(pixels)
        result.models.append(detector.model)
    if Feature.TEXT in features and ocr is not None:
        reader = ocr.get()
        with kit.metrics.inferring(reader.model.name):
            result.text = reader.read(pixels)
        result.models.append(reader.model)
    if Feature.QUALITY in features:
        result.quality = measure(pixels)
    return result


@app.post("/v1/images/analyze", response_model=ImageAnalysis, tags=["images"])
async def analyze_image(
    request: Request,
    features: Annotated[str, Query(description="Comma-separated: faces, text, quality.")] = (
        "faces,text,quality"
    ),
    face_model: Annotated[FaceModel, Query()] = FaceModel.BLAZEFACE,
) -> ImageAnalysis:
    """Faces, text lines and quality of the image sent as the body."""
    wanted = _features(features)
    if Feature.FACES in wanted:
        _detector(face_model)  # 503 while the model loads
    if Feature.TEXT in wanted:
        if ocr is None:
            raise ProblemError(
                422,
                "Feature disabled",
                "Text reading is turned off on this service (VISION_OCR_ENABLED=false).",
                slug="feature-disabled",
                errors=[FieldProblem(field="query.features", message="text is disabled")],
            )
        ocr.get()
    body = await request.body()
    with tracer.start_as_current_span("image.analyze", attributes={"features": ",".join(wanted)}):
        image = await asyncio.to_thread(_decode, body, request.headers.get("content-type"))
        result = await asyncio.to_thread(_analyze, image, wanted, face_model)
    await _announce(result, wanted)
    return result


@app.post("/v1/images/redact", tags=["images"], response_class=Response)
async def redact_image(
    request: Request, face_model: Annotated[FaceModel, Query()] = FaceModel.BLAZEFACE
) -> Response:
    """The image with every detected face blurred, in its own format."""
    detector = _detector(face_model)
    body = await request.body()
    image = await asyncio.to_thread(_decode, body, request.headers.get("content-type"))

    def blur() -> tuple[bytes, int]:
        faces = detector.detect(image.pixels)
        return encode_image(redact(image.pixels, faces), image.info.format), len(faces.faces)

    data, count = await asyncio.to_thread(blur)
    return Response(
        data,
        media_type=MEDIA_TYPE_OF[image.info.format],
        headers={"x-faces-redacted": str(count)},
    )


async def _announce(result: ImageAnalysis, features: list[Feature]) -> None:
    event = ImagesAnalyzed(
        image_sha256=result.image.sha256,
        format=result.image.format,
        width=result.image.width,
        height=result.image.height,
        features=features,
        faces=len(result.faces.faces) if result.faces else None,
        text_lines=len(result.text.lines) if result.text else None,
        sharpness=result.quality.sharpness if result.quality else None,
        models=result.models,
    )
    try:
        await kit.sidecar.publish_event(
            settings.pubsub_name, IMAGES_ANALYZED, event, source=settings.app_id
        )
    except SidecarError as exc:
        log.error("images.analyzed not published: %s", exc)
