"""The vision service under load: images/s and p50/p99 per feature, in one run, computed
in this process (decode + model) and through the gateway (gateway -> daprd -> daprd ->
vision), at concurrency 1 and 4. Results: bench/results/vision.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from skimage import data as samples

from apps.vision.decoding import decode_image
from apps.vision.faces import BlazeFaceDetector, HaarFaceDetector
from apps.vision.ocr import TextReader
from apps.vision.quality import measure
from apps.vision.settings import VisionSettings
from bench.load import Figures, closed_loop
from bench.local import local_system
from bench.machine import describe
from consort.dev.system import LocalSystem

RESULTS = Path(__file__).parent / "results"


def photo() -> bytes:
    """The astronaut photo (512 x 512, one face) as a JPEG."""
    rgb = samples.astronaut()
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def sign() -> bytes:
    """A rendered sign with two lines of text, as a PNG."""
    image = np.full((240, 800, 3), 255, np.uint8)
    cv2.putText(
        image, "CONSORT MICROSERVICES", (20, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3
    )
    cv2.putText(
        image, "Dapr 1.18.3 sidecars", (20, 180), cv2.FONT_HERSHEY_DUPLEX, 1.4, (0, 0, 0), 2
    )
    return cv2.imencode(".png", image)[1].tobytes()


CASES: dict[str, tuple[str, dict[str, str], str]] = {
    # name: (image, query, media type)
    "faces (blazeface)": ("photo", {"features": "faces", "face_model": "blazeface"}, "image/jpeg"),
    "faces (haar)": ("photo", {"features": "faces", "face_model": "haar"}, "image/jpeg"),
    "text (pp-ocr)": ("sign", {"features": "text"}, "image/png"),
    "quality": ("photo", {"features": "quality"}, "image/jpeg"),
}


def in_process_calls() -> dict[str, Callable[[], Awaitable[bool]]]:
    settings = VisionSettings()
    blaze = BlazeFaceDetector(settings.blazeface_model_path, threads=settings.onnx_threads)
    haar = HaarFaceDetector()
    reader = TextReader(
        threads=settings.onnx_threads,
        max_side=settings.ocr_max_side,
        rotated_text=settings.ocr_rotated_text,
    )
    images = {"photo": photo(), "sign": sign()}

    def call(image: str, work: Callable[[Any], object]) -> Callable[[], Awaitable[bool]]:
        async def run() -> bool:
            decoded = decode_image(images[image])
            work(decoded.pixels)
            return True

        return run

    return {
        "faces (blazeface)": call("photo", blaze.detect),
        "faces (haar)": call("photo", haar.detect),
        "text (pp-ocr)": call("sign", reader.read),
        "quality": call("photo", measure),
    }


async def measure_all(
    system: LocalSystem, requests: int
) -> dict[str, dict[str, dict[str, Figures]]]:
    images = {"photo": photo(), "sign": sign()}
    out: dict[str, dict[str, dict[str, Figures]]] = {}
    local = in_process_calls()
    async with httpx.AsyncClient(headers=system.api_headers, timeout=120) as client:
        for name, (image, query, media) in CASES.items():

            async def through_gateway(
                image: str = image, query: dict[str, str] = query, media: str = media
            ) -> bool:
                response = await client.post(
                    f"{system.url('gateway')}/v1/images/analyze",
                    content=images[image],
                    params=query,
                    headers={"content-type": media},
                )
                return response.status_code == 200

            for route, call in (("in-process", local[name]), ("gateway", through_gateway)):
                for concurrency in (1, 4):
                    n = requests if concurrency == 1 else requests * 2
                    figures = await closed_loop(call, requests=n, concurrency=concurrency, warmup=5)
                    out.setdefault(name, {}).setdefault(route, {})[f"c{concurrency}"] = figures
                    print(
                        f"{name:>18} {route:>10} c={concurrency} p50 {figures.p50_ms:8.2f} ms  "
                        f"p99 {figures.p99_ms:8.2f} ms  {figures.throughput_rps:7.1f} images/s  "
                        f"errors {figures.errors}"
                    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "vision.json")
    args = parser.parse_args()
    started = time.monotonic()
    with local_system(["vision", "gateway"]) as system:
        results = asyncio.run(measure_all(system, args.requests))
    summary = {
        name: {
            level: {
                "gateway_to_in_process_p50_ratio": round(
                    by_route["gateway"][level].p50_ms / by_route["in-process"][level].p50_ms, 3
                ),
                "gateway_overhead_p50_ms": round(
                    by_route["gateway"][level].p50_ms - by_route["in-process"][level].p50_ms, 2
                ),
            }
            for level in ("c1", "c4")
        }
        for name, by_route in results.items()
    }
    report = {
        "benchmark": "vision",
        "description": __doc__,
        "machine": describe(),
        "results": {
            name: {
                route: {lv: f.as_dict() for lv, f in levels.items()}
                for route, levels in routes.items()
            }
            for name, routes in results.items()
        },
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {args.out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
