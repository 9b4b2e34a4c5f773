// Health and load: the figures and series the gateway computes from the samples it keeps
// (every instance's app and sidecar metrics every few seconds), and each topic's flow.
import { fmt, h, sparkline, timeChart } from "./svg.js";
import { instancesOf, topicLag } from "./topology.js";

export const WINDOW_S = 10 * 60;

// Restarts the console saw itself (a new process start time), for a gateway that has no
// launcher to tell it the instances and their restarts.
export function newHistory() {
  return { restarts: new Map(), started: new Map() };
}

export function record(history, overview) {
  for (const s of overview.services) {
    if (!s.load || s.load.started_at === null || s.instances) continue;
    const before = history.started.get(s.app_id);
    if (before !== undefined && Math.abs(s.load.started_at - before) > 0.5) {
      history.restarts.set(s.app_id, (history.restarts.get(s.app_id) || 0) + 1);
    }
    history.started.set(s.app_id, s.load.started_at);
  }
}

// [[t, value], …] of one field of a service's series (nulls left out).
function points(node, field, factor = 1) {
  const s = node.series;
  if (!s) return [];
  return s.t.map((t, i) => [t, s[field][i]]).filter(([, v]) => v !== null && v !== undefined).map(([t, v]) => [t, v * factor]);
}

const MIB = 2 ** 20;

export function drawLoad(table, charts, topicsBox, overview, history) {
  const now = Date.parse(overview.at) / 1000;
  // The charts span what was sampled (up to the window), at least a minute.
  const sampling = overview.sampling || {};
  const sampled = sampling.since ? now - sampling.since : 0;
  const windowS = Math.min(sampling.window_s || WINDOW_S, Math.max(60, sampled));
  const columns = ["service", "health", "instances", "req/s", "errors", "p50 ms", "p99 ms", "CPU %", "memory MiB", "daprd CPU %", "daprd MiB", "requests/s (trend)", "p99 (trend)"];
  const rows = overview.services.map((node) => {
    const r = node.recent || {};
    const inst = instancesOf(node, history);
    return h("tr", { "data-app": node.app_id }, [
      h("td", { text: node.app_id }),
      h("td", { class: `status-${node.health === "up" ? "closed" : "open"}`, text: node.health }),
      h("td", { class: "instances", text: inst.text }),
      h("td", { class: "num", text: fmt(r.requests_per_s, 2) }),
      h("td", { class: "num", text: r.error_rate === null || r.error_rate === undefined ? "–" : `${(r.error_rate * 100).toFixed(1)} %` }),
      h("td", { class: "num", text: fmt(r.p50_ms) }),
      h("td", { class: "num", text: fmt(r.p99_ms) }),
      h("td", { class: "num", text: fmt(r.cpu_percent) }),
      h("td", { class: "num", text: fmt(r.memory_bytes ? r.memory_bytes / MIB : null, 0) }),
      h("td", { class: "num", text: fmt(r.sidecar_cpu_percent) }),
      h("td", { class: "num", text: fmt(r.sidecar_memory_bytes ? r.sidecar_memory_bytes / MIB : null, 0) }),
      h("td", {}, [sparkline(`${node.app_id} requests/s`, points(node, "requests_per_s"), windowS, now, "req/s")]),
      h("td", {}, [sparkline(`${node.app_id} p99 ms`, points(node, "p99_ms"), windowS, now, "ms")]),
    ]);
  });
  const since = sampling.since ? new Date(sampling.since * 1000).toLocaleTimeString() : "–";
  table.replaceChildren(
    h("p", { class: "note", text: `figures over the last minute; sampled every ${sampling.interval_s || "?"} s since ${since}, kept ${Math.round((sampling.window_s || WINDOW_S) / 60)} min` }),
    h("table", {}, [
      h("thead", {}, [h("tr", {}, columns.map((c, i) => h("th", { class: i > 2 && i < 11 ? "num" : null, text: c })))]),
      h("tbody", {}, rows),
    ]),
  );
  const seriesOf = (field, factor = 1) => overview.services
    .map((node) => ({ name: node.app_id, points: points(node, field, factor) }))
    .filter((x) => x.points.length);
  charts.replaceChildren(
    timeChart("Request rate", "req/s", seriesOf("requests_per_s"), windowS, now),
    timeChart("Error rate", "share of requests", seriesOf("error_rate"), windowS, now),
    timeChart("p99 latency", "ms", seriesOf("p99_ms"), windowS, now),
    timeChart("p50 latency", "ms", seriesOf("p50_ms"), windowS, now),
    timeChart("CPU", "% of one core", seriesOf("cpu_percent"), windowS, now),
    timeChart("Memory", "MiB resident", seriesOf("memory_bytes", 1 / MIB), windowS, now),
    timeChart("Sidecar CPU", "% of one core", seriesOf("sidecar_cpu_percent"), windowS, now),
  );
  topicsBox.replaceChildren(h("table", {}, [
    h("thead", {}, [h("tr", {}, ["topic", "published by", "published", "delivered to (finished, lag)", "lag", "dead letters"].map((c) => h("th", { text: c })))]),
    h("tbody", {}, overview.topics.map((t) => {
      const lag = topicLag(t);
      const published = t.published === null || t.published === undefined ? "–"
        : `${t.published}${t.published_batches ? ` + ${t.published_batches} batches` : ""}`;
      return h("tr", { "data-topic": t.name, "data-published": t.published, "data-lag": lag, "data-dead-letters": t.dead_letters }, [
        h("td", { text: t.name }), h("td", { text: t.publishers.join(", ") || "external producers" }),
        h("td", { class: "num published", text: published }),
        h("td", {}, t.consumers.length ? t.consumers.map((c) => h("span", { class: "consumer", "data-app": c.app_id, "data-delivered": c.delivered, "data-lag": c.lag,
          text: `${c.app_id} ${c.delivered === null ? "in batches" : c.delivered}${c.lag === null ? "" : ` (lag ${c.lag})`}${c.retries ? `, ${c.retries} retried` : ""}` })) : [t.subscribers.join(", ") || "–"]),
        h("td", { class: `num${lag ? " status-open" : ""}`, text: lag === null ? "–" : String(lag) }),
        h("td", { class: `num${t.dead_letters ? " status-open" : ""}`, text: String(t.dead_letters) }),
      ]);
    })),
  ]));
}
