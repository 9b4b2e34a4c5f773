// Health and load: rates from the samples the console keeps (the gateway keeps none).
import { fmt, h, timeChart } from "./svg.js";

export const WINDOW_S = 10 * 60;

export function newHistory() {
  return { samples: [], restarts: new Map(), started: new Map() };
}

// Keep one overview as a sample: per app its counters at that time; count restarts.
export function record(history, overview) {
  const t = Date.parse(overview.at) / 1000;
  const apps = {};
  for (const s of overview.services) {
    if (!s.load) continue;
    apps[s.app_id] = s.load;
    const before = history.started.get(s.app_id);
    if (s.load.started_at !== null) {
      if (before !== undefined && Math.abs(s.load.started_at - before) > 0.5) {
        history.restarts.set(s.app_id, (history.restarts.get(s.app_id) || 0) + 1);
      }
      history.started.set(s.app_id, s.load.started_at);
    }
  }
  history.samples.push({ t, apps });
  while (history.samples.length && history.samples[0].t < t - WINDOW_S) history.samples.shift();
}

// Per app and per pair of samples: requests/s, error share, CPU %, memory MiB, p50/p99.
function rates(a, b) {
  const dt = b.t - a.t;
  const out = {};
  for (const [app, now] of Object.entries(b.apps)) {
    const was = a.apps[app];
    if (!was || dt <= 0 || now.requests < was.requests) continue; // a restart resets counters
    const requests = now.requests - was.requests;
    out[app] = {
      rps: requests / dt,
      errorRate: requests ? (now.errors - was.errors) / requests : 0,
      cpu: now.cpu_seconds !== null && was.cpu_seconds !== null ? ((now.cpu_seconds - was.cpu_seconds) / dt) * 100 : null,
      memory: now.memory_bytes !== null ? now.memory_bytes / 2 ** 20 : null,
      p50: now.p50_ms, p99: now.p99_ms,
    };
  }
  return out;
}

export function drawLoad(table, charts, topicsBox, overview, history) {
  const s = history.samples;
  const last = s.length > 1 ? rates(s[s.length - 2], s[s.length - 1]) : {};
  const columns = ["service", "health", "req/s", "errors", "p50 ms", "p99 ms", "CPU %", "memory MiB", "requests"];
  const rows = overview.services.map((node) => {
    const r = last[node.app_id] || {};
    const load = node.load || {};
    return h("tr", { "data-app": node.app_id }, [
      h("td", { text: node.app_id }),
      h("td", { class: `status-${node.health === "up" ? "closed" : "open"}`, text: node.health }),
      h("td", { class: "num", text: fmt(r.rps, 2) }),
      h("td", { class: "num", text: r.errorRate === undefined ? "–" : `${(r.errorRate * 100).toFixed(1)} %` }),
      h("td", { class: "num", text: fmt(load.p50_ms) }),
      h("td", { class: "num", text: fmt(load.p99_ms) }),
      h("td", { class: "num", text: fmt(r.cpu) }),
      h("td", { class: "num", text: fmt(load.memory_bytes ? load.memory_bytes / 2 ** 20 : null, 0) }),
      h("td", { class: "num", text: load.requests === undefined ? "–" : String(load.requests) }),
    ]);
  });
  table.replaceChildren(h("table", {}, [
    h("thead", {}, [h("tr", {}, columns.map((c, i) => h("th", { class: i > 1 ? "num" : null, text: c })))]),
    h("tbody", {}, rows),
  ]));
  const pairs = [];
  for (let i = 1; i < s.length; i++) pairs.push([s[i].t, rates(s[i - 1], s[i])]);
  const apps = overview.services.map((n) => n.app_id);
  const seriesOf = (field) => apps.map((app) => ({
    name: app, points: pairs.filter(([, r]) => r[app] && r[app][field] !== null).map(([t, r]) => [t, r[app][field]]),
  })).filter((x) => x.points.length);
  charts.replaceChildren(
    timeChart("Request rate", "req/s", seriesOf("rps"), WINDOW_S),
    timeChart("Error rate", "share of requests", seriesOf("errorRate"), WINDOW_S),
    timeChart("p99 latency since start", "ms", seriesOf("p99"), WINDOW_S),
    timeChart("CPU", "% of one core", seriesOf("cpu"), WINDOW_S),
    timeChart("Memory", "MiB resident", seriesOf("memory"), WINDOW_S),
  );
  topicsBox.replaceChildren(h("table", {}, [
    h("thead", {}, [h("tr", {}, ["topic", "published by", "delivered to", "dead letters"].map((c) => h("th", { text: c })))]),
    h("tbody", {}, overview.topics.map((t) => h("tr", { "data-topic": t.name }, [
      h("td", { text: t.name }), h("td", { text: t.publishers.join(", ") || "external producers" }),
      h("td", { text: t.subscribers.join(", ") || "–" }),
      h("td", { class: `num${t.dead_letters ? " status-open" : ""}`, text: String(t.dead_letters) }),
    ]))),
  ]));
}
