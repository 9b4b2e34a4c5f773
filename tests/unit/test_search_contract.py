"""The Rust search service and its Python contract say the same: limits, patterns, model,
topics, routes and subscriptions (the Rust code is read, not run, here; the integration
tests check its answers against the generated OpenAPI document)."""

from __future__ import annotations

import asyncio
import json
import re

from apps.search.openapi import app as contract_app
from apps.search.openapi import dapr_subscribe
from consort.contracts import search
from consort.contracts.events import REVIEWS_DUPLICATE_SUSPECTED, REVIEWS_SUBMITTED, topic
from consort.contracts.sentiment import MAX_TEXT_CHARS
from consort.dev.runtime import REPO

SRC = REPO / "apps" / "search" / "src"


def rust_consts(module: str) -> dict[str, str]:
    """`pub const NAME: T = VALUE;` of one Rust module, values as written (quotes dropped)."""
    text = (SRC / module).read_text(encoding="utf-8")
    found = re.findall(r"pub const (\w+): [^=]+= (.+?);", text)
    return {name: value.strip().strip('"').replace("_", "") for name, value in found}


def test_limits_and_patterns_are_the_contracts() -> None:
    rust = rust_consts("validate.rs")
    assert int(rust["MAX_TEXT_CHARS"]) == MAX_TEXT_CHARS
    assert int(rust["MAX_EMBED_TEXTS"]) == search.MAX_EMBED_TEXTS
    assert int(rust["MAX_DOCUMENTS"]) == search.MAX_DOCUMENTS
    assert int(rust["MAX_K"]) == search.MAX_K
    assert int(rust["MAX_METADATA_KEYS"]) == search.MAX_METADATA_KEYS
    assert int(rust["MAX_METADATA_CHARS"]) == search.MAX_METADATA_CHARS
    raw = (SRC / "validate.rs").read_text(encoding="utf-8")
    assert f'COLLECTION_PATTERN: &str = "{search.COLLECTION_PATTERN}"' in raw
    assert f'DOCUMENT_ID_PATTERN: &str = "{search.DOCUMENT_ID_PATTERN}"' in raw


def test_model_and_topics_are_the_contracts() -> None:
    model = rust_consts("model.rs")
    assert model["MODEL_NAME"] == search.EMBEDDING_MODEL.name
    assert (SRC / "model.rs").read_text().count(f'"{search.EMBEDDING_MODEL.version}"') == 1
    assert int(model["DIMENSIONS"]) == search.DIMENSIONS
    events = rust_consts("events.rs")
    assert events["SUBMITTED_TOPIC"] == REVIEWS_SUBMITTED
    assert events["DUPLICATE_TOPIC"] == REVIEWS_DUPLICATE_SUSPECTED
    assert events["DUPLICATE_EVENT_TYPE"] == topic(REVIEWS_DUPLICATE_SUSPECTED).event_type
    assert "search" in topic(REVIEWS_SUBMITTED).subscribers


def test_routes_are_the_openapi_paths() -> None:
    text = (SRC / "routes.rs").read_text(encoding="utf-8")
    listed = set(re.findall(r'\("(GET|POST|DELETE)", "([^"]+)"\)', text))
    contract = {
        (method.upper(), path)
        for path, operations in contract_app.openapi()["paths"].items()
        for method in operations
    }
    assert listed == contract - {("GET", "/info")}
    served = (SRC / "main.rs").read_text(encoding="utf-8")
    for _, path in listed:
        assert f'"{path}"' in served, path
    generated = json.loads((REPO / "contracts" / "openapi" / "search.json").read_text())
    assert generated == json.loads(json.dumps(contract_app.openapi()))


def test_subscription_is_the_one_the_rust_app_declares() -> None:
    (declared,) = asyncio.run(dapr_subscribe())
    text = (SRC / "events.rs").read_text(encoding="utf-8")
    assert f'pub const ROUTE: &str = "{declared["routes"]["default"]}"' in text
    bulk = declared["bulkSubscribe"]
    assert f'"maxMessagesCount": {bulk["maxMessagesCount"]}' in text
    assert f'"maxAwaitDurationMs": {bulk["maxAwaitDurationMs"]}' in text
