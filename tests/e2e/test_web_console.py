"""The web console in a real browser (Debian's Chromium, driven by Playwright) against the
running system: the topology, every try-it panel drawn from the real models, cases decided
from the page, a killed service turning red and back, and no JavaScript errors.

One system (the session's) and one browser page for every check; each page's screenshot
is saved under `test-artefacts/console/`. A failing check prints the browser's console log
and the DOM of the part it looked at; the harness adds every process's log tail.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Page, sync_playwright
from skimage import data as samples

from consort.dev.runtime import REPO
from consort.dev.system import LocalSystem
from tests.integration.helpers import eventually

CHROMIUM = Path("/usr/bin/chromium")
#: The flags Debian's Chromium needs on a machine without network or GPU.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTEFACTS = REPO / "test-artefacts" / "console"
#: Longest wait for something the page draws after a call to the real models.
DRAWN_MS = 60_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is missing: `make setup` installs it"
)


@dataclass
class Console:
    """The browser page on the console, with what the browser logged."""

    page: Page
    base: str
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def diagnosis(self, selector: str | None = None) -> str:
        parts = ["browser console log:", *(self.log[-40:] or ["(empty)"])]
        if selector:
            try:
                html = self.page.locator(selector).first.inner_html(timeout=2000)
            except Error as exc:
                html = f"(not readable: {exc})"
            parts += [f"DOM of {selector}:", html[:3000]]
        return "\n".join(parts)

    def wait(self, selector: str, what: str, timeout_ms: float = DRAWN_MS) -> None:
        """Wait until `selector` is in the page; fail naming `what` with the diagnosis."""
        try:
            self.page.wait_for_selector(selector, state="attached", timeout=timeout_ms)
        except Error as exc:
            raise AssertionError(
                f"{what}: {selector!r} not drawn within {timeout_ms / 1000:g} s ({exc})\n"
                + self.diagnosis("main")
            ) from exc

    def go(self, page: str) -> None:
        self.page.click(f"nav a[data-page={page}]")
        self.wait(f"section[data-page={page}]:not([hidden])", f"the {page} page")

    def shot(self, name: str) -> None:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)

    def assert_no_errors(self) -> None:
        assert not self.errors, "JavaScript errors:\n" + "\n".join(self.errors)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile of its own."""
    profile = Path(tempfile.mkdtemp(prefix="consort-chromium-"))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console(system: LocalSystem, browser: BrowserContext) -> Iterator[Console]:
    page = browser.new_page()
    found = Console(page, system.url("gateway"))

    def on_console(message: ConsoleMessage) -> None:
        found.log.append(f"[{message.type}] {message.text}")
        if message.type == "error":
            found.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: found.errors.append(f"uncaught: {exc}"))
    # The link `consort run` prints: the key in the fragment, which no server sees.
    page.goto(f"{found.base}/console/#key={system.api_key}")
    try:
        yield found
    finally:
        page.close()


@pytest.fixture(scope="module")
def api(system: LocalSystem) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=system.url("gateway"), headers=system.api_headers, timeout=60
    ) as client:
        yield client


SERVICES = ("gateway", "sentiment", "nlp", "vision", "forecast", "anomaly", "recommender")


