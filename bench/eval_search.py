"""The search service's embeddings against the reference: cosine >= 0.999 on real sentences.

The texts are the first PER_SET of each of the four human-rated VADER sets (tweets, movie
reviews, Amazon reviews, NYT editorials; `runtime/eval-data.sh`): 400 real sentences with
emoticons, accents, URLs and misspellings. Each is embedded by the running search service
through the gateway (`POST /v1/embeddings`, batches of 32, real sidecars) and by the numpy
reference of `bench/minilm_reference.py` (its own WordPiece tokenizer and BERT forward,
sentence-transformers' mean pooling and normalisation), and the two vectors' cosine is
reported with the token counts' agreement. Results: bench/results/quality-search.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.eval_sentiment import data_dir, load_set
from bench.local import local_system
from bench.machine import describe
from bench.minilm_reference import MiniLM
from consort.contracts.search import EMBEDDING_MODEL

RESULTS = Path(__file__).parent / "results"
SETS = (
    "tweets_GroundTruth.txt",
    "movieReviewSnippets_GroundTruth.txt",
    "amazonReviewSnippets_GroundTruth.txt",
    "nytEditorialSnippets_GroundTruth.txt",
)
PER_SET = 100
BATCH = 32
TARGET = 0.999


def texts_of(folder: Path, per_set: int) -> list[tuple[str, str]]:
    """(set, text) pairs: the first `per_set` texts of each set, at most 5,000 characters."""
    return [
        (name.split("_")[0], text)
        for name in SETS
        for _, _, text in load_set(folder / name)[:per_set]
        if text.strip() and len(text) <= 5000
    ]


def service_vectors(texts: list[str]) -> tuple[list[list[float]], list[int]]:
    vectors: list[list[float]] = []
    tokens: list[int] = []
    with (
        local_system(["search", "gateway"]) as system,
        httpx.Client(base_url=system.url("gateway"), headers=system.api_headers, timeout=60) as api,
    ):
        for start in range(0, len(texts), BATCH):
            response = api.post("/v1/embeddings", json={"texts": texts[start : start + BATCH]})
            response.raise_for_status()
            body = response.json()
            assert body["model"] == EMBEDDING_MODEL.model_dump(), body["model"]
            vectors += body["embeddings"]
            tokens += body["tokens"]
    return vectors, tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir(), help="the VADER sets' folder")
    parser.add_argument("--per-set", type=int, default=PER_SET)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-search.json")
    args = parser.parse_args(argv)
    pairs = texts_of(args.data, args.per_set)
    texts = [t for _, t in pairs]

    started = time.monotonic()
    served, served_tokens = service_vectors(texts)
    service_s = time.monotonic() - started
    reference = MiniLM()
    started = time.monotonic()
    expected = reference.embed(texts)
    reference_s = time.monotonic() - started
    reference_tokens = [len(reference.tokenizer.encode(t)) for t in texts]

    cosines = np.array(
        [float(np.dot(np.array(a), b)) for a, b in zip(served, expected, strict=True)]
    )
    by_set: dict[str, Any] = {}
    for name in dict.fromkeys(s for s, _ in pairs):
        mine = cosines[[i for i, (s, _) in enumerate(pairs) if s == name]]
        by_set[name] = {"texts": len(mine), "min": round(float(mine.min()), 7)}
    worst = int(cosines.argmin())
    result = {
        "machine": describe(),
        "model": EMBEDDING_MODEL.model_dump(),
        "texts": len(texts),
        "target_cosine": TARGET,
        "cosine": {
            "min": round(float(cosines.min()), 7),
            "mean": round(float(cosines.mean()), 7),
            "p01": round(float(np.percentile(cosines, 1)), 7),
            "at_or_above_target": int((cosines >= TARGET).sum()),
        },
        "by_set": by_set,
        "tokens_agree": int(
            sum(a == b for a, b in zip(served_tokens, reference_tokens, strict=True))
        ),
        "worst": {"text": texts[worst][:200], "cosine": round(float(cosines[worst]), 7)},
        "seconds": {
            "service_through_gateway": round(service_s, 1),
            "numpy_reference": round(reference_s, 1),
        },
        "reference": "bench/minilm_reference.py: WordPiece and BERT in numpy from the same "
        "model.safetensors and tokenizer.json; mean pooling over the tokens, then L2 "
        "normalisation (sentence-transformers' Pooling and Normalize modules)",
        "retrieval": "bench/eval_search_sts.py: the STS Benchmark (Spearman beside MTEB's "
        "published figure) and paraphrase retrieval, through the index; "
        "bench/results/quality-search-sts.json",
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result["cosine"]["min"] < TARGET:  # type: ignore[index]
        raise SystemExit(f"a cosine below {TARGET}: {result['worst']}")


if __name__ == "__main__":
    main()
