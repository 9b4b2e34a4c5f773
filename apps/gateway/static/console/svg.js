// Small SVG helpers: elements, scales, paths, and the time-series charts.
const NS = "http://www.w3.org/2000/svg";

export function el(name, attrs = {}, children = []) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const child of [].concat(children)) node.append(child);
  return node;
}

export function h(name, attrs = {}, children = []) {
  const node = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    // Through the CSSOM: the page's policy (style-src 'self') refuses style attributes.
    else if (k === "style") for (const [p, value] of Object.entries(v)) node.style.setProperty(p, value);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of [].concat(children)) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function text(x, y, content, attrs = {}) {
  const t = el("text", { x, y, ...attrs });
  t.textContent = content;
  return t;
}

export function scale([d0, d1], [r0, r1]) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

export function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) return [lo - 1, hi + 1];
  return [lo, hi];
}

export function linePath(points) {
  let d = "";
  let pen = false;
  for (const [x, y] of points) {
    if (!Number.isFinite(y)) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

export function bandPath(xs, lower, upper) {
  const top = xs.map((x, i) => `${x.toFixed(1)},${upper[i].toFixed(1)}`);
  const bottom = xs.map((x, i) => `${x.toFixed(1)},${lower[i].toFixed(1)}`).reverse();
  return `M${top.join("L")}L${bottom.join("L")}Z`;
}

export function fmt(v, digits = 1) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  return v.toFixed(digits);
}

const PALETTE = ["#1f5fbf", "#c62828", "#2e8b57", "#9a5ab8", "#e08a00", "#00838f", "#6d4c41", "#546e7a", "#ad1457"];

// A small multi-series chart over time: series = [{name, points: [[t, v], ...]}].
export function timeChart(title, unit, series, windowS, now = Date.now() / 1000) {
  const W = 320, H = 150, L = 38, R = 8, T = 8, B = 20;
  const x = scale([now - windowS, now], [L, W - R]);
  const [, hi] = extent(series.flatMap((s) => s.points.map((p) => p[1])).concat([0]));
  const y = scale([0, hi || 1], [H - B, T]);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} (${unit})` });
  svg.append(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(text(2, T + 8, fmt(hi, 2)), text(2, H - B, "0"));
  const span = windowS >= 120 ? `-${Math.round(windowS / 60)} min` : `-${Math.round(windowS)} s`;
  svg.append(text(L, H - 4, span), text(W - R - 18, H - 4, "now"));
  series.forEach((s, i) => {
    const path = linePath(s.points.map(([t, v]) => [x(t), y(v)]));
    if (path) svg.append(el("path", { class: "series", d: path, stroke: PALETTE[i % PALETTE.length], "data-series": s.name }));
  });
  const key = h("div", { class: "legend" });
  series.forEach((s, i) => {
    const mark = el("svg", { viewBox: "0 0 10 10", width: 10, height: 10, "aria-hidden": "true" }, [
      el("rect", { width: 10, height: 10, fill: PALETTE[i % PALETTE.length] }),
    ]);
    key.append(mark, ` ${s.name} `);
  });
  return h("div", { class: "chart" }, [h("h4", { text: `${title} (${unit})` }), svg, key]);
}

// A sparkline: one series' shape over the window, no axes, its last value in its title.
export function sparkline(name, points, windowS, now, unit = "") {
  const W = 90, H = 22;
  const x = scale([now - windowS, now], [1, W - 1]);
  const [, hi] = extent(points.map((p) => p[1]).concat([0]));
  const y = scale([0, hi || 1], [H - 2, 2]);
  const last = points.length ? points[points.length - 1][1] : null;
  const svg = el("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img", "data-series": name, "data-points": points.length,
    "aria-label": `${name} over the last ${Math.round(windowS)} s${last === null ? "" : `, now ${fmt(last, 2)} ${unit}`}` });
  const d = linePath(points.map(([t, v]) => [x(t), y(v)]));
  if (d) svg.append(el("path", { class: "spark-line", d }));
  return svg;
}