def test_the_page_is_public_but_its_data_needs_a_key(
    system: LocalSystem, api: httpx.Client
) -> None:
    page = httpx.get(f"{system.url('gateway')}/console/", timeout=10)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{system.url('gateway')}/v1/ops/overview", timeout=10).status_code == 401
    missing = httpx.get(f"{system.url('gateway')}/console/nothing.js", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    # A trace id that is not one is the caller's mistake, named with its pattern.
    bad = api.get("/v1/ops/traces/not-a-trace")
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "path.trace_id", bad.text


def test_the_topology_shows_every_service_up(console: Console) -> None:
    for app_id in (*SERVICES, "orchestrator"):
        # One instance each, ready, as the launcher runs them.
        node = f'#graph .node[data-app="{app_id}"].up[data-instances="1"][data-ready="1"]'
        console.wait(node, f"{app_id} drawn up with its one instance")
    # Who publishes and who is delivered what, from the topic contracts.
    console.wait('#graph .topic[data-topic="reviews.submitted"]', "a topic node")
    assert console.page.locator("#graph .edge.publish").count() >= 5
    assert console.page.locator("#graph .edge.subscribe").count() >= 5
    assert console.page.locator('#graph .edge.invoke[data-caller="gateway"]').count() >= 6
    # The components the sidecars loaded, and which sidecar loads which.
    console.wait('#graph .component[data-component="statestore"]', "the state store drawn")
    assert console.page.locator('#graph .component[data-component="pubsub"]').count() == 1
    assert console.page.locator('#graph .edge.uses[data-app="sentiment"]').count() >= 2
    # The sidecars' metadata: each app's components.
    statestore = console.page.locator('#components tr[data-app="sentiment"]').inner_text()
    assert "statestore" in statestore and "pubsub" in statestore, console.diagnosis("#components")
    console.shot("topology")
    console.assert_no_errors()


def test_the_text_panel_colours_each_clause_and_marks_aspects(console: Console) -> None:
    console.go("try")
    panel = "#try-text"
    console.page.fill(f"{panel} textarea", "The battery is awful but the screen is gorgeous.")
    console.page.click(f"{panel} button[type=submit]")
    console.wait(f"{panel} .annotated .clause.negative", "a negative clause coloured")
    negative = console.page.locator(f"{panel} .annotated .clause.negative").all_inner_texts()
    positive = console.page.locator(f"{panel} .annotated .clause.positive").all_inner_texts()
    assert "awful" in "".join(negative), console.diagnosis(panel)
    assert "gorgeous" in "".join(positive), console.diagnosis(panel)
    aspects = console.page.locator(f"{panel} .annotated .aspect").evaluate_all(
        "nodes => nodes.map(n => [n.dataset.aspect, n.className])"
    )
    by_aspect = dict(aspects)
    assert "aspect-negative" in by_aspect.get("battery", ""), aspects
    assert "aspect-positive" in by_aspect.get("screen", ""), aspects
    console.assert_no_errors()


def test_a_result_links_to_its_trace_drawn_as_a_waterfall(console: Console) -> None:
    console.page.click("#try-text .trace-link")
    console.wait("#trace .waterfall .span-bar", "the trace's spans", 30_000)
    # The request crossed the gateway and, through the sidecars, sentiment and nlp; each
    # process reports its spans on its own, and the waterfall grows as they arrive (the
    # gateway app's own root span may come last, after its sidecar's).
    try:
        console.page.wait_for_function(
            "() => { const t = document.querySelector('#trace .waterfall')?.textContent || '';"
            " return ['post /v1/text/analyze · gateway app', 'sentiment', 'nlp']"
            ".every(s => t.includes(s)); }",
            timeout=30_000,
        )
    except Error as exc:
        raise AssertionError(f"{exc}\n{console.diagnosis('#trace')}") from exc
    labels = " ".join(texts(console.page, "#trace .waterfall text"))
    assert "post /v1/text/analyze · gateway app" in labels, labels
    assert console.page.locator("#trace a[href*='/zipkin/traces/']").count() == 1
    console.assert_no_errors()


def texts(page: Page, selector: str) -> list[str]:
    """The text of every element `selector` matches (SVG ones too, which have no
    `innerText`)."""
    found: list[str] = page.locator(selector).evaluate_all("ns => ns.map(n => n.textContent)")
    return found


def anomalies_drawn(console: Console, panel: str) -> list[Any]:
    return console.page.locator(f"{panel} .plot circle.anomaly").all()


def jpeg(image_rgb: Any) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(encoded.tobytes())


def test_the_image_panel_draws_the_astronauts_face(console: Console) -> None:
    panel = "#try-image"
    console.page.set_input_files(
        f"{panel} input[type=file]",
        {"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": jpeg(samples.astronaut())},
    )
    console.page.click(f"{panel} button[type=submit]")
    console.wait(f"{panel} svg.overlay .face-box", "a box round the astronaut's face")
    boxes = console.page.locator(f"{panel} svg.overlay .face-box")
    assert boxes.count() == 1, console.diagnosis(panel)
    x, y, width = (float(boxes.first.get_attribute(a) or "nan") for a in ("x", "y", "width"))
    # The face is in the upper middle of the 512 x 512 photo.
    assert 120 < x < 260 and 20 < y < 160 and 60 < width < 200, (x, y, width)
    assert console.page.locator(f"{panel} svg.overlay .landmark").count() >= 5
    # The redacted image beside it, loaded (a real picture, not a broken link).
    console.page.wait_for_function(
        "() => { const i = document.querySelector('#try-image img.redacted');"
        " return i && i.complete && i.naturalWidth === 512; }",
        timeout=DRAWN_MS,
    )
    figures = console.page.locator(f"{panel} dl.figures").inner_text()
    assert "sharpness" in figures and "512 × 512" in figures, figures
    console.assert_no_errors()


def test_the_series_panel_plots_the_forecast_bands_and_anomalies(console: Console) -> None:
    panel = "#try-series"
    # The demo series (a trend, a cycle of 12 and one spike) is filled in already.
    console.page.click(f"{panel} button[type=submit]")
    console.wait(f"{panel} .plot path.band-95", "the 95 % band")
    for level in ("80", "95"):
        d = console.page.locator(f"{panel} .plot path.band-{level}").get_attribute("d") or ""
        assert d.count("L") >= 2 * 24 - 1, console.diagnosis(panel)  # one corner a step
    # The band lies after the history: every corner right of the last value's x.
    history = console.page.locator(f"{panel} .plot path.history").get_attribute("d") or ""
    last_x = float(history.rsplit("L", 1)[1].split(",")[0])
    band = console.page.locator(f"{panel} .plot path.band-95").get_attribute("d") or ""
    first_x = float(band[1:].split(",")[0])
    assert first_x > last_x
    # The spike at 70 is marked (and what follows it while the detector adapts, at most).
    marked = [int(a.get_attribute("data-index") or -1) for a in anomalies_drawn(console, panel)]
    assert 70 in marked and all(70 <= i <= 72 for i in marked), marked
    console.shot("try-it")
    console.assert_no_errors()


def test_the_recommendations_panel_shows_reasons_and_lift(
    console: Console, api: httpx.Client
) -> None:
    ns = f"c{uuid.uuid4().hex[:6]}"
    # Eight users bought x, y and z; two more bought x and y; five others bought w only:
    # z completes an x, y basket, more often than z is bought at all (lift above 1).
    interactions = [
        {"id": f"{ns}-{u}-{i}", "user": f"{ns}-u{u}", "item": f"{ns}-{i}", "kind": "purchase"}
        for u in range(15)
        for i in (("x", "y", "z") if u < 8 else ("x", "y") if u < 10 else ("w",))
    ]
    assert api.post("/v1/interactions", json={"interactions": interactions}).status_code == 202
    bought: dict[str, int] = {}
    for i in interactions:
        bought[i["user"]] = bought.get(i["user"], 0) + 1
    for user, items in bought.items():  # events are consumed concurrently: wait for all
        eventually(
            lambda u=user: len(api.get(f"/v1/users/{u}/interactions").json()["items"]),
            lambda n, want=items: n >= want,
            60,
        )
    wanted = api.post("/v1/ops/recommender/retrain").json()["next_version"]
    eventually(
        lambda: api.get("/v1/ops/recommender/model").json()["version"], lambda v: v >= wanted, 60
    )
    panel = "#try-recs"
    console.page.fill("#recs-user-input", f"{ns}-u9")
    console.page.click("#recs-user button")
    console.wait(f'{panel} .recommendations li[data-item="{ns}-z"]', "z recommended to u9")
    reason = console.page.locator(f'{panel} li[data-item="{ns}-z"]').inner_text()
    assert "because of" in reason and (f"{ns}-x" in reason or f"{ns}-y" in reason), reason
    console.page.fill("#recs-basket-input", f"{ns}-x, {ns}-y")
    console.page.click("#recs-basket button")
    console.wait(f'{panel} tr[data-item="{ns}-z"]', "z completing the basket")
    cells = console.page.locator(f'{panel} tr[data-item="{ns}-z"] td').all_inner_texts()
    assert float(cells[2]) > 1, cells  # lift: z goes with x and y
    console.assert_no_errors()


def test_a_case_is_approved_from_the_page(console: Console) -> None:
    console.go("cases")
    console.page.click("#triage-form button[type=submit]")
    console.wait("#triage-form .result[data-workflow]", "the triage started")
    case_id = console.page.locator("#triage-form .result").get_attribute("data-workflow")
    row = f'#case-list tr[data-case="{case_id}"]'
    console.wait(row, "the case opened by the triage", 90_000)
    # The workflow is running, waiting for the decision: its steps from the engine's history.
    running = f'#workflow-list tr[data-workflow="{case_id}"]'
    console.wait(f'{running} li.step[data-step="case_open"][data-status="completed"]', "its steps")
    steps = console.page.locator(f"{running} li.step").evaluate_all(
        "ns => ns.map(n => [n.dataset.step, n.dataset.kind, n.dataset.status])"
    )
    assert ["nlp_analyze", "activity", "completed"] in steps, steps
    assert ["sentiment_score", "activity", "completed"] in steps, steps
    assert any(kind == "timer" and status == "waiting" for _, kind, status in steps), steps
    console.page.focus(row)
    console.page.keyboard.press("Enter")  # keyboard, as a user without a mouse would
    console.wait(f'#case-detail [data-case="{case_id}"] button[data-decision=approve]', "approve")
    console.shot("cases")
    console.page.click("#case-detail button[data-decision=approve]")
    console.wait(f"{row} td.status-closed", "the case closed after approval", 60_000)
    console.wait('#case-detail .history li:has-text("closed")', "the closing in its history")
    # Finished, it leaves the running workflows.
    try:
        console.page.wait_for_selector(running, state="detached", timeout=30_000)
    except Error as exc:
        raise AssertionError(f"{exc}\n{console.diagnosis('#workflow-list')}") from exc
    console.assert_no_errors()


def test_a_killed_service_turns_red_and_back(console: Console, system: LocalSystem) -> None:
    console.go("topology")
    node = '#graph .node[data-app="sentiment"]'
    console.wait(f"{node}.up", "sentiment up before the kill")
    system.kill_instance("sentiment")
    try:
        console.wait(f"{node}.down", "sentiment red after its kill", 30_000)
        console.shot("topology-sentiment-down")
    finally:
        system.restart_instance("sentiment", deadline_s=240)
    console.wait(f"{node}.up", "sentiment green after its restart", 60_000)
    console.wait(f'{node}[data-restarts="1"][data-ready="1"]', "its restart counted", 30_000)
    label = console.page.locator(f"{node} text.instances").text_content() or ""
    assert label == "1 instance · 1 restart", console.diagnosis(node)
    # A refused call is a console error ("Failed to load resource") only if the page made
    # one: the overview answered throughout, with sentiment down.
    console.assert_no_errors()


def test_the_health_page_charts_the_load(console: Console) -> None:
    console.go("health")
    console.wait('#load tr[data-app="sentiment"]', "the load table")
    # Two samples at least (the gateway takes one every 5 s), so rates are drawn.
    console.wait('#charts .chart path.series[data-series="gateway"]', "the gateway's rate")
    spark = '#load tr[data-app="gateway"] svg.spark[data-series="gateway requests/s"]'
    console.wait(f"{spark} path.spark-line", "the gateway's request sparkline")
    cells = console.page.locator('#load tr[data-app="nlp"] td').all_inner_texts()
    assert float(cells[8]) > 50, cells  # spaCy's pipeline is resident
    assert float(cells[10]) > 10, cells  # and so is its daprd
    # The console's own polls are the gateway's traffic: a rate and a p99 of the last minute.
    gateway = console.page.locator('#load tr[data-app="gateway"] td').all_inner_texts()
    assert float(gateway[3]) > 0 and float(gateway[6]) > 0, gateway
    assert console.page.locator("#charts .chart path.series").count() >= 10
    topics = console.page.locator("#topics tr[data-topic]").count()
    assert topics >= 9
    console.shot("health")
    console.assert_no_errors()


def test_each_topic_shows_its_lag_and_dead_letters(
    console: Console, api: httpx.Client, system: LocalSystem
) -> None:
    def published() -> float:
        topics = api.get("/v1/ops/overview").json()["topics"]
        return next(t["published"] for t in topics if t["name"] == "reviews.submitted")

    before = published()
    reviews = [{"id": f"console-{uuid.uuid4().hex[:8]}", "text": "Awful."} for _ in range(3)]
    assert api.post("/v1/reviews", json={"reviews": reviews}).status_code == 202
    # A poison event (a label no model gives) that the gateway drops to its dead letters.
    poison = {
        "specversion": "1.0",
        "id": f"poison-{uuid.uuid4()}",
        "source": "tests",
        "type": "consort.texts.analyzed.v1",
        "datacontenttype": "application/json",
        "data": {"text_sha256": "a" * 64, "chars": 1, "label": "ecstatic", "compound": 0.1},
    }
    sent = httpx.post(
        f"{system.sidecar_url('sentiment')}/v1.0/publish/pubsub/texts.analyzed",
        content=json.dumps(poison),
        headers={
            "content-type": "application/cloudevents+json",
            **system.sidecar_headers("sentiment"),
        },
        timeout=5,
    )
    assert sent.status_code == 204, sent.text
    console.go("health")
    row = '#topics tr[data-topic="reviews.submitted"]'
    # Published by the gateway's sidecar, finished by each subscriber's: no lag left.
    try:
        console.page.wait_for_function(
            f"""() => {{
                const r = document.querySelector('{row}');
                if (!r || Number(r.dataset.published) < {before + 3}) return false;
                const c = [...r.querySelectorAll('.consumer')];
                return c.length >= 3 && c.every(x => x.dataset.lag === '0');
            }}""",
            timeout=90_000,
        )
    except Error as exc:
        topics = api.get("/v1/ops/overview").json()["topics"]
        flow = [t for t in topics if t["name"] == "reviews.submitted"]
        raise AssertionError(
            f"{exc}\npublished before: {before}; now: {flow}\n{console.diagnosis('#topics')}"
        ) from exc
    consumers = console.page.locator(f"{row} .consumer").evaluate_all(
        "ns => ns.map(n => n.dataset.app)"
    )
    assert {"nlp", "sentiment", "search"} <= set(consumers), consumers
    dead = '#topics tr[data-topic="texts.analyzed"]'
    try:
        console.page.wait_for_function(
            f"() => Number(document.querySelector('{dead}')?.dataset.deadLetters) >= 1",
            timeout=60_000,
        )
    except Error as exc:
        raise AssertionError(f"{exc}\n{console.diagnosis('#topics')}") from exc
    console.go("topology")
    console.wait('#graph .topic.dead[data-topic="texts.analyzed"]', "the dead letters drawn")
    console.assert_no_errors()


def test_each_replica_is_counted_on_its_node(console: Console, system: LocalSystem) -> None:
    console.go("topology")
    node = '#graph .node[data-app="sentiment"]'
    system.scale("sentiment", 2, deadline_s=240)
    try:
        console.wait(f'{node}.up[data-instances="2"][data-ready="2"]', "two sentiment instances")
        label = console.page.locator(node).get_attribute("aria-label") or ""
        assert "sentiment ready" in label and "sentiment-1 ready" in label, label
        console.shot("topology-replicas")
    finally:
        system.scale("sentiment", 1)
    console.wait(f'{node}[data-instances="1"]', "one sentiment instance again", 30_000)
    console.assert_no_errors()


def test_the_console_fits_a_phone(console: Console) -> None:
    console.page.set_viewport_size({"width": 390, "height": 844})
    try:
        console.go("topology")
        width = console.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        console.shot("topology-phone")
    finally:
        console.page.set_viewport_size({"width": 1280, "height": 860})
    console.assert_no_errors()
