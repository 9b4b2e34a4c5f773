"""Image quality measures and the perceptual hash (no sidecar)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data as samples

from apps.vision.quality import hamming, measure, phash


def _bgr(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # type: ignore[return-value]


def _recompressed(image: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def astronaut() -> NDArray[np.uint8]:
    return _bgr(samples.astronaut())


def test_measures_of_a_photo(astronaut: NDArray[np.uint8]) -> None:
    quality = measure(astronaut)
    assert (quality.width, quality.height) == (512, 512)
    assert quality.megapixels == pytest.approx(0.262)
    assert 0 < quality.brightness < 255
    assert quality.contrast > 30
    assert quality.sharpness > 100
    assert len(quality.phash) == 16
    int(quality.phash, 16)


def test_blur_lowers_sharpness(astronaut: NDArray[np.uint8]) -> None:
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3)
    assert measure(blurred).sharpness < measure(astronaut).sharpness / 10


def test_brightness_and_contrast_of_flat_and_split_images() -> None:
    flat = np.full((10, 10, 3), 200, dtype=np.uint8)
    assert measure(flat).brightness == pytest.approx(200)
    assert measure(flat).contrast == 0
    assert measure(flat).sharpness == 0
    split = np.zeros((10, 10), dtype=np.uint8)
    split[:, 5:] = 255
    assert measure(split).brightness == pytest.approx(127.5)
    assert measure(split).contrast == pytest.approx(127.5)


def test_phash_survives_resizing_and_recompression(astronaut: NDArray[np.uint8]) -> None:
    original = phash(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))
    smaller = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    for copy in (smaller, _recompressed(astronaut, 40), _recompressed(smaller, 60)):
        assert hamming(original, measure(copy).phash) <= 6


def test_phash_tells_different_images_apart(astronaut: NDArray[np.uint8]) -> None:
    others = [samples.coffee(), samples.chelsea(), samples.rocket()]
    hashes = [measure(astronaut).phash] + [measure(_bgr(other)).phash for other in others]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            assert hamming(a, b) >= 20


def test_hamming() -> None:
    assert hamming("0" * 16, "f" * 16) == 64
    assert hamming("8000000000000001", "0000000000000000") == 2
    with pytest.raises(ValueError, match="16 hex digits"):
        hamming("abc", "0" * 16)
