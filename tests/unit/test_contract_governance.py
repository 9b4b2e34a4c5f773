"""API governance: the generated contract, its drift check and the compatibility check.

Every mutation happens in a scratch copy under tmp_path; the repository's contracts/ is only
read.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from consort.contracts.common import ModelInfo
from consort.contracts.events import TEXTS_ANALYZED, TOPICS, Topic
from consort.governance import (
    CONTRACTS,
    DRIFT_HINT,
    BreakingChange,
    Contract,
    app_targets,
    breaking_changes,
    check_compat,
    find_drift,
    generate,
    main,
    read_tree,
    render_contracts,
    write_baseline,
)

Json = dict[str, Any]
V1_EVENT = "events/texts.analyzed.v1.schema.json"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return render_contracts()


@pytest.fixture
def scratch(tmp_path: Path, generated: dict[str, str]) -> Path:
    """A contracts folder whose baseline is the contract the code generates now."""
    folder = tmp_path / "contracts"
    generate(folder, generated)
    write_baseline(folder / "baseline", generated)
    return folder


def edit_json(path: Path, change: Callable[[Json], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def schemas(doc: Json) -> Json:
    components: Json = doc["components"]["schemas"]
    return components


def only(changes: list[BreakingChange], **expected: str) -> BreakingChange:
    """The one change whose `field` is the expected one and whose other parts contain theirs."""

    def matches(c: BreakingChange, key: str, value: str) -> bool:
        return getattr(c, key) == value if key == "field" else value in getattr(c, key)

    found = [c for c in changes if all(matches(c, k, v) for k, v in expected.items())]
    assert len(found) == 1, f"expected one change like {expected}, got {changes}"
    return found[0]


# -- generating ---------------------------------------------------------------------------


def test_every_app_of_the_run_file_and_every_topic_version_has_a_file(
    generated: dict[str, str],
) -> None:
    assert {"gateway", "sentiment"} <= set(app_targets())
    for app_id in app_targets():
        doc = json.loads(generated[f"openapi/{app_id}.json"])
        assert doc["openapi"].startswith("3.")
        assert doc["paths"]
    for t in TOPICS:
        schema = json.loads(generated[f"events/{t.name}.v{t.version}.schema.json"])
        assert schema["$id"] == f"urn:consort:event:consort.{t.name}.v{t.version}"
        assert schema["title"] == t.event_type
        assert schema["x-consort"]["dead_letter_topic"] == f"{t.name}.dead-letter"
        assert set(schema["required"]) == {
            name for name, f in t.payload.model_fields.items() if f.is_required()
        }


def test_gateway_document_holds_its_public_routes(generated: dict[str, str]) -> None:
    paths = json.loads(generated["openapi/gateway.json"])["paths"]
    assert "post" in paths["/v1/text/sentiment"]
    assert "get" in paths["/v1/text/stats"]


def test_json_files_are_sorted_indented_and_end_with_a_newline(generated: dict[str, str]) -> None:
    for rel, text in generated.items():
        if rel.endswith(".json"):
            assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", rel


def test_rendering_twice_gives_the_same_files(generated: dict[str, str]) -> None:
    assert render_contracts() == generated


def test_asyncapi_lists_channels_dead_letters_and_each_apps_operations(
    generated: dict[str, str],
) -> None:
    doc = yaml.safe_load(generated["asyncapi.yaml"])
    assert doc["asyncapi"] == "3.0.0"
    channel = doc["channels"]["texts-analyzed"]
    assert channel["address"] == "texts.analyzed"
    assert doc["channels"]["texts-analyzed-dead-letter"]["address"] == "texts.analyzed.dead-letter"
    message = doc["components"]["messages"]["texts-analyzed-v1"]
    assert message["name"] == "consort.texts.analyzed.v1"
    assert message["payload"] == {"$ref": "./events/texts.analyzed.v1.schema.json"}
    send = doc["operations"]["sentiment-send-texts-analyzed"]
    receive = doc["operations"]["gateway-receive-texts-analyzed"]
    assert (send["action"], receive["action"]) == ("send", "receive")
    assert send["channel"] == {"$ref": "#/channels/texts-analyzed"}
    assert send["messages"] == [{"$ref": "#/channels/texts-analyzed/messages/texts-analyzed-v1"}]
    # Every operation's messages are messages of its channel (an AsyncAPI 3 rule).
    for op in doc["operations"].values():
        channel_id = op["channel"]["$ref"].removeprefix("#/channels/")
        for ref in op["messages"]:
            prefix = f"#/channels/{channel_id}/messages/"
            assert ref["$ref"].startswith(prefix)
            assert ref["$ref"].removeprefix(prefix) in doc["channels"][channel_id]["messages"]


def test_generate_removes_files_the_code_no_longer_generates(
    scratch: Path, generated: dict[str, str]
) -> None:
    stale = scratch / "openapi" / "retired-app.json"
    stale.write_text("{}\n")
    generate(scratch, generated)
    assert not stale.exists()
    assert read_tree(scratch) == generated
    assert (scratch / "baseline" / V1_EVENT).exists()


# -- drift ------------------------------------------------------------------------------


def test_committed_contract_matches_the_code(generated: dict[str, str]) -> None:
    drift = find_drift(CONTRACTS, generated)
    assert drift == [], f"{DRIFT_HINT}: {[str(d) for d in drift]}"


def test_drift_check_names_an_edited_file(
    tmp_path: Path, generated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    committed = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, committed)
    edit_json(
        committed / "openapi" / "gateway.json",
        lambda doc: doc["info"].update(title="edited by hand"),
    )

    drift = find_drift(committed, generated)

    assert [(d.path, d.problem) for d in drift] == [
        ("openapi/gateway.json", "differs from the generated file")
    ]
    assert '"title": "edited by hand"' in drift[0].diff
    assert main(["--contracts", str(committed), "check"]) == 1
    err = capsys.readouterr().err
    assert DRIFT_HINT in err
    assert "openapi/gateway.json: differs" in err


def test_drift_check_names_missing_and_stale_files(
    tmp_path: Path, generated: dict[str, str]
) -> None:
    committed = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, committed)
    (committed / "asyncapi.yaml").unlink()
    (committed / "events" / "texts.retired.v1.schema.json").write_text("{}\n")

    drift = {d.path: d.problem for d in find_drift(committed, generated)}

    assert drift == {
        "asyncapi.yaml": "missing (the code generates it)",
        "events/texts.retired.v1.schema.json": "not generated any more (stale)",
    }


def test_check_command_passes_on_a_fresh_contract(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--contracts", str(scratch), "check"]) == 0
    assert "matches the code" in capsys.readouterr().out


# -- compatibility: the current tree ------------------------------------------------------


def test_compat_passes_on_the_committed_tree() -> None:
    assert check_compat() == []


def test_generated_contract_is_compatible_with_the_committed_baseline(
    generated: dict[str, str],
) -> None:
    baseline = Contract.read(CONTRACTS / "baseline")
    assert breaking_changes(baseline, Contract.from_files(generated)) == []


def test_compat_passes_when_nothing_changed(scratch: Path) -> None:
    assert check_compat(scratch) == []


# -- compatibility: breaking changes ------------------------------------------------------


def test_a_removed_response_field_breaks(scratch: Path) -> None:
    def drop_label(doc: Json) -> None:
        result = schemas(doc)["SentimentResult"]
        del result["properties"]["label"]
        result["required"].remove("label")

    edit_json(scratch / "openapi" / "gateway.json", drop_label)

    changes = check_compat(scratch)

    change = only(
        changes,
        subject="app gateway",
        location="POST /v1/text/sentiment, response 200 (application/json)",
        field="label",
    )
    assert change.change == "removed"
    assert "POST /v2/text/sentiment" in change.remedy
    assert "keep POST /v1/text/sentiment unchanged" in change.remedy
    # The batch route returns the same model inside a list.
    only(changes, location="POST /v1/text/sentiment/batch, response 200", field="results[].label")


def test_a_removed_field_of_a_nested_model_breaks(scratch: Path) -> None:
    edit_json(
        scratch / "openapi" / "gateway.json",
        lambda doc: schemas(doc)["PolarityScores"]["properties"].pop("neutral"),
    )
    change = only(check_compat(scratch), location="POST /v1/text/sentiment,")
    assert (change.field, change.change) == ("scores.neutral", "removed")


def test_a_changed_response_field_type_breaks(scratch: Path) -> None:
    edit_json(
        scratch / "openapi" / "gateway.json",
        lambda doc: schemas(doc)["SentimentResult"]["properties"]["compound"].update(type="string"),
    )
    change = only(check_compat(scratch), location="POST /v1/text/sentiment,", field="compound")
    assert change.change == "type changed from number to string"


def test_a_response_field_that_became_nullable_breaks_its_readers(scratch: Path) -> None:
    def nullable(doc: Json) -> None:
        props = schemas(doc)["SentimentResult"]["properties"]
        props["text_sha256"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}

    edit_json(scratch / "openapi" / "gateway.json", nullable)
    change = only(check_compat(scratch), location="POST /v1/text/sentiment,", field="text_sha256")
    assert change.change == "type changed from string to null | string"


def test_a_new_response_enum_value_breaks_its_readers(scratch: Path) -> None:
    edit_json(
        scratch / "openapi" / "gateway.json",
        lambda doc: schemas(doc)["SentimentLabel"]["enum"].append("mixed"),
    )
    change = only(check_compat(scratch), location="POST /v1/text/sentiment,", field="label")
    assert change.change == 'new values "mixed" that old readers do not know'


def test_a_new_required_request_field_breaks(scratch: Path) -> None:
    def require_language(doc: Json) -> None:
        request = schemas(doc)["SentimentRequest"]
        request["properties"]["language"] = {"type": "string"}
        request["required"].append("language")

    edit_json(scratch / "openapi" / "gateway.json", require_language)

    change = only(check_compat(scratch), subject="app gateway", field="language")
    assert change.location == "POST /v1/text/sentiment, request body (application/json)"
    assert change.change == "new required field"


def test_a_request_field_that_became_required_breaks(scratch: Path) -> None:
    def add_model_version(required: bool) -> Callable[[Json], None]:
        def change(doc: Json) -> None:
            request = schemas(doc)["SentimentRequest"]
            request["properties"]["model_version"] = {"type": "string"}
            if required:
                request["required"].append("model_version")

        return change

    edit_json(scratch / "baseline" / "openapi" / "sentiment.json", add_model_version(False))
    edit_json(scratch / "openapi" / "sentiment.json", add_model_version(True))

    change = only(check_compat(scratch), subject="app sentiment", field="model_version")
    assert change.location == "POST /v1/sentiment, request body (application/json)"
    assert change.change == "became required"


def test_a_removed_route_breaks(scratch: Path) -> None:
    edit_json(scratch / "openapi" / "gateway.json", lambda doc: doc["paths"].pop("/v1/text/stats"))

    change = only(check_compat(scratch), location="GET /v1/text/stats")
    assert (change.subject, change.field, change.change) == ("app gateway", "", "route removed")


def test_a_removed_app_breaks(scratch: Path) -> None:
    (scratch / "openapi" / "sentiment.json").unlink()
    change = only(check_compat(scratch), subject="app sentiment")
    assert change.change == "app removed"


def test_a_removed_topic_breaks(scratch: Path) -> None:
    (scratch / V1_EVENT).unlink()

    change = only(check_compat(scratch), subject="topic texts.analyzed v1")
    assert change.change == "topic removed"


def test_a_retyped_event_field_breaks(scratch: Path) -> None:
    edit_json(scratch / V1_EVENT, lambda doc: doc["properties"]["chars"].update(type="string"))

    change = only(check_compat(scratch), subject="topic texts.analyzed v1", field="chars")
    assert change.location == "payload"
    assert change.change == "type changed from integer to string"
    assert "texts.analyzed v2" in change.remedy
    assert "events/texts.analyzed.v2.schema.json" in change.remedy


def test_a_removed_event_field_breaks(scratch: Path) -> None:
    def drop_cached(doc: Json) -> None:
        del doc["properties"]["cached"]
        doc["required"].remove("cached")

    edit_json(scratch / V1_EVENT, drop_cached)
    change = only(check_compat(scratch), field="cached")
    assert (change.subject, change.change) == ("topic texts.analyzed v1", "removed")


def test_a_removed_field_inside_an_event_defs_model_breaks(scratch: Path) -> None:
    edit_json(
        scratch / V1_EVENT, lambda doc: doc["$defs"]["ModelInfo"]["properties"].pop("version")
    )
    change = only(check_compat(scratch), field="model.version")
    assert change.change == "removed"


def test_a_new_required_event_field_breaks(scratch: Path) -> None:
    def require_language(doc: Json) -> None:
        doc["properties"]["language"] = {"type": "string"}
        doc["required"].append("language")

    edit_json(scratch / V1_EVENT, require_language)
    change = only(check_compat(scratch), field="language")
    assert (change.subject, change.change) == ("topic texts.analyzed v1", "new required field")


def test_compat_command_lists_each_break_and_how_to_ship_it(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command judges the freshly generated contract, so break the baseline's side: a
    # baseline route the code no longer has reads as a removed route.
    def add_retired_route(doc: Json) -> None:
        doc["paths"]["/v1/text/retired"] = copy.deepcopy(doc["paths"]["/v1/text/stats"])

    edit_json(scratch / "baseline" / "openapi" / "gateway.json", add_retired_route)

    assert main(["--contracts", str(scratch), "compat"]) == 1
    err = capsys.readouterr().err
    assert "1 breaking change(s)" in err
    assert "app gateway, GET /v1/text/retired: route removed" in err
    assert "Ship a breaking change as a new version instead" in err


# -- compatibility: what passes ----------------------------------------------------------


def test_additive_changes_pass(scratch: Path) -> None:
    def add_to_api(doc: Json) -> None:
        components = schemas(doc)
        components["SentimentResult"]["properties"]["language"] = {"type": "string"}
        components["SentimentRequest"]["properties"]["language"] = {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
        }
        doc["paths"]["/v1/text/languages"] = copy.deepcopy(doc["paths"]["/v1/text/stats"])

    def add_optional_event_field(doc: Json) -> None:
        doc["properties"]["language"] = {"type": "string"}

    edit_json(scratch / "openapi" / "gateway.json", add_to_api)
    edit_json(scratch / V1_EVENT, add_optional_event_field)
    shutil.copy(scratch / V1_EVENT, scratch / "events" / "texts.translated.v1.schema.json")

    assert check_compat(scratch) == []


def test_a_request_field_that_accepts_more_passes(scratch: Path) -> None:
    def nullable(doc: Json) -> None:
        props = schemas(doc)["SentimentBatchRequest"]["properties"]
        props["texts"] = {"anyOf": [props["texts"], {"type": "null"}]}

    edit_json(scratch / "openapi" / "gateway.json", nullable)
    assert check_compat(scratch) == []


def test_a_breaking_change_shipped_under_v2_passes(scratch: Path) -> None:
    def ship_v2(doc: Json) -> None:
        components = schemas(doc)
        v2 = copy.deepcopy(components["SentimentResult"])
        del v2["properties"]["label"]
        v2["required"].remove("label")
        v2["properties"]["compound"]["type"] = "string"
        components["SentimentResultV2"] = v2
        route = copy.deepcopy(doc["paths"]["/v1/text/sentiment"])
        response = route["post"]["responses"]["200"]["content"]["application/json"]
        response["schema"] = {"$ref": "#/components/schemas/SentimentResultV2"}
        doc["paths"]["/v2/text/sentiment"] = route

    edit_json(scratch / "openapi" / "gateway.json", ship_v2)
    assert check_compat(scratch) == []

    # The same change made to the /v1 route in place does break.
    edit_json(
        scratch / "openapi" / "gateway.json",
        lambda doc: doc["paths"].update({"/v1/text/sentiment": doc["paths"]["/v2/text/sentiment"]}),
    )
    assert {c.field for c in check_compat(scratch)} == {"label", "compound"}


class TextsAnalyzedV2(BaseModel):
    """A breaking v2 payload: `chars` became a string and `language` is required."""

    text_sha256: str
    chars: str
    language: str = Field(min_length=2)
    model: ModelInfo


TEXTS_ANALYZED_V2 = Topic(
    name=TEXTS_ANALYZED,
    payload=TextsAnalyzedV2,
    version=2,
    publishers=("sentiment",),
    subscribers=("gateway",),
    description="A text was scored for sentiment (v2: with its language).",
)


def test_a_breaking_change_shipped_as_a_new_topic_version_passes(scratch: Path) -> None:
    files = render_contracts(topics=(*TOPICS, TEXTS_ANALYZED_V2))
    generate(scratch, files)

    v2_file = scratch / "events" / "texts.analyzed.v2.schema.json"
    assert (scratch / V1_EVENT).exists() and v2_file.exists()
    v2 = json.loads(v2_file.read_text())
    assert (v2["$id"], v2["title"]) == (
        "urn:consort:event:consort.texts.analyzed.v2",
        "consort.texts.analyzed.v2",
    )
    asyncapi = yaml.safe_load(files["asyncapi.yaml"])
    assert set(asyncapi["channels"]["texts-analyzed"]["messages"]) == {
        "texts-analyzed-v1",
        "texts-analyzed-v2",
    }
    assert len(asyncapi["operations"]["sentiment-send-texts-analyzed"]["messages"]) == 2
    assert check_compat(scratch) == []


def test_a_topic_version_replaced_in_place_breaks(scratch: Path) -> None:
    generate(scratch, render_contracts(topics=(TEXTS_ANALYZED_V2,)))

    change = only(check_compat(scratch), subject="topic texts.analyzed v1")
    assert change.change == "v1 removed"


def test_baseline_command_makes_the_generated_contract_the_release(
    scratch: Path, generated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    (scratch / "baseline" / V1_EVENT).unlink()
    (scratch / "baseline" / "events" / "texts.retired.v1.schema.json").write_text("{}\n")

    assert main(["--contracts", str(scratch), "baseline"]) == 0

    baseline = read_tree(scratch / "baseline")
    assert baseline == {k: v for k, v in generated.items() if k != "asyncapi.yaml"}
    assert "commit them with the release" in capsys.readouterr().out
