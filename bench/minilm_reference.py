"""all-MiniLM-L6-v2 in Python with numpy: the reference the search service (Rust) is
checked against, and the in-process Python baseline of its benchmark.

Written from the model's definition, not from the service's code: BERT's uncased
WordPiece tokenizer (clean, split CJK, lower-case, strip accents, split punctuation,
greedy longest-match word pieces, `[CLS] … [SEP]`, at most 256 tokens), the 6-layer
encoder read from `model.safetensors` (its header and raw little-endian float32 data),
then sentence-transformers' Pooling (mean over the real tokens) and Normalize modules.
It shares no code with the Rust service: neither the `tokenizers` library nor candle.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf

from consort.contracts.search import EMBEDDING_MODEL
from consort.kit.settings import cache_dir

MAX_TOKENS = 256
HEADS = 12
EPS = 1e-12

Array = NDArray[np.float32]


def model_dir() -> Path:
    """Where runtime/search.sh unpacked the model (`make setup`)."""
    return cache_dir() / "search" / f"all-minilm-l6-v2-{EMBEDDING_MODEL.version}"


def load_safetensors(path: Path) -> dict[str, Array]:
    """Every float32 tensor of a safetensors file (an 8-byte header length, a JSON header
    of names, dtypes, shapes and byte offsets, then the data)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    base = 8 + length
    tensors: dict[str, Array] = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] != "F32":
            continue
        start, end = spec["data_offsets"]
        data = np.frombuffer(raw[base + start : base + end], dtype="<f4")
        tensors[name] = data.reshape(spec["shape"]).astype(np.float32)
    return tensors


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPiece:
    """BERT's uncased tokenizer, from the vocabulary in `tokenizer.json`."""

    def __init__(self, tokenizer_json: Path) -> None:
        spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        self.vocab: dict[str, int] = spec["model"]["vocab"]
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]

    def _basic(self, text: str) -> list[str]:
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
                cleaned.append(" ")
            elif unicodedata.category(ch).startswith("C"):
                continue
            elif _is_cjk(cp):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(ch)
        words: list[str] = []
        for token in "".join(cleaned).split():
            token = unicodedata.normalize("NFD", token.lower())
            token = "".join(c for c in token if unicodedata.category(c) != "Mn")
            current = ""
            for ch in token:
                if _is_punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            pieces.append(found)
            start = end
        return pieces

    def encode(self, text: str) -> list[int]:
        ids = [i for w in self._basic(text) for i in self._pieces(w)]
        return [self.cls, *ids[: MAX_TOKENS - 2], self.sep]


def _layer_norm(x: Array, w: Array, b: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + EPS) * w + b).astype(np.float32)


class MiniLM:
    """The model in numpy: `embed` gives one unit vector per text."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or model_dir()
        self.w = load_safetensors(folder / "model.safetensors")
        self.tokenizer = WordPiece(folder / "tokenizer.json")
        self.layers = sum(1 for k in self.w if k.endswith("attention.self.query.weight"))

    def _linear(self, x: Array, name: str) -> Array:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def embed_one(self, text: str) -> Array:
        ids = np.array(self.tokenizer.encode(text))
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        seq, hidden = x.shape
        head = hidden // HEADS
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads(t: Array) -> Array:
                return t.reshape(seq, HEADS, head).transpose(1, 0, 2)

            q = heads(self._linear(x, f"{p}.attention.self.query"))
            k = heads(self._linear(x, f"{p}.attention.self.key"))
            v = heads(self._linear(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(head)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attention = scores / scores.sum(-1, keepdims=True)
            context = (attention @ v).transpose(1, 0, 2).reshape(seq, hidden)
            x = _layer_norm(
                self._linear(context, f"{p}.attention.output.dense") + x,
                w[f"{p}.attention.output.LayerNorm.weight"],
                w[f"{p}.attention.output.LayerNorm.bias"],
            )
            inner = self._linear(x, f"{p}.intermediate.dense")
            inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
            x = _layer_norm(
                self._linear(inner, f"{p}.output.dense") + x,
                w[f"{p}.output.LayerNorm.weight"],
                w[f"{p}.output.LayerNorm.bias"],
            )
        mean = x.mean(0)  # one text: every token is real
        return (mean / max(float(np.linalg.norm(mean)), EPS)).astype(np.float32)

    def embed(self, texts: list[str]) -> list[Array]:
        return [self.embed_one(t) for t in texts]
