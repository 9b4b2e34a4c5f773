// A trace's waterfall, drawn from the spans Zipkin holds (through /v1/ops/traces).
import { call } from "./api.js";
import { el, h, text } from "./svg.js";

function tree(spans) {
  const byId = new Map(spans.map((s) => [s.id, { span: s, children: [] }]));
  const roots = [];
  for (const node of byId.values()) {
    const parent = byId.get(node.span.parentId);
    (parent ? parent.children : roots).push(node);
  }
  const order = (a, b) => (a.span.timestamp || 0) - (b.span.timestamp || 0);
  for (const node of byId.values()) node.children.sort(order);
  roots.sort(order);
  const rows = [];
  const walk = (node, depth) => { rows.push({ ...node, depth }); node.children.forEach((c) => walk(c, depth + 1)); };
  roots.forEach((r) => walk(r, 0));
  return rows;
}

function label(span) {
  const tags = span.tags || {};
  const name = span.name || "";
  if (tags["http.url"] && /^(get|post|put|delete)$/i.test(name)) {
    try { return `${name.toUpperCase()} ${new URL(tags["http.url"]).pathname}`; } catch { return name; }
  }
  return name;
}

export function waterfall(spans) {
  const rows = tree(spans);
  const begin = Math.min(...spans.map((s) => s.timestamp || 0));
  const end = Math.max(...spans.map((s) => (s.timestamp || 0) + (s.duration || 0)));
  const total = Math.max(end - begin, 1);
  const W = 900, rowH = 20, labelW = 420;
  const svg = el("svg", { class: "waterfall", viewBox: `0 0 ${W} ${rows.length * rowH + 6}`, role: "img", "aria-label": `trace of ${rows.length} spans, ${(total / 1000).toFixed(1)} ms` });
  rows.forEach((row, i) => {
    const s = row.span;
    const daprd = (s.tags || {})["otel.scope.name"] === "dapr-diagnostics";
    const service = (s.localEndpoint || {}).serviceName || "?";
    const x = labelW + (((s.timestamp || 0) - begin) / total) * (W - labelW - 70);
    const w = Math.max(2, ((s.duration || 0) / total) * (W - labelW - 70));
    const y = i * rowH + 4;
    const g = el("g", { class: "span-row" });
    g.append(text(4 + row.depth * 12, y + 12, `${label(s)} · ${service} ${daprd ? "daprd" : "app"}`.slice(0, 70)));
    g.append(el("rect", { class: `span-bar ${daprd ? "daprd" : "app"}`, x, y: y + 2, width: w, height: rowH - 6 }, [el("title", {}, [`${label(s)}: ${((s.duration || 0) / 1000).toFixed(2)} ms`])]));
    g.append(text(x + w + 4, y + 12, `${((s.duration || 0) / 1000).toFixed(1)} ms`));
    svg.append(g);
  });
  return svg;
}

let shown = 0;

// Whether every span's parent has arrived (a span whose parent is missing is a process
// still to report).
function whole(spans) {
  const ids = new Set(spans.map((s) => s.id));
  return spans.every((s) => !s.parentId || ids.has(s.parentId));
}

export async function showTrace(traceId, zipkinUi) {
  const panel = document.getElementById("trace");
  const box = panel.querySelector(".result");
  const mine = ++shown;
  panel.hidden = false;
  document.getElementById("trace-id").textContent = traceId;
  const links = zipkinUi ? [h("a", { href: `${zipkinUi}traces/${traceId}`, target: "_blank", rel: "noopener", text: "open in Zipkin" })] : [];
  box.replaceChildren(h("p", { text: "waiting for the spans…" }), ...links);
  panel.scrollIntoView({ block: "nearest" });
  // Spans reach Zipkin a few seconds after the request, each process sending its own in
  // batches (the apps and the sidecars every few seconds, later under load): redraw as more
  // arrive. The trace is whole once every span's parent is in it; stop when it is whole and
  // its count has held for five polls, or after a minute (a process may never report).
  let count = 0, steady = 0;
  for (let attempt = 0; attempt < 60 && mine === shown && steady < 5; attempt++) {
    try {
      const { body } = await call(`/v1/ops/traces/${traceId}`);
      const spans = body.spans;
      if (spans.length && spans.length === count) steady += whole(spans) ? 1 : 0;
      else if (spans.length) {
        count = spans.length;
        steady = 0;
        box.replaceChildren(waterfall(spans), ...links);
      }
    } catch (error) {
      box.replaceChildren(h("p", { class: "problem", text: error.message }), ...links);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
