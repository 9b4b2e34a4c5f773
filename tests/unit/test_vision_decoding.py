"""Turning uploaded bytes into pixels, and refusing hostile ones (no sidecar)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from apps.vision.decoding import (
    CorruptImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    TooManyPixels,
    UnsupportedImage,
    decode_image,
    encode_image,
    sniff_format,
)
from consort.contracts.vision import MAX_IMAGE_PIXELS


def _encoded(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(samples.astronaut())


@pytest.fixture(scope="module")
def jpeg(photo: Image.Image) -> bytes:
    return _encoded(photo, "JPEG", quality=90)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of `width` x `height` white pixels: a few KB that decode to a lot."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", compressed)
        + _chunk(b"IEND", b"")
    )


# Hostile input: each answer names the problem, and carries its status for the transport.


def test_zero_bytes_are_an_empty_image() -> None:
    with pytest.raises(EmptyImage, match="empty") as caught:
        decode_image(b"", "image/png")
    assert caught.value.status == 422


def test_too_many_bytes_are_refused_before_anything_else(jpeg: bytes) -> None:
    with pytest.raises(ImageTooLarge, match=f"at most {len(jpeg) - 1}") as caught:
        decode_image(jpeg, "image/jpeg", max_bytes=len(jpeg) - 1)
    assert caught.value.status == 413
    assert caught.value.limit == len(jpeg) - 1


@pytest.mark.parametrize(
    ("width", "height"),
    [(20_000, 20_000), (8_000, 6_000)],  # past Pillow's own bomb limit; past only ours
)
def test_a_png_bomb_is_refused_from_its_header(width: int, height: int) -> None:
    bomb = png_bomb(width, height)
    assert len(bomb) < 200_000
    started = time.perf_counter()
    with pytest.raises(TooManyPixels, match=str(MAX_IMAGE_PIXELS)) as caught:
        decode_image(bomb, "image/png")
    # Decoding 400 megapixels would take seconds and gigabytes; the header takes nothing.
    assert time.perf_counter() - started < 0.5
    assert caught.value.status == 413
    assert caught.value.limit == MAX_IMAGE_PIXELS


def test_the_pixel_limit_is_a_setting() -> None:
    with pytest.raises(TooManyPixels, match="64x64 = 4096 pixels; at most 4000"):
        decode_image(png_bomb(64, 64), None, max_pixels=4000)
    assert decode_image(png_bomb(64, 64), None, max_pixels=4096).info.width == 64


def test_a_truncated_jpeg_is_corrupt(jpeg: bytes) -> None:
    with pytest.raises(CorruptImage, match="JPEG data cannot be decoded") as caught:
        decode_image(jpeg[: len(jpeg) // 2], "image/jpeg")
    assert caught.value.status == 422


def test_a_truncated_png_is_corrupt(photo: Image.Image) -> None:
    png = _encoded(photo, "PNG")
    with pytest.raises(CorruptImage, match="PNG"):
        decode_image(png[: len(png) // 2], "image/png")


def test_a_jpeg_signature_before_garbage_is_corrupt() -> None:
    garbage = np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(CorruptImage, match="JPEG"):
        decode_image(b"\xff\xd8\xff\xe0" + garbage, None)


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedImage, match="not a recognised image") as caught:
        decode_image(noise, None)
    assert caught.value.status == 415


def test_a_text_file_is_not_an_image() -> None:
    with pytest.raises(UnsupportedImage, match="text, not an image"):
        decode_image(b"name,score\nada,1\n" * 20, None)


def test_other_image_formats_are_named() -> None:
    gif = _encoded(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(UnsupportedImage, match="a GIF file; send one of image/jpeg"):
        decode_image(gif, None)


@pytest.mark.parametrize(
    ("media_type", "message"),
    [
        ("text/plain", "media type text/plain is not an image"),
        ("application/json", "not an image"),
        ("image/gif", "media type image/gif is not accepted"),
        ("image/png", "the media type says PNG but the content is JPEG"),
        ("image/webp; q=1", "says WEBP but the content is JPEG"),
    ],
)
def test_a_media_type_that_does_not_fit_is_refused(
    jpeg: bytes, media_type: str, message: str
) -> None:
    with pytest.raises(UnsupportedImage, match=message):
        decode_image(jpeg, media_type)


@pytest.mark.parametrize(
    "media_type",
    [None, "image/jpeg", "IMAGE/JPEG; charset=binary", "image/jpg", "application/octet-stream"],
)
def test_media_types_that_fit_or_say_nothing_are_accepted(
    jpeg: bytes, media_type: str | None
) -> None:
    assert decode_image(jpeg, media_type).info.format == "JPEG"


def test_every_error_is_an_image_error_with_a_status() -> None:
    for error in (EmptyImage, ImageTooLarge, TooManyPixels, UnsupportedImage, CorruptImage):
        assert issubclass(error, ImageError)
        assert error.status in (413, 415, 422)
        assert error.slug and error.title


# Formats and pixel layouts.


@pytest.mark.parametrize(("format", "tolerance"), [("JPEG", 12), ("PNG", 0), ("WEBP", 12)])
def test_formats_decode_to_bgr(photo: Image.Image, format: str, tolerance: int) -> None:
    encoded = _encoded(photo, format, quality=95) if format != "PNG" else _encoded(photo, format)
    decoded = decode_image(encoded, f"image/{format.lower()}")
    assert decoded.info.format == format
    assert (decoded.info.width, decoded.info.height) == photo.size
    assert decoded.info.bytes == len(encoded)
    assert len(decoded.info.sha256) == 64
    assert decoded.pixels.shape == (512, 512, 3)
    assert decoded.pixels.dtype == np.uint8
    rgb = np.asarray(photo, dtype=np.int16)
    mean_error = np.abs(decoded.pixels[..., ::-1].astype(np.int16) - rgb).mean()
    assert mean_error <= tolerance
    assert sniff_format(encoded) == format


def test_transparent_png_is_laid_on_white() -> None:
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)  # opaque red on the left, fully transparent right
    decoded = decode_image(_encoded(Image.fromarray(rgba, "RGBA"), "PNG"), "image/png")
    assert decoded.pixels[5, 2].tolist() == [0, 0, 255]  # BGR red
    assert decoded.pixels[5, 15].tolist() == [255, 255, 255]


def test_palette_png_with_transparency() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    decoded = decode_image(_encoded(image, "PNG", transparency=0), None)
    assert decoded.pixels[0, 0].tolist() == [0, 255, 0]
    assert decoded.pixels[0, 7].tolist() == [255, 255, 255]


def test_greyscale_images_widen_to_three_channels() -> None:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    for format in ("PNG", "JPEG", "WEBP"):
        decoded = decode_image(_encoded(Image.fromarray(grey, "L"), format), None)
        assert decoded.pixels.shape == (16, 64, 3)
        assert np.array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])


def test_sixteen_bit_png_keeps_its_levels() -> None:
    deep = (np.tile(np.arange(16, dtype=np.uint16), (4, 1)) * 4096).astype(np.uint16)
    decoded = decode_image(_encoded(Image.fromarray(deep), "PNG"), None)
    assert decoded.pixels[0, :, 0].tolist() == [v // 256 for v in deep[0].tolist()]


def test_webp_with_alpha() -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    decoded = decode_image(_encoded(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True), None)
    assert decoded.info.format == "WEBP"
    assert decoded.pixels.min() == 255


def test_exif_orientation_is_applied(photo: Image.Image) -> None:
    wide = photo.crop((0, 0, 512, 256))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    decoded = decode_image(_encoded(wide, "JPEG", exif=exif), "image/jpeg")
    assert (decoded.info.width, decoded.info.height) == (256, 512)


def test_encode_round_trip(photo: Image.Image) -> None:
    pixels = decode_image(_encoded(photo, "PNG")).pixels
    for format in ("JPEG", "PNG", "WEBP"):
        again = decode_image(encode_image(pixels, format))
        assert again.info.format == format
        assert again.pixels.shape == pixels.shape
    with pytest.raises(ValueError, match="GIF"):
        encode_image(pixels, "GIF")
