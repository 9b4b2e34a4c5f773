// Try it: one panel per AI service, each result drawn (text colours, boxes, bands).
import { call } from "./api.js";
import { bandPath, el, extent, fmt, h, linePath, scale, text } from "./svg.js";
import { showTrace } from "./trace.js";

function busy(form, on) {
  for (const b of form.querySelectorAll("button")) b.disabled = on;
}

function problemBox(error) {
  return h("p", { class: "problem", role: "alert", text: error.message });
}

function traceLink(traceId, context) {
  if (!traceId) return null;
  const link = h("a", { href: `#try`, class: "trace-link", "data-trace": traceId, text: `trace ${traceId.slice(0, 12)}…` });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    showTrace(traceId, context.zipkinUi());
  });
  return link;
}

async function run(form, result, work) {
  busy(form, true);
  result.replaceChildren(h("p", { class: "muted", text: "working…" }));
  try {
    result.replaceChildren(...(await work()));
  } catch (error) {
    result.replaceChildren(problemBox(error));
  } finally {
    busy(form, false);
  }
}

// -- text ------------------------------------------------------------------------------------
function strength(compound) {
  return (0.15 + Math.min(Math.abs(compound), 1) * 0.5).toFixed(2);
}

export function annotate(source, analysis) {
  const clauses = analysis.sentiment.clauses && analysis.sentiment.clauses.length
    ? analysis.sentiment.clauses : analysis.sentiment.sentences;
  const entities = analysis.nlp.entities;
  const aspects = analysis.aspects.flatMap((a) => a.mentions.map((m) => ({ ...m, aspect: a })));
  const cuts = new Set([0, source.length]);
  for (const s of [...clauses, ...entities, ...aspects]) { cuts.add(s.start); cuts.add(s.end); }
  const points = [...cuts].filter((c) => c >= 0 && c <= source.length).sort((a, b) => a - b);
  const box = h("p", { class: "annotated" });
  for (let i = 0; i < points.length - 1; i++) {
    const [a, b] = [points[i], points[i + 1]];
    if (a === b) continue;
    const inside = (s) => s.start <= a && b <= s.end;
    const clause = clauses.find(inside);
    const entity = entities.find(inside);
    const aspect = aspects.find(inside);
    const classes = [];
    const attrs = {};
    if (clause) { classes.push("clause", clause.label); attrs.style = { "--strength": strength(clause.compound) }; attrs["data-compound"] = clause.compound.toFixed(3); }
    if (entity) { classes.push("entity"); attrs["data-label"] = entity.label; }
    if (aspect) { classes.push("aspect", `aspect-${aspect.aspect.label}`); attrs["data-aspect"] = aspect.aspect.aspect; }
    const piece = source.slice(a, b);
    if (!classes.length) { box.append(piece); continue; }
    const titleParts = [];
    if (clause) titleParts.push(`clause ${clause.label} ${clause.compound.toFixed(2)}`);
    if (entity) titleParts.push(`entity ${entity.label}`);
    if (aspect) titleParts.push(`aspect ${aspect.aspect.aspect}: ${aspect.aspect.label}`);
    box.append(h("span", { class: classes.join(" "), title: titleParts.join("; "), ...attrs, text: piece }));
  }
  return box;
}

function sentenceBars(sentiment) {
  return h("table", {}, [
    h("thead", {}, [h("tr", {}, ["sentence", "compound", ""].map((c) => h("th", { text: c })))]),
    h("tbody", {}, sentiment.sentences.map((s) => h("tr", { class: `sentence ${s.label}` }, [
      h("td", { text: s.text }),
      h("td", { class: "num", text: s.compound.toFixed(2) }),
      h("td", {}, [h("span", { class: `bar ${s.label}`, style: { width: `${Math.round(Math.abs(s.compound) * 80) + 2}px` } })]),
    ]))),
  ]);
}

async function tryText(form, result, context) {
  const source = form.querySelector("textarea").value;
  const { body, traceId } = await call("/v1/text/analyze", { method: "POST", json: { text: source } });
  const s = body.sentiment;
  return [
    h("p", {}, [h("span", { class: `chip ${s.label}`, text: `${s.label} ${s.compound.toFixed(2)}` }), ` ${s.model.name} ${s.model.version}, ${body.nlp.model.name} ${body.nlp.model.version}`]),
    annotate(source, body),
    h("p", {}, body.aspects.map((a) => h("span", { class: `chip ${a.label}`, "data-aspect": a.aspect, text: `${a.aspect}: ${a.label} ${a.compound.toFixed(2)}` }))),
    h("p", {}, body.nlp.entities.map((e) => h("span", { class: "chip entity-chip", text: `${e.text} · ${e.label}` }))),
    sentenceBars(s),
    traceLink(traceId, context),
  ].filter(Boolean);
}

