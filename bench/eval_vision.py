"""Vision quality: face detection on scikit-image's LFW subset, OCR on rendered text.

Faces: `skimage.data.lfw_subset()` holds 100 faces and 100 non-faces (patches of the
same photos without a face), 25x25 grey each, from Labeled Faces in the Wild. Each image
is upscaled 4x (bicubic, to 100x100) because both detectors need more pixels than that,
and scored as it is (the face fills the frame) and with a 25-pixel border of replicated
edge pixels (the context detectors are trained with). Each detector gives a score per
image; ROC AUC says how well the score ranks faces above non-faces whatever the
threshold, accuracy counts the service's own decision (a face found or not).

OCR: lines of text rendered with OpenCV's Hershey fonts at several sizes, on white, grey
and noisy backgrounds, read back by the service's TextReader. Character accuracy is
1 - CER: the Levenshtein distance between what was read (lines joined by a space) and
what was rendered, over the rendered length, summed over all images. It is given as is
and with spaces ignored (the recogniser often drops the space between words).

Speed: each feature in process on a ~1-megapixel photo (the astronaut, 1024x1024).
Everything runs in this process: no sidecar. Results: bench/results/quality-vision.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from skimage import data as samples

from apps.vision.decoding import decode_image, encode_image
from apps.vision.faces import BlazeFaceDetector, FaceDetector, HaarFaceDetector, redact
from apps.vision.ocr import TextReader
from apps.vision.quality import measure
from apps.vision.settings import BlazeFaceVariant, VisionSettings, blazeface_path
from bench.machine import describe

RESULTS = Path(__file__).parent / "results"

LFW_UPSCALE = 4
LFW_BORDER = 25

#: Rendered lines: letters of both cases, digits, punctuation, words of several lengths.
OCR_TEXTS = (
    "CONSORT 2026",
    "Invoice No. 4821, total $1,299.00",
    "The quick brown fox jumps over the lazy dog",
    "Meeting room 3B at 14:30",
    "Dapr sidecar v1.18 ready",
    "Exit only - keep clear",
)
OCR_FONTS = {
    "HERSHEY_SIMPLEX": cv2.FONT_HERSHEY_SIMPLEX,
    "HERSHEY_PLAIN": cv2.FONT_HERSHEY_PLAIN,
    "HERSHEY_DUPLEX": cv2.FONT_HERSHEY_DUPLEX,
    "HERSHEY_COMPLEX": cv2.FONT_HERSHEY_COMPLEX,
    "HERSHEY_TRIPLEX": cv2.FONT_HERSHEY_TRIPLEX,
}
OCR_SCALES = (0.6, 1.0, 1.5, 2.0)
OCR_BACKGROUNDS = ("white", "grey", "noisy")

#: How read and rendered text are compared: as they are; without spaces (the recogniser
#: often drops the one between words); and also taking digit 0 for letter O, which the
#: Hershey fonts draw almost alike (a diagnostic, not the headline figure).
COMPARISONS: dict[str, Callable[[str], str]] = {
    "with_spaces": lambda text: text,
    "ignoring_spaces": lambda text: text.replace(" ", ""),
    "ignoring_spaces_and_0_vs_O": lambda text: text.replace(" ", "").replace("0", "O"),
}


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos = np.asarray(positives, dtype=np.float64)[:, None]
    neg = np.asarray(negatives, dtype=np.float64)[None, :]
    wins = (pos > neg).sum() + 0.5 * (pos == neg).sum()
    return float(wins / (pos.size * neg.size))


def levenshtein(a: str, b: str) -> int:
    """Edits (insertions, deletions, substitutions) that turn `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def lfw_images(border: int) -> tuple[list[NDArray[np.uint8]], list[NDArray[np.uint8]]]:
    """The LFW subset's faces and non-faces as BGR, upscaled, with `border` pixels around."""
    images = []
    for patch in samples.lfw_subset():
        grey = (patch * 255).round().astype(np.uint8)
        side = grey.shape[0] * LFW_UPSCALE
        grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC)
        if border:
            grey = cv2.copyMakeBorder(grey, border, border, border, border, cv2.BORDER_REPLICATE)
        images.append(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    return images[:100], images[100:]


def face_scores(
    faces: list[NDArray[np.uint8]],
    others: list[NDArray[np.uint8]],
    score: Callable[[NDArray[np.uint8]], float],
    found: Callable[[NDArray[np.uint8]], bool],
) -> dict[str, Any]:
    pos = [score(image) for image in faces]
    neg = [score(image) for image in others]
    hits = sum(found(image) for image in faces)
    false_alarms = sum(found(image) for image in others)
    return {
        "roc_auc": round(roc_auc(pos, neg), 4),
        "accuracy": round((hits + len(others) - false_alarms) / (len(faces) + len(others)), 4),
        "faces_found": f"{hits}/{len(faces)}",
        "false_faces": f"{false_alarms}/{len(others)}",
    }


def evaluate_faces(settings: VisionSettings) -> dict[str, Any]:
    blazefaces = {
        variant: BlazeFaceDetector(
            blazeface_path(variant),
            score_threshold=settings.face_score_threshold,
            nms_iou=settings.face_nms_iou,
            threads=settings.onnx_threads,
        )
        for variant in BlazeFaceVariant
    }
    haar = HaarFaceDetector()
    # Haar's continuous score: the cascade's raw hits (every window that passed all its
    # stages, before neighbours are grouped). More windows at nearby places and scales
    # mean a more certain face; the service reports faces at min_neighbors=5.
    raw_haar = HaarFaceDetector(min_neighbors=0)
    results: dict[str, Any] = {}
    for framing, border in (("tight_crop", 0), ("with_border", LFW_BORDER)):
        faces, others = lfw_images(border)
        by_detector: dict[str, Any] = {}
        for variant, detector in blazefaces.items():
            by_detector[f"blazeface_{variant}"] = face_scores(
                faces,
                others,
                detector.best_score,
                lambda image, d=detector: bool(d.detect(image).faces),  # type: ignore[misc]
            )
        by_detector["haar"] = face_scores(
            faces,
            others,
            lambda image: float(len(raw_haar.detect_weighted(image))),
            lambda image: bool(haar.detect(image).faces),
        )
        results[framing] = by_detector
    detectors: dict[str, FaceDetector] = {f"blazeface_{v}": d for v, d in blazefaces.items()}
    detectors["haar"] = haar
    results["non_face_photos"] = false_faces_in_photos(detectors)
    results["face_size"] = face_size_sweep(detectors)
    return results


#: The astronaut's face in the 512x512 photo (x, y, width, height), as BlazeFace boxes it.
ASTRONAUT_FACE = (178, 81, 94, 94)

#: scikit-image photos with no human face in them (a cat, coins, a rocket, textures...).
NON_FACE_PHOTOS = (
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "coins",
    "text",
    "page",
    "horse",
    "retina",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "colorwheel",
    "logo",
    "moon",
    "clock",
)


def _bgr(name: str) -> NDArray[np.uint8]:
    image = np.asarray(getattr(samples, name)())
    if image.dtype != np.uint8:
        image = (image * 255 if image.max() <= 1 else image).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)  # type: ignore[return-value]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)  # type: ignore[return-value]
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # type: ignore[return-value]


def false_faces_in_photos(detectors: dict[str, FaceDetector]) -> dict[str, Any]:
    """Faces each detector reports in scikit-image photos that show none."""
    found: dict[str, dict[str, int]] = {name: {} for name in detectors}
    for photo in NON_FACE_PHOTOS:
        image = _bgr(photo)
        for name, detector in detectors.items():
            count = len(detector.detect(image).faces)
            if count:
                found[name][photo] = count
    return {
        "photos": list(NON_FACE_PHOTOS),
        "photos_with_false_faces": {name: len(hits) for name, hits in found.items()},
        "where": found,
    }


def face_size_sweep(detectors: dict[str, FaceDetector]) -> dict[str, Any]:
    """Whether each detector finds the astronaut's face as it takes less of the frame.

    The photo is shrunk and laid at the centre of a 1024x1024 grey canvas, so the face's
    width is the given share of the image's. A face counts when the centre of a reported
    box lies inside the true face box.
    """
    photo = _bgr("astronaut")
    x, y, width, height = ASTRONAUT_FACE
    sweep: dict[str, Any] = {}
    for share in (0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03):
        scale = share * 1024 / width
        side = round(512 * scale)
        small = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        canvas_side = max(1024, side)
        canvas = np.full((canvas_side, canvas_side, 3), 128, dtype=np.uint8)
        offset = (canvas_side - side) // 2
        canvas[offset : offset + side, offset : offset + side] = small
        x0, y0 = offset + x * scale, offset + y * scale
        x1, y1 = x0 + width * scale, y0 + height * scale
        row = {}
        for name, detector in detectors.items():
            boxes = [face.box for face in detector.detect(canvas).faces]
            row[name] = any(
                x0 <= b.x + b.width / 2 <= x1 and y0 <= b.y + b.height / 2 <= y1 for b in boxes
            )
        sweep[f"face_{round(share * 100)}%_of_width"] = row
    return sweep


def render(text: str, font: int, scale: float, background: str, seed: int) -> NDArray[np.uint8]:
    """One line of dark text with a margin of one line height, on the given background."""
    thickness = max(1, round(scale * 1.6))
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin = max(16, height)
    shape = (height + baseline + 2 * margin, width + 2 * margin, 3)
    rng = np.random.default_rng(seed)
    ink = (20, 20, 20)
    if background == "white":
        image = np.full(shape, 255, dtype=np.uint8)
    elif background == "grey":
        image = np.full(shape, 165, dtype=np.uint8)
    else:
        image = np.full(shape, 215, dtype=np.uint8)
    cv2.putText(image, text, (margin, margin + height), font, scale, ink, thickness, cv2.LINE_AA)
    if background == "noisy":
        noise = rng.normal(0, 25, shape)
        image = np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return image


def evaluate_ocr(reader: TextReader) -> dict[str, Any]:
    totals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    failures: list[dict[str, str]] = []
    seconds: list[float] = []
    seed = 0
    for text in OCR_TEXTS:
        for font_name, font in OCR_FONTS.items():
            for scale in OCR_SCALES:
                for background in OCR_BACKGROUNDS:
                    seed += 1
                    image = render(text, font, scale, background, seed)
                    started = time.perf_counter()
                    lines = reader.read(image).lines
                    seconds.append(time.perf_counter() - started)
                    read = " ".join(line.text for line in lines)
                    keys = ("all", f"font={font_name}", f"scale={scale}", f"bg={background}")
                    for mode, fold in COMPARISONS.items():
                        truth, guess = fold(text), fold(read)
                        distance = levenshtein(guess, truth)
                        for key in keys:
                            tally = totals[mode][key]
                            tally[0] += distance
                            tally[1] += len(truth)
                            tally[2] += guess == truth
                            tally[3] += 1
                    misread = read.replace(" ", "") != text.replace(" ", "")
                    if misread and sum(f["rendered"] == text for f in failures) < 4:
                        failures.append(
                            {
                                "font": font_name,
                                "scale": str(scale),
                                "background": background,
                                "rendered": text,
                                "read": read,
                            }
                        )
    images = len(OCR_TEXTS) * len(OCR_FONTS) * len(OCR_SCALES) * len(OCR_BACKGROUNDS)
    report: dict[str, Any] = {"images": images}
    for mode, table in totals.items():
        report[mode] = {
            key: {
                "char_accuracy": round(1 - edits / length, 4),
                "exact_lines": f"{exact}/{count}",
            }
            for key, (edits, length, exact, count) in table.items()
        }
    report["ms_per_image_median"] = round(statistics.median(seconds) * 1000, 1)
    report["misreads_sample"] = failures
    return report


def timed(action: Callable[[], object], repeat: int) -> float:
    action()  # warm-up: first runs allocate
    started = time.perf_counter()
    for _ in range(repeat):
        action()
    return round((time.perf_counter() - started) / repeat * 1000, 1)


def evaluate_speed(settings: VisionSettings, reader: TextReader) -> dict[str, Any]:
    photo = cv2.resize(
        cv2.cvtColor(samples.astronaut(), cv2.COLOR_RGB2BGR), (1024, 1024), cv2.INTER_CUBIC
    )
    buffer = io.BytesIO()
    Image.fromarray(photo[..., ::-1]).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    front = BlazeFaceDetector(blazeface_path(BlazeFaceVariant.FRONT), threads=settings.onnx_threads)
    back = BlazeFaceDetector(blazeface_path(BlazeFaceVariant.BACK), threads=settings.onnx_threads)
    haar = HaarFaceDetector()
    faces = front.detect(photo)
    return {
        "image": f"astronaut upscaled to 1024x1024, JPEG q90 ({len(jpeg)} bytes)",
        "onnx_threads": settings.onnx_threads,
        "ms": {
            "decode_jpeg": timed(lambda: decode_image(jpeg, "image/jpeg"), 20),
            "faces_blazeface_front": timed(lambda: front.detect(photo), 20),
            "faces_blazeface_back": timed(lambda: back.detect(photo), 20),
            "faces_haar": timed(lambda: haar.detect(photo), 5),
            "text_rapidocr": timed(lambda: reader.read(photo), 3),
            "quality": timed(lambda: measure(photo), 20),
            "redact_and_encode_jpeg": timed(lambda: encode_image(redact(photo, faces)), 20),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-vision.json")
    args = parser.parse_args()
    settings = VisionSettings()
    started = time.perf_counter()
    reader = TextReader(
        threads=settings.onnx_threads,
        max_side=settings.ocr_max_side,
        rotated_text=settings.ocr_rotated_text,
    )
    print("[eval-vision] faces: LFW subset (100 faces, 100 non-faces)")
    faces = evaluate_faces(settings)
    print("[eval-vision] OCR: rendered lines")
    ocr = evaluate_ocr(reader)
    print("[eval-vision] speed: ~1 MP photo, in process")
    speed = evaluate_speed(settings, reader)
    report = {
        "evaluation": "quality-vision",
        "description": __doc__,
        "machine": describe(),
        "models": [
            BlazeFaceDetector(blazeface_path()).model.model_dump(),
            HaarFaceDetector().model.model_dump(),
            reader.model.model_dump(),
        ],
        "settings": {
            "face_score_threshold": settings.face_score_threshold,
            "face_nms_iou": settings.face_nms_iou,
            "haar": "scaleFactor 1.1, minNeighbors 5, minSize 24, longest side <= 1024",
            "ocr_max_side": settings.ocr_max_side,
            "ocr_rotated_text": settings.ocr_rotated_text,
        },
        "faces": {
            "data": "skimage.data.lfw_subset(): 100 faces then 100 non-faces, 25x25 grey "
            f"(Labeled Faces in the Wild), upscaled {LFW_UPSCALE}x bicubic; with_border adds "
            f"{LFW_BORDER} replicated edge pixels on every side",
            "scores": {
                "blazeface": "the highest sigmoid score of any anchor (thresholds aside)",
                "haar": "raw cascade hits (detectMultiScale3 at minNeighbors 0): windows "
                "that passed every stage, before grouping",
            },
            "accuracy": "the service's decision: a face reported (BlazeFace at the score "
            "threshold, Haar at minNeighbors 5) for faces, none for non-faces",
            **faces,
        },
        "ocr": {
            "data": f"{len(OCR_TEXTS)} lines x {len(OCR_FONTS)} Hershey fonts x font scales "
            f"{list(OCR_SCALES)} x backgrounds {list(OCR_BACKGROUNDS)} (white: 255; grey: "
            "165; noisy: 215 plus Gaussian noise of sigma 25), dark text, anti-aliased",
            "metric": "char_accuracy = 1 - sum(Levenshtein edits) / sum(rendered length); "
            "lines read are joined by one space",
            **ocr,
        },
        "speed": speed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_summary(report)
    print(f"[eval-vision] written to {args.out}")


def print_summary(report: dict[str, Any]) -> None:
    for framing in ("tight_crop", "with_border"):
        for name, row in report["faces"][framing].items():
            print(
                f"  faces {framing:<11} {name:<17} AUC {row['roc_auc']:.4f}  "
                f"accuracy {row['accuracy']:.3f}  found {row['faces_found']}  "
                f"false {row['false_faces']}"
            )
    for mode in COMPARISONS:
        row = report["ocr"][mode]["all"]
        print(
            f"  OCR {mode:<16} char accuracy {row['char_accuracy']:.4f}  exact {row['exact_lines']}"
        )
    for name, ms in report["speed"]["ms"].items():
        print(f"  {name:<24} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
