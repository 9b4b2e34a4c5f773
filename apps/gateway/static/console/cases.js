// Cases the review-triage workflows open: the list, one case's history and its workflow,
// approve or dismiss (the `ops` scope).
import { call } from "./api.js";
import { h } from "./svg.js";

let selected = null;

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

async function decide(caseId, decision, box, refresh) {
  for (const b of box.querySelectorAll("button")) b.disabled = true;
  try {
    await call(`/v1/workflows/${encodeURIComponent(caseId)}/events/decision`, { method: "POST", json: { decision, by: "console" } });
    box.prepend(h("p", { class: "decided", role: "status", text: `${decision} sent` }));
    setTimeout(refresh, 500);
  } catch (error) {
    box.prepend(h("p", { class: "problem", role: "alert", text: error.message }));
    for (const b of box.querySelectorAll("button")) b.disabled = false;
  }
}

async function showCase(caseId, refresh) {
  selected = caseId;
  const box = document.getElementById("case-detail");
  try {
    const [{ body: c }, workflow] = await Promise.all([
      call(`/v1/cases/${encodeURIComponent(caseId)}`),
      call(`/v1/workflows/${encodeURIComponent(caseId)}`).catch((error) => ({ body: null, error })),
    ]);
    if (selected !== caseId) return;
    const w = workflow.body;
    const open = c.status === "open" || c.status === "escalated";
    const actions = open ? h("div", { class: "row" }, [
      h("button", { type: "button", "data-decision": "approve", text: "Approve" }),
      h("button", { type: "button", class: "secondary", "data-decision": "dismiss", text: "Dismiss" }),
    ]) : null;
    const detail = h("div", { class: "panel", "data-case": c.id }, [
      h("h3", { text: `Case ${c.id}` }),
      h("p", {}, [h("span", { class: `status-${c.status}`, text: c.status }), ` · ${c.priority} priority · ${c.outcome || "no outcome yet"}`]),
      h("blockquote", { text: c.excerpt }),
      h("dl", { class: "figures" }, [
        ["product", c.product || c.products.join(", ") || "–"], ["defects", c.defects.join(", ") || "–"],
        ["negative aspects", c.negative_aspects.join(", ") || "–"], ["compound", c.compound.toFixed(2)],
        ["opened", when(c.opened_at)], ["decision", c.decision ? `${c.decision} by ${c.decided_by || "?"}` : "–"],
        ["workflow", w ? `${w.workflow}: ${w.status}${w.step ? ` (${w.step})` : ""}` : "–"],
      ].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])),
      h("h4", { text: "History" }),
      h("ol", { class: "history" }, (c.history || []).map((e) => h("li", { text: `${when(e.at)}: ${e.what}${e.detail ? ` (${e.detail})` : ""}` }))),
      actions,
    ]);
    if (actions) {
      for (const b of actions.querySelectorAll("button")) b.addEventListener("click", () => decide(c.id, b.dataset.decision, detail, refresh));
    }
    box.replaceChildren(detail);
  } catch (error) {
    box.replaceChildren(h("p", { class: "problem", role: "alert", text: error.message }));
  }
}

function stepLabel(step) {
  const kind = step.kind === "activity" || step.name.startsWith(step.kind) ? "" : `${step.kind} `;
  const until = step.until && step.status === "waiting" ? ` until ${new Date(step.until).toLocaleString()}` : "";
  return `${kind}${step.name}: ${step.status}${until}`;
}

// Workflows not finished yet, from the engine, each with its history's steps in order.
let listing = null; // one listing at a time: each asks the engine for every instance

export function refreshWorkflows() {
  listing = listing || listWorkflows().finally(() => { listing = null; });
  return listing;
}

async function listWorkflows() {
  const box = document.getElementById("workflow-list");
  try {
    const { body } = await call("/v1/workflows?status=running&limit=20");
    const rows = body.workflows.map((w) => h("tr", { "data-workflow": w.id, "data-status": w.status }, [
      h("td", { text: w.id }), h("td", { text: w.workflow }), h("td", { text: `${w.status}${w.step ? ` (${w.step})` : ""}` }),
      h("td", { text: when(w.created_at) }),
      h("td", {}, [h("ol", { class: "steps", "aria-label": `steps of ${w.id}` }, w.steps.map((s) => h("li", {
        class: `step ${s.status}`, "data-step": s.name, "data-kind": s.kind, "data-status": s.status, text: stepLabel(s),
      })))]),
    ]));
    box.replaceChildren(
      h("p", { class: "note", text: `${body.workflows.length} running of ${body.held} the engine holds` }),
      rows.length ? h("table", {}, [
        h("thead", {}, [h("tr", {}, ["workflow", "kind", "status", "started", "steps"].map((x) => h("th", { text: x })))]),
        h("tbody", {}, rows),
      ]) : h("p", { text: "No workflow is running." }),
    );
  } catch (error) {
    box.replaceChildren(h("p", { class: "problem", role: "alert", text: error.message }));
  }
}

export async function refreshCases() {
  refreshWorkflows();
  const list = document.getElementById("case-list");
  try {
    const { body } = await call("/v1/cases?limit=50");
    const rows = body.cases.map((c) => {
      const row = h("tr", { "data-case": c.id, tabindex: 0, "aria-selected": String(c.id === selected) }, [
        h("td", { text: c.id }), h("td", { class: `status-${c.status}`, text: c.status }),
        h("td", { text: c.product || "–" }), h("td", { text: when(c.opened_at) }),
      ]);
      const open = () => showCase(c.id, refreshCases).then(() => refreshCases());
      row.addEventListener("click", open);
      row.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } });
      return row;
    });
    list.replaceChildren(rows.length ? h("table", {}, [
      h("thead", {}, [h("tr", {}, ["case", "status", "product", "opened"].map((x) => h("th", { text: x })))]),
      h("tbody", {}, rows),
    ]) : h("p", { text: "No cases yet: start a triage of a negative review above." }));
    if (selected) {
      const current = body.cases.find((c) => c.id === selected);
      const shown = document.querySelector("#case-detail [data-case]");
      const status = shown && shown.querySelector("[class^=status-]");
      if (current && status && status.textContent !== current.status) showCase(selected, refreshCases);
    }
  } catch (error) {
    list.replaceChildren(h("p", { class: "problem", role: "alert", text: error.message }));
  }
}

export function installCases() {
  const form = document.getElementById("triage-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = form.querySelector(".result");
    const product = form.querySelector("#triage-product").value.trim();
    try {
      const { body } = await call("/v1/workflows/review-triage", { method: "POST", json: { text: form.querySelector("textarea").value, ...(product ? { product } : {}) } });
      out.textContent = `started ${body.id}`;
      out.dataset.workflow = body.id;
    } catch (error) {
      out.textContent = error.message;
    }
  });
}