// -- image -----------------------------------------------------------------------------------
function overlay(analysis) {
  const { width, height } = analysis.image;
  const svg = el("svg", { class: "overlay", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "faces and text found" });
  for (const face of (analysis.faces && analysis.faces.faces) || []) {
    const b = face.box;
    const rect = el("rect", { class: "face-box", x: b.x, y: b.y, width: b.width, height: b.height });
    rect.append(el("title", {}, [`face ${(face.score * 100).toFixed(0)} %`]));
    svg.append(rect);
    for (const p of face.landmarks) svg.append(el("circle", { class: "landmark", cx: p.x, cy: p.y, r: Math.max(width, height) / 150 }));
  }
  for (const line of (analysis.text && analysis.text.lines) || []) {
    const poly = el("polygon", { class: "ocr-line", points: line.polygon.map((p) => `${p.x},${p.y}`).join(" ") });
    poly.append(el("title", {}, [`${line.text} (${(line.confidence * 100).toFixed(0)} %)`]));
    svg.append(poly);
  }
  return svg;
}

async function tryImage(form, result, context) {
  const file = form.querySelector("input[type=file]").files[0];
  if (!file) throw new Error("Choose an image first.");
  const headers = { "Content-Type": file.type || "application/octet-stream" };
  const [analyzed, redacted] = await Promise.all([
    call("/v1/images/analyze", { method: "POST", body: file, headers }),
    call("/v1/images/redact", { method: "POST", body: file, headers }),
  ]);
  const a = analyzed.body;
  const original = h("img", { src: URL.createObjectURL(file), alt: "the image sent" });
  const blurred = h("img", { src: URL.createObjectURL(redacted.body), alt: "the image with every face blurred", class: "redacted" });
  const q = a.quality || {};
  const faces = (a.faces && a.faces.faces) || [];
  const lines = (a.text && a.text.lines) || [];
  const figures = h("dl", { class: "figures" }, [
    ["size", `${a.image.width} × ${a.image.height} ${a.image.format}, ${(a.image.bytes / 1024).toFixed(0)} KiB`],
    ["faces", String(faces.length)], ["text lines", String(lines.length)],
    ["sharpness", fmt(q.sharpness)], ["brightness", fmt(q.brightness)], ["contrast", fmt(q.contrast)],
    ["perceptual hash", q.phash || "–"], ["models", a.models.map((m) => `${m.name} ${m.version}`).join(", ")],
  ].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
  return [
    h("div", { class: "images" }, [
      h("figure", {}, [original, overlay(a), h("figcaption", { text: "faces (boxes, landmarks) and text lines found" })]),
      h("figure", {}, [blurred, h("figcaption", { text: "redacted: every face blurred" })]),
    ]),
    figures,
    lines.length ? h("ol", { class: "ocr-text" }, lines.map((l) => h("li", { text: l.text }))) : null,
    traceLink(analyzed.traceId, context),
  ].filter(Boolean);
}

// -- series ----------------------------------------------------------------------------------
export function parseSeries(raw) {
  const values = [];
  for (const line of raw.split(/\r?\n/)) {
    const cells = line.split(/[,;\t]/).map((c) => c.trim()).filter((c) => c !== "");
    if (!cells.length) continue;
    // One value a line (CSV: the last column), or many values on a line separated by commas.
    const numbers = cells.map(Number);
    if (cells.length > 2 && numbers.every(Number.isFinite)) values.push(...numbers);
    else if (Number.isFinite(numbers[numbers.length - 1])) values.push(numbers[numbers.length - 1]);
  }
  return values;
}

// A seasonal demo series with a trend and one spike, so the panel shows something at once.
export function demoSeries(n = 96, period = 12) {
  return Array.from({ length: n }, (_, i) => {
    const v = 100 + i * 0.5 + 12 * Math.sin((2 * Math.PI * i) / period) + 3 * Math.sin(i * 1.7);
    return Math.round((i === 70 ? v + 45 : v) * 10) / 10;
  });
}

function seriesPlot(values, forecast, scores) {
  const W = 640, H = 260, L = 44, R = 10, T = 10, B = 22;
  const n = values.length, m = forecast.point.length;
  const x = scale([0, n + m - 1], [L, W - R]);
  const bands = [...forecast.intervals].sort((a, b) => b.level - a.level);
  const all = [...values, ...forecast.point, ...bands.flatMap((b) => [...b.lower, ...b.upper])];
  const [lo, hi] = extent(all);
  const y = scale([lo, hi], [H - B, T]);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `history of ${n} values and a forecast of ${m} steps with ${bands.map((b) => b.level + " %").join(" and ")} intervals` });
  svg.append(text(2, T + 8, fmt(hi)), text(2, H - B, fmt(lo)), text(L, H - 6, "0"), text(x(n - 1) - 4, H - 6, String(n - 1)));
  const fx = forecast.point.map((_, i) => x(n + i));
  for (const band of bands) {
    svg.append(el("path", { class: `band band-${band.level}`, "data-level": band.level, d: bandPath(fx, band.lower.map(y), band.upper.map(y)) }, [el("title", {}, [`${band.level} % interval`])]));
  }
  svg.append(el("line", { class: "split", x1: x(n - 0.5), x2: x(n - 0.5), y1: T, y2: H - B }));
  svg.append(el("path", { class: "history", d: linePath(values.map((v, i) => [x(i), y(v)])) }));
  svg.append(el("path", { class: "point", d: linePath([[x(n - 1), y(values[n - 1])], ...forecast.point.map((v, i) => [fx[i], y(v)])]) }));
  for (const s of scores) {
    if (!s.is_anomaly) continue;
    const i = Math.round(s.timestamp);
    svg.append(el("circle", { class: "anomaly", cx: x(i), cy: y(s.value), r: 5, "data-index": i }, [el("title", {}, [`anomaly at ${i}: ${s.value}`])]));
  }
  return h("div", { class: "plot" }, [svg]);
}

