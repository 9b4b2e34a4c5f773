"""Face detection and redaction, as the vision service does them (no sidecar)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data as samples

from apps.vision.faces import (
    BlazeFaceDetector,
    HaarFaceDetector,
    ModelMissing,
    redact,
    weighted_nms,
)
from apps.vision.settings import BlazeFaceVariant, VisionSettings, blazeface_path
from consort.contracts.vision import Box, Face, Faces

#: The astronaut's face in skimage.data.astronaut() (x0, y0, x1, y1), by eye.
ASTRONAUT_FACE = (175, 70, 275, 180)


def _bgr(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def astronaut() -> NDArray[np.uint8]:
    return _bgr(samples.astronaut())


@pytest.fixture(scope="module")
def coffee() -> NDArray[np.uint8]:
    return _bgr(samples.coffee())


@pytest.fixture(scope="module")
def blazeface() -> BlazeFaceDetector:
    path = blazeface_path(BlazeFaceVariant.FRONT)
    # A missing model is a broken setup, not a reason to skip: say how to mend it.
    assert path.is_file(), f"{path} is missing: run `make setup-vision`"
    return BlazeFaceDetector(path)


@pytest.fixture(scope="module")
def haar() -> HaarFaceDetector:
    return HaarFaceDetector()


def lfw_faces(count: int) -> list[NDArray[np.uint8]]:
    """The first LFW subset faces, 25x25 grey, upscaled 4x with some border around."""
    out = []
    for patch in samples.lfw_subset()[:count]:
        grey = cv2.resize((patch * 255).round().astype(np.uint8), (100, 100), cv2.INTER_CUBIC)
        grey = cv2.copyMakeBorder(grey, 25, 25, 25, 25, cv2.BORDER_REPLICATE)
        out.append(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    return out


def _centre_inside(box: Box, region: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = region
    return x0 <= box.x + box.width / 2 <= x1 and y0 <= box.y + box.height / 2 <= y1


def test_blazeface_finds_the_astronaut_with_landmarks(
    blazeface: BlazeFaceDetector, astronaut: NDArray[np.uint8]
) -> None:
    result = blazeface.detect(astronaut)
    assert result.model.name == "blazeface"
    assert result.model.version == "1.2.0"
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.score > 0.8
    assert _centre_inside(face.box, ASTRONAUT_FACE)
    assert 70 < face.box.width < 130
    assert len(face.landmarks) == 6
    right_eye, left_eye, nose, mouth, right_ear, left_ear = face.landmarks
    # The subject's right eye is on the viewer's left; eyes above nose above mouth.
    assert right_eye.x < nose.x < left_eye.x
    assert right_ear.x < right_eye.x and left_eye.x < left_ear.x
    assert max(right_eye.y, left_eye.y) < nose.y < mouth.y
    for point in face.landmarks:
        assert ASTRONAUT_FACE[0] - 10 <= point.x <= ASTRONAUT_FACE[2] + 10


def test_blazeface_maps_boxes_back_through_the_letterbox(
    blazeface: BlazeFaceDetector, astronaut: NDArray[np.uint8]
) -> None:
    # The same photo in a wider canvas, 100 pixels right and 30 down: the box moves with
    # it. (Not much wider: the front model loses faces under about a seventh of the width.)
    canvas = np.full((560, 660, 3), 90, dtype=np.uint8)
    canvas[30:542, 100:612] = astronaut
    alone = blazeface.detect(astronaut).faces[0].box
    placed = blazeface.detect(canvas).faces[0].box
    assert placed.x - alone.x == pytest.approx(100, abs=8)
    assert placed.y - alone.y == pytest.approx(30, abs=8)
    assert placed.width == pytest.approx(alone.width, rel=0.15)


def test_haar_finds_the_astronaut(haar: HaarFaceDetector, astronaut: NDArray[np.uint8]) -> None:
    result = haar.detect(astronaut)
    assert result.model.name == "haarcascade_frontalface_default"
    assert result.model.version == cv2.__version__
    assert len(result.faces) == 1
    assert _centre_inside(result.faces[0].box, ASTRONAUT_FACE)
    assert result.faces[0].score == 1.0
    assert result.faces[0].landmarks == []


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_no_face_in_a_cup_of_coffee(
    request: pytest.FixtureRequest, detector: str, coffee: NDArray[np.uint8]
) -> None:
    assert request.getfixturevalue(detector).detect(coffee).faces == []


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_no_face_in_flat_or_textured_images(request: pytest.FixtureRequest, detector: str) -> None:
    flat = np.full((480, 640, 3), 200, dtype=np.uint8)
    bricks = _bgr(cv2.cvtColor(samples.brick(), cv2.COLOR_GRAY2RGB))
    found = request.getfixturevalue(detector)
    assert found.detect(flat).faces == []
    assert found.detect(bricks).faces == []


@pytest.mark.parametrize("detector", ["blazeface", "haar"])
def test_lfw_faces_are_found(request: pytest.FixtureRequest, detector: str) -> None:
    found = request.getfixturevalue(detector)
    faces = lfw_faces(20)
    hits = sum(bool(found.detect(face).faces) for face in faces)
    assert hits >= 18


def test_blazeface_best_score_separates_faces_from_non_faces(
    blazeface: BlazeFaceDetector,
) -> None:
    patches = samples.lfw_subset()
    images = [
        cv2.cvtColor(
            cv2.resize((p * 255).round().astype(np.uint8), (100, 100), cv2.INTER_CUBIC),
            cv2.COLOR_GRAY2BGR,
        )
        for p in (*patches[:10], *patches[100:110])
    ]
    scores = [blazeface.best_score(image) for image in images]
    assert min(scores[:10]) > max(scores[10:])


def test_tiny_and_grey_images_do_not_break_the_detectors(
    blazeface: BlazeFaceDetector, haar: HaarFaceDetector
) -> None:
    for image in (np.zeros((1, 1, 3), np.uint8), np.zeros((3, 900, 3), np.uint8)):
        assert blazeface.detect(image).faces == []
        assert haar.detect(image).faces == []


def test_weighted_nms_merges_overlaps_and_keeps_the_best_score() -> None:
    corners = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    points = np.zeros((3, 6, 2), dtype=np.float32)
    points[1] += 2
    scores = np.array([0.9, 0.6, 0.7], dtype=np.float32)
    merged = weighted_nms(corners, points, scores, 0.3)
    assert [round(score, 2) for _, _, score in merged] == [0.9, 0.7]
    box, kps, _ = merged[0]
    assert box[0] == pytest.approx(0.6 / 1.5)  # (0 * 0.9 + 1 * 0.6) / 1.5
    assert kps[0, 0] == pytest.approx(2 * 0.6 / 1.5)


def test_a_missing_model_says_how_to_get_it() -> None:
    settings = VisionSettings(blazeface_model="/nonexistent/blazeface.onnx")
    with pytest.raises(ModelMissing, match="make setup-vision"):
        BlazeFaceDetector(settings.blazeface_model_path)


def test_settings_default_to_the_cached_front_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSORT_CACHE", "/somewhere")
    monkeypatch.setenv("VISION_ONNX_THREADS", "2")
    settings = VisionSettings()
    assert settings.app_id == "vision"
    assert settings.onnx_threads == 2
    assert str(settings.blazeface_model_path) == (
        "/somewhere/vision/blazeface-1.2.0/face_detection_front_128x128_barracuda.onnx"
    )
    monkeypatch.setenv("VISION_BLAZEFACE_VARIANT", "back")
    assert VisionSettings().blazeface_model_path.name.startswith("face_detection_back_256")


def test_redaction_blurs_the_face_and_leaves_the_rest(astronaut: NDArray[np.uint8]) -> None:
    face = Face(box=Box(x=180, y=80, width=95, height=95), score=0.9)
    redacted = redact(astronaut, Faces(model=HaarFaceDetector().model, faces=[face]))
    assert redacted.shape == astronaut.shape
    assert not np.shares_memory(redacted, astronaut)
    inside = (slice(85, 170), slice(185, 270))
    changed = np.abs(redacted[inside].astype(int) - astronaut[inside].astype(int)).mean()
    assert changed > 10

    # Detail is gone: the Laplacian of the face region collapses.
    def detail(image: NDArray[np.uint8]) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())

    assert detail(redacted[inside]) < detail(astronaut[inside]) / 20
    # The box grows by 20% per side (19 pixels here); beyond that nothing changes.
    outside = np.ones(astronaut.shape[:2], dtype=bool)
    outside[80 - 20 : 175 + 20, 180 - 20 : 275 + 20] = False
    assert np.array_equal(redacted[outside], astronaut[outside])


def test_redaction_of_the_detected_face_defeats_the_detector(
    blazeface: BlazeFaceDetector, astronaut: NDArray[np.uint8]
) -> None:
    faces = blazeface.detect(astronaut)
    assert blazeface.detect(redact(astronaut, faces)).faces == []


def test_redaction_handles_edges_and_tiny_faces() -> None:
    image = np.random.default_rng(3).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    faces = Faces(
        model=HaarFaceDetector().model,
        faces=[
            Face(box=Box(x=40, y=40, width=30, height=30), score=1),  # past the corner
            Face(box=Box(x=2, y=2, width=6, height=6), score=1),
        ],
    )
    redacted = redact(image, faces)
    assert not np.array_equal(redacted[42:50, 42:50], image[42:50, 42:50])
    assert not np.array_equal(redacted[2:8, 2:8], image[2:8, 2:8])
