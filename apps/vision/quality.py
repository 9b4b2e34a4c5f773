"""Measures of an image itself, no model: sharpness, exposure, size and a perceptual hash.

Plain domain code (numpy and OpenCV): no web framework, no Dapr.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from consort.contracts.vision import Quality

#: The perceptual hash works on a grey thumbnail of this side...
_PHASH_SIZE = 32
#: ...and keeps this many lowest frequencies in each direction (8 x 8 = 64 bits).
_PHASH_LOW = 8


def grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The grey levels (BT.601 weights) of a BGR or already grey 8-bit image."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # type: ignore[return-value]


def sharpness(grey_image: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian: high for crisp edges, low for blur or flat images.

    It grows with detail as well as focus, so it compares images of one scene or kind
    better than unrelated ones. Computed in 16 bits (a 3x3 Laplacian of 8-bit values
    stays within +-1020), so a 40-megapixel image needs no 64-bit copy.
    """
    laplacian = cv2.Laplacian(grey_image, cv2.CV_16S)
    _, std = cv2.meanStdDev(laplacian)
    return float(std[0, 0]) ** 2


@lru_cache(maxsize=1)
def _dct_matrix(n: int) -> NDArray[np.float64]:
    """The unnormalised DCT-II basis, C[k, i] = 2 cos(pi k (2i + 1) / 2n)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def phash(grey_image: NDArray[np.uint8]) -> str:
    """64-bit perceptual hash as 16 hex digits.

    The image is shrunk to 32x32 grey (area averaging), transformed with a 2-D DCT, and
    the 8x8 lowest frequencies (the DC term included) are compared with their median: a
    bit is 1 above it. Bits run row by row from the lowest frequency, most significant
    first. Near-duplicates (resized, recompressed, slightly re-exposed) differ in a few
    bits; unrelated images in about half of them (see `hamming`).
    """
    thumb = cv2.resize(grey_image, (_PHASH_SIZE, _PHASH_SIZE), interpolation=cv2.INTER_AREA)
    basis = _dct_matrix(_PHASH_SIZE)
    dct = basis @ thumb.astype(np.float64) @ basis.T
    low = dct[:_PHASH_LOW, :_PHASH_LOW]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    """How many of the 64 bits two perceptual hashes (16 hex digits each) differ in."""
    if len(a) != 16 or len(b) != 16:
        raise ValueError("perceptual hashes are 16 hex digits")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def measure(image: NDArray[np.uint8]) -> Quality:
    """Size, sharpness, brightness, contrast and perceptual hash of an 8-bit image.

    Args:
        image: BGR (as `decode_image` gives) or grey pixels.
    """
    height, width = image.shape[:2]
    levels = grey(image)
    mean, std = cv2.meanStdDev(levels)
    return Quality(
        width=width,
        height=height,
        megapixels=round(width * height / 1e6, 3),
        sharpness=round(sharpness(levels), 3),
        brightness=round(float(mean[0, 0]), 3),
        contrast=round(float(std[0, 0]), 3),
        phash=phash(levels),
    )
