"""One client's bad input never takes a service away from the others (issue 12).

Through real sidecars: bad input repeated 50 times to each image and text route, then a
good request, which succeeds. Dapr's breaker counts every non-2xx reply of the target, so
the kit's callers carry caller faults in band (`consort.kit.caller_faults`); two controls
show the breaker still does its work: the same bad input without the kit's header opens
it, and so does a target that cannot be reached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from skimage import data as samples

from consort.dev.runtime import REPO
from consort.dev.system import InfraPorts, LocalSystem, RunFile
from consort.kit.dapr import Sidecar, TargetUnavailable
from consort.kit.settings import SidecarSettings
from tests import conftest
from tests.integration.helpers import eventually
from tests.integration.test_vision import jpeg, png_bomb

REPEAT = 50


def _breaker_trip() -> int:
    """The consecutive failures that open `aiBreaker` (components/resiliency.yaml)."""
    doc = yaml.safe_load((REPO / "components" / "resiliency.yaml").read_text())
    trip = doc["spec"]["policies"]["circuitBreakers"]["aiBreaker"]["trip"]
    return int(trip.split(">=")[1])


BREAKER_TRIP = _breaker_trip()
GOOD_JPEG = jpeg(samples.astronaut())
BAD_IMAGES = [
    (b"not an image at all", "image/jpeg"),
    (GOOD_JPEG[: len(GOOD_JPEG) // 3], "image/jpeg"),
    (png_bomb(), "image/png"),
    (GOOD_JPEG, "image/png"),
]
TOO_LONG = "x" * 10_001
#: (app, method, a bad body, a good body) of every text route of the services.
TEXT_ROUTES = [
    ("sentiment", "v1/sentiment", {"text": "   "}, {"text": "fine, thanks"}),
    ("sentiment", "v1/sentiment/batch", {"texts": []}, {"texts": ["good", "bad"]}),
    ("nlp", "v1/nlp", {"text": TOO_LONG}, {"text": "Ada Lovelace wrote in London."}),
    ("nlp", "v1/nlp/batch", {"texts": ["ok"], "extra": 1}, {"texts": ["Paris is big."]}),
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """The gateway and the image and text services, each beside its real daprd; and the
    orchestrator, a caller the access policy lets call sentiment without the kit."""
    local = LocalSystem(
        RunFile.load().with_free_ports(),
        tmp_path_factory.mktemp("run"),
        InfraPorts.free(),
        tracing=False,
    )
    conftest._systems.append(local)  # log tails on failure
    try:
        local.start(["sentiment", "nlp", "vision", "orchestrator", "gateway"])
        yield local
    finally:
        local.stop()
        conftest._systems.remove(local)


def _sidecar_of(system: LocalSystem, app_id: str) -> Sidecar:
    settings = SidecarSettings(
        http_port=system.run_file.app(app_id).dapr_http_port,
        api_token=system.sidecar_headers(app_id).get("dapr-api-token", ""),
    )
    return Sidecar(settings, 60)


def test_bad_images_through_the_gateway_leave_vision_serving(system: LocalSystem) -> None:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60
    ) as api:
        for route in ("/v1/images/analyze?features=quality", "/v1/images/redact"):
            for i in range(REPEAT):
                body, media = BAD_IMAGES[i % len(BAD_IMAGES)]
                bad = api.post(route, content=body, headers={"content-type": media})
                assert bad.status_code in (413, 415, 422), (route, i, bad.text)
                assert bad.headers["content-type"] == "application/problem+json"
                assert bad.json()["type"] != "urn:consort:problem:service-unavailable"
            good = api.post(route, content=GOOD_JPEG, headers={"content-type": "image/jpeg"})
            assert good.status_code == 200, (route, good.text)


def test_bad_texts_through_the_gateway_leave_the_services_serving(system: LocalSystem) -> None:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=30
    ) as api:
        for route in ("/v1/text/sentiment", "/v1/text/nlp", "/v1/text/analyze"):
            for i in range(REPEAT):
                bad = api.post(route, json={"text": ["   ", "y" * 5_001, ""][i % 3]})
                assert bad.status_code == 422, (route, i, bad.text)
                assert bad.json()["errors"][0]["field"] == "body.text"
            good = api.post(route, json={"text": "Consort in Paris is lovely."})
            assert good.status_code == 200, (route, good.text)


def test_bad_input_through_a_sidecar_leaves_every_route_serving(system: LocalSystem) -> None:
    """What the gateway's own validation does not catch reaches the services: called as
    every Consort app calls them (the kit, through its sidecar), each bad request is its
    422 and the good one after 50 of them still succeeds."""

    async def scenario() -> None:
        sidecar = _sidecar_of(system, "gateway")
        try:
            for app_id, method, bad_body, good_body in TEXT_ROUTES:
                for _ in range(REPEAT):
                    bad = await sidecar.invoke(app_id, method, json=bad_body)
                    assert bad.status == 422, (app_id, method, bad.text)
                    assert bad.json()["errors"], bad.text
                good = await sidecar.invoke(app_id, method, json=good_body)
                assert good.status == 200, (app_id, method, good.text)
        finally:
            await sidecar.aclose()

    asyncio.run(scenario())


def test_without_the_kit_header_bad_input_opens_the_breaker(system: LocalSystem) -> None:
    """The control: daprd alone counts a 422 as a failure (through the orchestrator's
    sidecar, which the access policy lets call sentiment, and whose breaker for it no test
    running beside this one uses)."""
    url = f"{system.sidecar_url('orchestrator')}/v1.0/invoke/sentiment/method/v1/sentiment"
    token = system.sidecar_headers("orchestrator")
    for _ in range(BREAKER_TRIP):
        assert httpx.post(url, json={"text": " "}, headers=token, timeout=10).status_code == 422
    cut_off = httpx.post(url, json={"text": "fine"}, headers=token, timeout=10)
    assert cut_off.status_code == 500
    assert "circuit breaker is open" in cut_off.text


def test_an_unreachable_service_still_opens_the_breaker(system: LocalSystem) -> None:
    """A fault of the service itself counts: once sentiment is gone, the gateway's sidecar
    cuts it off after at most `BREAKER_TRIP` failed calls and then answers at once."""

    async def call() -> str:
        sidecar = _sidecar_of(system, "gateway")
        try:
            await sidecar.invoke("sentiment", "v1/sentiment", json={"text": "hello"}, timeout_s=5)
            return "answered"
        except TargetUnavailable as exc:
            return str(exc)
        finally:
            await sidecar.aclose()

    system.stop_app("sentiment")
    try:
        failures = []
        for _ in range(BREAKER_TRIP):
            failures.append(asyncio.run(call()))
            assert failures[-1] != "answered"
            if "circuit breaker is open" in failures[-1]:
                break
        assert "circuit breaker is open" in failures[-1], failures
        started = time.monotonic()
        assert "circuit breaker is open" in asyncio.run(call())
        assert time.monotonic() - started < 1.0
        log = Path(system.supervisor.get("gateway-daprd").log_path).read_text()
        assert "changed state from closed to open" in log
    finally:
        system.start_app("sentiment")
        system.wait_app("sentiment")
    # Once the breaker's timeout (5 s) has passed, the service is back for everyone.
    eventually(
        lambda: (
            httpx.post(
                f"{system.url('gateway')}/v1/text/sentiment",
                headers=system.api_headers,
                json={"text": "back"},
                timeout=10,
            ).status_code
        ),
        lambda status: status == 200,
        deadline_s=30,
    )
