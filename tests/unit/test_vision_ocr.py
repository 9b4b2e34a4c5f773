"""Text in images with RapidOCR, as the vision service reads it (no sidecar)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from apps.vision.ocr import TextReader, reading_order


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def rendered(lines: list[str], scale: float = 1.5, background: int = 255) -> NDArray[np.uint8]:
    image = np.full((90 + 70 * len(lines), 900, 3), background, dtype=np.uint8)
    for row, text in enumerate(lines):
        cv2.putText(
            image,
            text,
            (40, 80 + 70 * row),
            cv2.FONT_HERSHEY_DUPLEX,
            scale,
            (20, 20, 20),
            2,
            cv2.LINE_AA,
        )
    return image


def test_reads_a_rendered_line(reader: TextReader) -> None:
    result = reader.read(rendered(["CONSORT 2026"], scale=2.5))
    assert result.model.name == "rapidocr-onnxruntime"
    assert result.model.version == "1.4.4"
    read = " ".join(line.text for line in result.lines)
    # Hershey fonts draw O and 0 almost alike: those two are the one allowed confusion.
    assert read.replace(" ", "").replace("0", "O") == "CONSORT2O26".replace("0", "O")
    for line in result.lines:
        assert line.confidence > 0.8


def test_lines_come_top_to_bottom_with_polygons(reader: TextReader) -> None:
    image = rendered(["Invoice number 4821", "Total due 1299 EUR", "Thank you"])
    lines = reader.read(image).lines
    assert " ".join(line.text for line in lines).replace(" ", "") == (
        "Invoicenumber4821Totaldue1299EURThankyou"
    )
    tops = [min(p.y for p in line.polygon) for line in lines]
    assert tops == sorted(tops)
    for line in lines:
        assert len(line.polygon) == 4
        top_left, top_right, bottom_right, bottom_left = line.polygon
        # Clockwise from top left.
        assert top_left.x < top_right.x and bottom_left.x < bottom_right.x
        assert top_left.y < bottom_left.y and top_right.y < bottom_right.y
        assert all(0 <= p.x <= 900 and 0 <= p.y <= image.shape[0] for p in line.polygon)


def test_reads_on_grey(reader: TextReader) -> None:
    read = " ".join(
        line.text for line in reader.read(rendered(["Meeting at 14:30"], background=160)).lines
    )
    assert read.replace(" ", "") == "Meetingat14:30"


def test_no_text_in_a_blank_image(reader: TextReader) -> None:
    assert reader.read(np.full((200, 300, 3), 255, dtype=np.uint8)).lines == []


def test_full_width_punctuation_becomes_ascii(reader: TextReader) -> None:
    read = " ".join(line.text for line in reader.read(rendered(["Paid, thanks"], scale=0.8)).lines)
    assert "，" not in read


def test_reading_order_groups_rows_then_sorts_left_to_right() -> None:
    def line(x: float, y: float, text: str) -> list[object]:
        return [[[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], text, 0.9]

    found = [line(200, 104, "c"), line(0, 100, "b"), line(0, 40, "a"), line(90, 96, "x")]
    assert [item[1] for item in reading_order(found)] == ["a", "b", "x", "c"]
