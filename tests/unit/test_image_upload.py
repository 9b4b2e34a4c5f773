"""Reading an uploaded image (no sidecar): raw body or multipart field, media types, the
size limit, and the `features` query; each refusal names its field and limit."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import Request

from apps.gateway.image_upload import parse_features, read_image
from consort.contracts.vision import MAX_IMAGE_BYTES, Feature
from consort.kit.errors import ProblemError

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def upload(body: bytes, headers: dict[str, str]) -> Request:
    """A request as the gateway receives it, with `body` in one chunk."""

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/images/analyze",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, receive)


def multipart(files: dict[str, tuple[str, bytes, str]]) -> Request:
    encoded = httpx.Request("POST", "http://gateway/", files=files)
    return upload(encoded.read(), {"content-type": encoded.headers["content-type"]})


def refusal(request: Request) -> ProblemError:
    with pytest.raises(ProblemError) as raised:
        asyncio.run(read_image(request))
    return raised.value


def test_a_raw_body_is_read_with_its_media_type() -> None:
    request = upload(PNG, {"content-type": "Image/PNG; charset=binary"})
    assert asyncio.run(read_image(request)) == (PNG, "image/png")


def test_a_multipart_field_image_is_read_with_the_parts_media_type() -> None:
    request = multipart({"image": ("face.webp", PNG, "image/webp")})
    assert asyncio.run(read_image(request)) == (PNG, "image/webp")


def test_a_form_without_the_image_field_names_the_field() -> None:
    problem = refusal(multipart({"photo": ("face.png", PNG, "image/png")}))
    assert problem.status == 422
    assert [e.field for e in problem.errors or []] == ["body.image"]


def test_another_media_type_is_415_listing_the_accepted_ones() -> None:
    for headers in ({"content-type": "text/plain"}, {}):
        problem = refusal(upload(PNG, headers))
        assert (problem.status, problem.slug) == (415, "unsupported-media-type")
        assert "image/jpeg, image/png, image/webp" in (problem.detail or "")


def test_an_image_over_the_limit_is_413_naming_the_limit() -> None:
    too_large = b"\0" * (MAX_IMAGE_BYTES + 1)
    for request in (
        upload(too_large, {"content-type": "image/jpeg"}),
        multipart({"image": ("big.jpg", too_large, "image/jpeg")}),
    ):
        problem = refusal(request)
        assert (problem.status, problem.slug) == (413, "image-too-large")
        assert [(e.field, e.limit) for e in problem.errors or []] == [
            ("body.image", MAX_IMAGE_BYTES)
        ]
    exactly = b"\0" * MAX_IMAGE_BYTES
    assert asyncio.run(read_image(upload(exactly, {"content-type": "image/jpeg"})))[0] == exactly


def test_features_are_each_kept_once_in_the_order_given() -> None:
    assert parse_features(" text ,faces,text,") == [Feature.TEXT, Feature.FACES]
    assert parse_features("faces,text,quality") == list(Feature)


@pytest.mark.parametrize("features", ["", " , ", "faces,nope"])
def test_no_or_an_unknown_feature_is_a_422_listing_the_allowed(features: str) -> None:
    with pytest.raises(ProblemError) as raised:
        parse_features(features)
    problem = raised.value
    assert problem.status == 422
    assert [e.field for e in problem.errors or []] == ["query.features"]
    assert "faces, text, quality" in (problem.detail or "")
    if "nope" in features:
        assert "unknown: nope" in (problem.detail or "")
