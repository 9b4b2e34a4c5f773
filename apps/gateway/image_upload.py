"""Reading an uploaded image: the raw body (`Content-Type: image/...`) or the `image` field
of a multipart form, held to the vision contract's media types and size; and the
`features` query of `POST /v1/images/analyze`.

What is wrong is answered as a problem naming the field and its limit (413, 415, 422),
before anything is sent to the vision service.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile as StarletteUploadFile

from consort.contracts.common import FieldProblem
from consort.contracts.vision import IMAGE_MEDIA_TYPES, MAX_IMAGE_BYTES, Feature
from consort.kit.errors import ProblemError, invalid_field

#: The OpenAPI request body of the image routes: FastAPI cannot infer it, as they read the
#: request themselves (a raw body or a form).
IMAGE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        **{
            media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_MEDIA_TYPES
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "format": "binary"}},
            }
        },
    },
}


async def read_image(request: Request) -> tuple[bytes, str]:
    """The uploaded image and its media type: the raw body (Content-Type: image/...), or
    the `image` field of a multipart form."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5)
        upload = form.get("image")
        if not isinstance(upload, StarletteUploadFile):
            raise invalid_field(
                "body.image", "is required", detail="The multipart form has no file field `image`."
            )
        data = await upload.read()
        content_type = (upload.content_type or "").lower()
    elif content_type in IMAGE_MEDIA_TYPES:
        data = await request.body()
    else:
        raise ProblemError(
            415,
            "Unsupported media type",
            "Send the image as the body with Content-Type "
            f"{', '.join(IMAGE_MEDIA_TYPES)}, or as the multipart field `image`; "
            f"not {content_type or 'no Content-Type'!r}.",
            slug="unsupported-media-type",
        )
    if len(data) > MAX_IMAGE_BYTES:
        raise ProblemError(
            413,
            "Image too large",
            f"The image must be at most {MAX_IMAGE_BYTES} bytes; it has {len(data)}.",
            slug="image-too-large",
            errors=[
                FieldProblem(
                    field="body.image",
                    message=f"must be at most {MAX_IMAGE_BYTES} bytes",
                    limit=MAX_IMAGE_BYTES,
                )
            ],
        )
    return data, content_type


def parse_features(features: str) -> list[Feature]:
    """The features a comma-separated `features` query names, each once, in its order.

    Raises:
        ProblemError: 422 naming `query.features` when it names none or an unknown one.
    """
    names = [f.strip() for f in features.split(",") if f.strip()]
    allowed = ", ".join(f.value for f in Feature)
    unknown = [n for n in names if n not in {f.value for f in Feature}]
    if unknown or not names:
        raise invalid_field(
            "query.features",
            f"must list some of: {allowed}",
            detail=f"query.features must list some of: {allowed}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
        )
    return [Feature(n) for n in dict.fromkeys(names)]
