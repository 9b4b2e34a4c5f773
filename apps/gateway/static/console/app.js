// The console's entry: the key, the pages (#topology, #health, #try, #cases), polling.
import { adoptKeyFromFragment, call, currentKey, setKey } from "./api.js";
import { refreshCases, installCases } from "./cases.js";
import { drawLoad, newHistory, record } from "./health.js";
import { drawComponents, drawTopology } from "./topology.js";
import { installTryIt } from "./tryit.js";

// Polled, not streamed: EventSource cannot send the API key in a header, and a poll every
// few seconds is as live as the Prometheus counters behind it.
const POLL_MS = 2500;
const PAGES = ["topology", "health", "try", "cases"];
const history = newHistory();
let latest = null;
let timer = null;

function banner(message) {
  const b = document.getElementById("banner");
  b.hidden = !message;
  b.textContent = message || "";
}

function page() {
  const name = location.hash.replace(/^#/, "");
  return PAGES.includes(name) ? name : "topology";
}

function showPage() {
  const current = page();
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.dataset.page !== current;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current === "cases") refreshCases();
  if (latest) draw();
}

function draw() {
  drawTopology(document.getElementById("graph"), latest, history);
  drawComponents(document.getElementById("components"), latest);
  drawLoad(document.getElementById("load"), document.getElementById("charts"), document.getElementById("topics"), latest, history);
  const at = new Date(latest.at);
  document.getElementById("updated").textContent = `updated ${at.toLocaleTimeString()}`;
}

async function poll() {
  clearTimeout(timer);
  if (!currentKey()) {
    banner("Enter an API key with the ops scope (`consort keys create --scopes ops,…`), or open the link `consort run` prints.");
  } else if (!document.hidden) {
    try {
      const { body } = await call("/v1/ops/overview");
      latest = body;
      record(history, body);
      banner("");
      draw();
      if (page() === "cases") refreshCases();
    } catch (error) {
      banner(error.message);
    }
  }
  timer = setTimeout(poll, POLL_MS);
}

function showKeyState() {
  const key = currentKey();
  document.getElementById("key-state").textContent = key ? `key ${key.split("_")[1] || "set"}` : "no key";
}

function init() {
  adoptKeyFromFragment();
  showKeyState();
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("api-key");
    setKey(input.value);
    input.value = "";
    showKeyState();
    poll();
  });
  window.addEventListener("hashchange", showPage);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  installTryIt({ zipkinUi: () => (latest ? latest.zipkin_ui : null) });
  installCases();
  showPage();
  poll();
}

init();
