"""Image routes: analysis (faces, text, quality) and face redaction, by the vision service.

The image is read and checked here (`apps.gateway.image_upload`) and forwarded as bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from apps.gateway.calls import SidecarDep, forward, passed_on, settings
from apps.gateway.edge import requires
from apps.gateway.image_upload import IMAGE_BODY, parse_features, read_image
from consort.contracts.vision import IMAGE_MEDIA_TYPES, FaceModel, ImageAnalysis

router = APIRouter(prefix="/images", tags=["images"], dependencies=[requires("images")])

FaceModelQuery = Annotated[FaceModel, Query(description="Face detector.")]


@router.post("/analyze", response_model=ImageAnalysis, openapi_extra={"requestBody": IMAGE_BODY})
async def analyze_image(
    request: Request,
    sc: SidecarDep,
    features: Annotated[
        str, Query(description="Comma-separated: faces, text, quality.")
    ] = "faces,text,quality",
    face_model: FaceModelQuery = FaceModel.BLAZEFACE,
) -> Any:
    """Faces (BlazeFace or Haar), text lines (PP-OCR) and quality of one JPEG, PNG or WebP
    image of at most 4 MiB and 40 megapixels."""
    wanted = parse_features(features)
    data, media_type = await read_image(request)
    reply = await forward(
        sc,
        settings.vision_app_id,
        "v1/images/analyze",
        data=data,
        params={"features": ",".join(wanted), "face_model": face_model.value},
        headers={"content-type": media_type},
        timeout_s=settings.vision_timeout_s,
    )
    return passed_on(reply)


@router.post(
    "/redact",
    openapi_extra={"requestBody": IMAGE_BODY},
    response_class=Response,
    responses={
        200: {
            "content": {m: {} for m in IMAGE_MEDIA_TYPES},
            "description": "The image, faces blurred.",
        }
    },
)
async def redact_image(
    request: Request, sc: SidecarDep, face_model: FaceModelQuery = FaceModel.BLAZEFACE
) -> Response:
    """The same image with every detected face blurred (privacy redaction), in its format.
    `x-faces-redacted` says how many faces were blurred."""
    data, media_type = await read_image(request)
    reply = await forward(
        sc,
        settings.vision_app_id,
        "v1/images/redact",
        data=data,
        params={"face_model": face_model.value},
        headers={"content-type": media_type},
        timeout_s=settings.vision_timeout_s,
    )
    return Response(
        reply.body,
        media_type=reply.content_type,
        headers={"x-faces-redacted": reply.headers.get("x-faces-redacted", "0")},
    )
