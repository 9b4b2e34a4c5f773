"""Turning untrusted bytes into pixels, or into an error that says what is wrong with them.

Plain domain code: no web framework, no Dapr. Each error carries the HTTP status, a slug
and the limit it enforces, so the transport answers with a problem+json without knowing
image formats. The checks run cheapest first: size in bytes, media type, magic bytes,
then the dimensions in the header (read lazily, so a decompression bomb is refused before
a single pixel is decoded), and only then the decode itself.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from consort.contracts.vision import IMAGE_MEDIA_TYPES, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageInfo

#: Media types that say nothing about the content: the bytes decide.
UNSPECIFIED_MEDIA_TYPES = frozenset({"application/octet-stream"})

#: Other names clients use for the accepted types.
MEDIA_TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
}

#: Signatures of formats that are refused, to name them in the error.
_OTHER_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"%PDF", 0, "PDF"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "XML (SVG?)"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
)

#: Pixel type of every decoded image: 8-bit BGR, OpenCV's order.
BGRImage = NDArray[np.uint8]


class ImageError(ValueError):
    """An image that cannot be analysed. `status`, `slug` and `limit` are for the answer."""

    status: ClassVar[int] = 422
    slug: ClassVar[str] = "invalid-image"
    title: ClassVar[str] = "Invalid image"

    def __init__(self, detail: str, limit: int | str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.limit = limit


class EmptyImage(ImageError):
    """The body holds no bytes at all."""

    slug = "empty-image"
    title = "Empty image"


class ImageTooLarge(ImageError):
    """More bytes than `max_bytes`."""

    status = 413
    slug = "image-too-large"
    title = "Image too large"


class TooManyPixels(ImageError):
    """The header announces more than `max_pixels` pixels (a decompression bomb, or just big)."""

    status = 413
    slug = "too-many-pixels"
    title = "Image has too many pixels"


class UnsupportedImage(ImageError):
    """Not JPEG, PNG or WebP, not an image at all, or not what its media type says."""

    status = 415
    slug = "unsupported-image"
    title = "Unsupported image"


class CorruptImage(ImageError):
    """A JPEG, PNG or WebP signature, but the data is truncated or cannot be decoded."""

    slug = "corrupt-image"
    title = "Corrupt image"


@dataclass(frozen=True)
class DecodedImage:
    """The pixels (8-bit BGR, EXIF orientation applied) and what the answer says about them."""

    pixels: BGRImage
    info: ImageInfo


def _accepted() -> str:
    return ", ".join(IMAGE_MEDIA_TYPES)


def sniff_format(data: bytes) -> str | None:
    """The accepted format the magic bytes announce (`JPEG`, `PNG`, `WEBP`), else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_other(data: bytes) -> str:
    head = data[:64].lstrip()
    for signature, offset, name in _OTHER_SIGNATURES:
        if head[offset : offset + len(signature)].lower() == signature.lower():
            return f"a {name} file"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "not a recognised image"
    return "text, not an image"


def _declared_format(media_type: str | None) -> str | None:
    """The format a Content-Type names; None when it names none; UnsupportedImage if wrong."""
    if media_type is None:
        return None
    essence = media_type.split(";", 1)[0].strip().lower()
    essence = MEDIA_TYPE_ALIASES.get(essence, essence)
    if not essence or essence in UNSPECIFIED_MEDIA_TYPES:
        return None
    if essence in IMAGE_MEDIA_TYPES:
        return IMAGE_MEDIA_TYPES[essence]
    if essence.startswith("image/"):
        raise UnsupportedImage(
            f"media type {essence} is not accepted; send one of {_accepted()}", limit=_accepted()
        )
    raise UnsupportedImage(
        f"media type {essence} is not an image; send one of {_accepted()}", limit=_accepted()
    )


def _bgr(pixels: NDArray[np.uint8], conversion: int) -> BGRImage:
    converted: BGRImage = cv2.cvtColor(pixels, conversion)  # type: ignore[assignment]
    return converted