async function trySeries(form, result, context) {
  const values = parseSeries(form.querySelector("textarea").value);
  const period = Number(form.querySelector("#series-period").value) || 1;
  const horizon = Number(form.querySelector("#series-horizon").value) || 1;
  const [forecast, detected] = await Promise.all([
    call("/v1/forecasts", { method: "POST", json: { series: [{ id: "console", values, period, horizon, levels: [80, 95] }] } }),
    call("/v1/anomalies/detect", { method: "POST", json: { values, period: period > 1 && values.length >= 2 * period + 1 ? period : undefined } }),
  ]);
  const f = forecast.body.forecasts[0];
  const anomalies = detected.body.scores.filter((s) => s.is_anomaly);
  return [
    seriesPlot(values, f, detected.body.scores),
    h("p", { text: `${f.model.name} (${f.library.name} ${f.library.version}) in ${fmt(f.seconds, 2)} s; ${anomalies.length} anomal${anomalies.length === 1 ? "y" : "ies"} marked (period ${detected.body.period})` }),
    traceLink(forecast.traceId, context),
  ].filter(Boolean);
}

// -- recommender -----------------------------------------------------------------------------
async function tryUser(user, context) {
  const { body, traceId } = await call(`/v1/recommendations/${encodeURIComponent(user)}`);
  return [
    h("p", { text: `${body.items.length} items for ${body.user}${body.cold_start ? " (no interactions yet: popular items)" : ""}, model ${body.model_version}` }),
    h("ol", { class: "recommendations" }, body.items.map((it) => h("li", { "data-item": it.item }, [
      h("strong", { text: it.item }), ` ${fmt(it.score, 3)} · ${it.reason}`,
      it.because.length ? h("span", { class: "because", text: ` because of ${it.because.join(", ")}` }) : null,
    ]))),
    traceLink(traceId, context),
  ].filter(Boolean);
}

async function tryBasket(items, context) {
  const { body, traceId } = await call("/v1/baskets/complete", { method: "POST", json: { items } });
  return [
    h("p", { text: `${body.suggestions.length} completions from ${body.rules} rules, model ${body.model_version}` }),
    h("table", {}, [
      h("thead", {}, [h("tr", {}, ["add", "because of", "lift", "confidence", "support"].map((c) => h("th", { text: c })))]),
      h("tbody", {}, body.suggestions.map((s) => h("tr", { "data-item": s.item }, [
        h("td", { text: s.item }), h("td", { text: s.because.join(", ") }),
        h("td", { class: "num", text: fmt(s.lift, 2) }), h("td", { class: "num", text: fmt(s.confidence, 2) }), h("td", { class: "num", text: fmt(s.support, 3) }),
      ]))),
    ]),
    traceLink(traceId, context),
  ].filter(Boolean);
}

export function installTryIt(context) {
  const bind = (id, work) => {
    const panel = document.getElementById(id);
    const result = panel.querySelector(".result");
    for (const form of panel.querySelectorAll("form")) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        run(form, result, () => work(form, result, context));
      });
    }
  };
  bind("try-text", tryText);
  bind("try-image", tryImage);
  bind("try-series", trySeries);
  bind("try-recs", (form, result, ctx) => form.id === "recs-user"
    ? tryUser(form.querySelector("input").value.trim(), ctx)
    : tryBasket(form.querySelector("input").value.split(",").map((s) => s.trim()).filter(Boolean), ctx));
  const series = document.getElementById("series-input");
  if (!series.value) series.value = demoSeries().join(", ");
  document.getElementById("series-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) series.value = parseSeries(await file.text()).join(", ");
  });
}
