"""The vision service through the gateway and real sidecars: features, limits, hostile files."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
from skimage import data as samples

from consort.contracts.vision import MAX_IMAGE_BYTES
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually, needs_redis_streams


def jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return encoded.tobytes()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header announcing width x height pixels, in a few hundred bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.fixture
def api(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60
    ) as client:
        yield client


ASTRONAUT = jpeg(samples.astronaut())


def analyze(
    api: httpx.Client, body: bytes, media: str = "image/jpeg", **params: str
) -> httpx.Response:
    return api.post(
        "/v1/images/analyze", content=body, headers={"content-type": media}, params=params
    )


def test_a_face_is_found_by_both_models(api: httpx.Client) -> None:
    for model in ("blazeface", "haar"):
        response = analyze(api, ASTRONAUT, features="faces", face_model=model)
        assert response.status_code == 200, response.text
        faces = response.json()["faces"]
        assert faces["model"]["name"].startswith(model[:5])
        assert len(faces["faces"]) >= 1
        box = faces["faces"][0]["box"]
        # The astronaut's face is in the upper middle of the 512 x 512 photo.
        assert 100 < box["x"] + box["width"] / 2 < 300
        assert 50 < box["y"] + box["height"] / 2 < 250
    assert response.json()["text"] is None and response.json()["quality"] is None


def test_text_and_quality_of_a_rendered_sign(api: httpx.Client) -> None:
    sign = np.full((160, 640, 3), 255, np.uint8)
    # No letter O: Hershey fonts draw it almost like the digit 0 (see make eval).
    cv2.putText(sign, "DAPR SIDECAR 2026", (20, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.8, (0, 0, 0), 4)
    response = api.post(
        "/v1/images/analyze",
        files={"image": ("sign.png", cv2.imencode(".png", sign)[1].tobytes(), "image/png")},
        params={"features": "text,quality"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    read = " ".join(" ".join(line["text"] for line in body["text"]["lines"]).split())
    assert "DAPR SIDECAR 2026" in read
    assert body["quality"]["width"] == 640 and body["image"]["format"] == "PNG"
    assert len(body["quality"]["phash"]) == 16
    assert {m["name"] for m in body["models"]} >= {body["text"]["model"]["name"]}


def test_redaction_blurs_the_face(api: httpx.Client) -> None:
    found = analyze(api, ASTRONAUT, features="faces").json()["faces"]["faces"][0]["box"]
    response = api.post(
        "/v1/images/redact", content=ASTRONAUT, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert int(response.headers["x-faces-redacted"]) >= 1
    original = cv2.imdecode(np.frombuffer(ASTRONAUT, np.uint8), cv2.IMREAD_GRAYSCALE)
    redacted = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    x, y, w, h = (int(found[k]) for k in ("x", "y", "width", "height"))
    face = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))

    def detail(image: np.ndarray) -> float:
        return float(cv2.Laplacian(image[face], cv2.CV_64F).var())

    assert detail(redacted) < detail(original) / 4
    corner = (slice(400, 512), slice(0, 100))  # far from the face: untouched but for JPEG
    assert np.abs(redacted[corner].astype(int) - original[corner].astype(int)).mean() < 4


def test_an_image_just_under_the_limit_passes_through_gateway_and_sidecars(
    api: httpx.Client,
) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (1180, 1180, 3), dtype=np.uint8)
    body = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()
    assert MAX_IMAGE_BYTES - 100_000 < len(body) <= MAX_IMAGE_BYTES, len(body)
    response = analyze(api, body, "image/png", features="quality")
    assert response.status_code == 200, response.text
    assert response.json()["image"]["bytes"] == len(body)


@pytest.mark.parametrize(
    ("body", "media", "status"),
    [
        (ASTRONAUT[: len(ASTRONAUT) // 2], "image/jpeg", 422),  # truncated
        (b"%PDF-1.7 definitely not an image" * 10, "image/jpeg", 415),  # not an image
        (ASTRONAUT, "text/plain", 415),  # wrong content type
        (png_bomb(), "image/png", 413),  # decompression bomb
        (b"", "image/jpeg", 422),  # zero bytes
        (b"\0" * (MAX_IMAGE_BYTES + 1), "image/jpeg", 413),  # over the size limit
    ],
    ids=["truncated", "non-image", "wrong-type", "bomb", "empty", "too-big"],
)
def test_hostile_input_is_a_clear_4xx_and_the_service_keeps_serving(
    api: httpx.Client, body: bytes, media: str, status: int
) -> None:
    response = analyze(api, body, media, features="quality")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]
    assert analyze(api, ASTRONAUT, features="quality").status_code == 200


def test_unknown_features_are_a_422(api: httpx.Client) -> None:
    response = analyze(api, ASTRONAUT, features="faces,colour")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.features"


def test_each_analysis_is_published_as_images_analyzed(
    api: httpx.Client, system: LocalSystem
) -> None:
    needs_redis_streams(system, "images.analyzed")
    image = jpeg(samples.coffee())
    digest = analyze(api, image, features="quality").json()["image"]["sha256"]

    def latest() -> list[str]:
        out = subprocess.run(
            [
                "redis-cli",
                "-p",
                str(system.ports.redis),
                "--raw",
                "XREVRANGE",
                "images.analyzed",
                "+",
                "-",
                "COUNT",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            env=system.redis_cli_env(),
        ).stdout
        return [line for line in out.splitlines() if line.startswith("{")]

    events = eventually(latest, lambda lines: any(digest in line for line in lines))
    event = json.loads(next(line for line in events if digest in line))
    assert event["type"] == "consort.images.analyzed.v1"
    assert event["data"]["features"] == ["quality"]
    assert event["data"]["format"] == "JPEG"