def _to_bgr(image: Image.Image) -> BGRImage:
    """Any Pillow mode as 8-bit BGR; transparent pixels are laid on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey (PNG): Pillow's own conversion clips at 255, so scale instead. Mode
        # I (32-bit) is scaled only when its values need it.
        deep = np.asarray(image, dtype=np.int64).clip(0, 65535)
        sixteen = image.mode != "I" or deep.max(initial=0) > 255
        grey = (deep >> 8 if sixteen else deep).astype(np.uint8)
        return _bgr(grey, cv2.COLOR_GRAY2BGR)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("1", "F"):
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "L":
        return _bgr(np.asarray(image, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
    if image.mode != "RGB":
        image = image.convert("RGB")  # CMYK and YCbCr JPEGs
    return _bgr(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2BGR)


def _checked_format(data: bytes, media_type: str | None, max_bytes: int) -> str:
    """The format the bytes are in, after the checks that need no decoding."""
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data)} bytes; at most {max_bytes} are accepted", limit=max_bytes
        )
    declared = _declared_format(media_type)
    found = sniff_format(data)
    if found is None:
        raise UnsupportedImage(
            f"the content is {_describe_other(data)}; send one of {_accepted()}",
            limit=_accepted(),
        )
    if declared is not None and declared != found:
        raise UnsupportedImage(
            f"the media type says {declared} but the content is {found}", limit=_accepted()
        )
    return found


def _decode_pixels(data: bytes, found: str, max_pixels: int) -> BGRImage:
    """The oriented BGR pixels, the size checked from the header before decoding."""
    with warnings.catch_warnings():
        # Pillow warns (and past twice its own limit, raises) about large images; the
        # limit enforced here is max_pixels, checked from the header just below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[found])
        except Image.DecompressionBombError as exc:
            raise TooManyPixels(
                f"the image header announces more than {max_pixels} pixels: {exc}",
                limit=max_pixels,
            ) from exc
        except Exception as exc:  # Pillow raises many types on malformed headers
            raise CorruptImage(f"the {found} header cannot be read: {exc}") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(
                f"the image is {width}x{height} = {width * height} pixels; at most "
                f"{max_pixels} are accepted",
                limit=max_pixels,
            )
        if width < 1 or height < 1:
            raise CorruptImage(f"the {found} header gives a size of {width}x{height}")
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            pixels = _to_bgr(oriented)
        except Exception as exc:  # truncated data, bad checksums, broken streams
            raise CorruptImage(f"the {found} data cannot be decoded: {exc}") from exc
        finally:
            image.close()

    return pixels


def decode_image(
    data: bytes,
    media_type: str | None = None,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> DecodedImage:
    """Check and decode an uploaded image.

    Args:
        data: the image file as sent.
        media_type: its Content-Type, if any (parameters are ignored). None or
            `application/octet-stream`: the bytes alone decide the format.
        max_bytes: most bytes accepted.
        max_pixels: most pixels (width x height) accepted, checked from the header before
            anything is decoded.

    Returns:
        The pixels as 8-bit BGR (greyscale widened to three channels, transparency laid on
        white, EXIF orientation applied so coordinates match what viewers show) and the
        image's format, size, byte count and SHA-256.

    Raises:
        EmptyImage: no bytes (422).
        ImageTooLarge: more than `max_bytes` (413).
        UnsupportedImage: not JPEG, PNG or WebP, or not what `media_type` says (415).
        TooManyPixels: the header announces more than `max_pixels` (413).
        CorruptImage: truncated or undecodable data (422).
    """
    found = _checked_format(data, media_type, max_bytes)
    pixels = _decode_pixels(data, found, max_pixels)
    height, width = pixels.shape[:2]
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        info=ImageInfo(
            format=found,
            width=width,
            height=height,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        ),
    )


#: Encoder flags per format: good quality, reasonable size.
_ENCODE_PARAMS: dict[str, tuple[str, list[int]]] = {
    "JPEG": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "PNG": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]),
    "WEBP": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
}


def encode_image(pixels: BGRImage, format: str = "JPEG") -> bytes:
    """8-bit BGR pixels as a JPEG, PNG or WebP file (e.g. a redacted image).

    Args:
        pixels: what `decode_image` or `redact` gives.
        format: `JPEG`, `PNG` or `WEBP` (the values of `IMAGE_MEDIA_TYPES`).
    """
    if format not in _ENCODE_PARAMS:
        raise ValueError(f"cannot encode {format}; one of {', '.join(_ENCODE_PARAMS)}")
    extension, params = _ENCODE_PARAMS[format]
    ok, encoded = cv2.imencode(extension, pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {format}")
    return encoded.tobytes()
