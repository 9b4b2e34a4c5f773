// The topology: services (coloured by health), topics, and who invokes, publishes to and
// is delivered from what, drawn from the overview the gateway builds.
import { el, h, text } from "./svg.js";

const NODE_W = 176, NODE_H = 54, TOPIC_W = 190, TOPIC_H = 26, COMP_W = 184, COMP_H = 26;

// Instances and restarts as the launcher tells them; without one (a cluster), one node
// per app and the restarts the console saw (the process start time changed).
export function instancesOf(node, history) {
  if (node.instances) {
    const ready = node.instances.filter((i) => i.state === "ready").length;
    const restarts = node.instances.reduce((n, i) => n + i.restarts, 0);
    const count = node.instances.length;
    return { count, ready, restarts, text: `${count} instance${count === 1 ? "" : "s"}${ready < count ? ` (${ready} ready)` : ""} · ${restarts} restart${restarts === 1 ? "" : "s"}` };
  }
  const restarts = history.restarts.get(node.app_id) || 0;
  return { count: null, ready: null, restarts, text: `${restarts} restart${restarts === 1 ? "" : "s"} seen` };
}

function serviceLabel(node, inst) {
  const info = node.catalog.info;
  const parts = [node.app_id, node.health === "up" ? "up" : `down: ${node.catalog.detail || "unreachable"}`, inst.text];
  if (node.instances) parts.push(...node.instances.map((i) => `${i.name} ${i.state}`));
  if (info) parts.push(`version ${info.version}`, ...info.models.map((m) => `${m.name} ${m.version}`));
  return parts.join(", ");
}

// The largest lag of a topic's consumers (null: not known).
export function topicLag(topic) {
  const lags = topic.consumers.map((c) => c.lag).filter((l) => l !== null && l !== undefined);
  return lags.length ? Math.max(...lags) : null;
}

export function drawTopology(container, overview, history) {
  const services = overview.services;
  const gateway = services.find((s) => s.app_id === "gateway");
  const others = services.filter((s) => s !== gateway);
  const topics = overview.topics;
  const rowH = NODE_H + 18;
  const topicRowH = TOPIC_H + 8;
  const height = Math.max(others.length * rowH, topics.length * topicRowH, NODE_H) + 40;
  const W = 900;
  const cols = { gateway: 20, services: 330, topics: W - TOPIC_W - 20 };
  const pos = new Map();
  if (gateway) pos.set(gateway.app_id, { x: cols.gateway, y: height / 2 - NODE_H / 2 });
  // The components the sidecars loaded (their metadata), in the gateway's column: above
  // it, then below it.
  const components = new Map();
  for (const s of services) {
    const sc = s.catalog.info && s.catalog.info.sidecar;
    for (const c of (sc && sc.components) || []) {
      const found = components.get(c.name) || { name: c.name, type: c.type, users: [] };
      found.users.push(s.app_id);
      components.set(c.name, found);
    }
  }
  const compList = [...components.values()].sort((a, b) => a.name.localeCompare(b.name));
  const compPos = new Map();
  const half = Math.ceil(compList.length / 2);
  compList.forEach((c, i) => {
    const above = i < half;
    const k = above ? half - 1 - i : i - half;
    const y = above ? height / 2 - NODE_H / 2 - 44 - k * (COMP_H + 10) : height / 2 + NODE_H / 2 + 18 + k * (COMP_H + 10);
    compPos.set(c.name, { x: cols.gateway + 8, y });
  });
  const offset = (height - others.length * rowH) / 2;
  others.forEach((s, i) => pos.set(s.app_id, { x: cols.services, y: offset + i * rowH + 9 }));
  const topicOffset = (height - topics.length * topicRowH) / 2;
  const topicPos = new Map(topics.map((t, i) => [t.name, { x: cols.topics, y: topicOffset + i * topicRowH + 4 }]));

  const svg = el("svg", { viewBox: `0 0 ${W} ${height}`, role: "group", "aria-label": "System topology" });
  svg.append(el("defs", {}, [
    el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, [
      el("path", { d: "M0,0L10,5L0,10z", fill: "#444" }),
    ]),
  ]));
  const edges = el("g", { class: "edges" });
  const curve = (x1, y1, x2, y2) => {
    const mx = (x1 + x2) / 2;
    return `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
  };
  for (const call of overview.calls) {
    const a = pos.get(call.caller), b = pos.get(call.callee);
    if (!a || !b) continue;
    const sameColumn = a.x === b.x;
    const x1 = sameColumn ? a.x : a.x + NODE_W, y1 = a.y + NODE_H / 2;
    const x2 = b.x, y2 = b.y + NODE_H / 2;
    const d = sameColumn ? `M${x1},${y1}C${x1 - 60},${y1} ${x2 - 60},${y2} ${x2},${y2}` : curve(x1, y1, x2, y2);
    const path = el("path", { class: "edge invoke", d, "marker-end": "url(#arrow)", "data-caller": call.caller, "data-callee": call.callee });
    path.append(el("title", {}, [`${call.caller} invokes ${call.callee}${call.calls ? ` (${call.calls} calls traced)` : ""}`]));
    edges.append(path);
  }
  for (const topic of topics) {
    const t = topicPos.get(topic.name);
    for (const publisher of topic.publishers) {
      const a = pos.get(publisher);
      if (!a) continue;
      const path = el("path", { class: "edge publish", d: curve(a.x + NODE_W, a.y + NODE_H / 2 - 8, t.x, t.y + TOPIC_H / 2) });
      path.append(el("title", {}, [`${publisher} publishes ${topic.name}`]));
      edges.append(path);
    }
    for (const subscriber of topic.subscribers) {
      const b = pos.get(subscriber);
      if (!b) continue;
      const path = el("path", { class: "edge subscribe", d: curve(t.x, t.y + TOPIC_H / 2, b.x + NODE_W, b.y + NODE_H / 2 + 8) });
      path.append(el("title", {}, [`${topic.name} is delivered to ${subscriber}`]));
      edges.append(path);
    }
  }
  for (const c of compList) {
    const q = compPos.get(c.name);
    for (const user of c.users) {
      const a = pos.get(user);
      if (!a || user === (gateway && gateway.app_id)) continue;
      const path = el("path", { class: "edge uses", d: curve(a.x, a.y + NODE_H / 2, q.x + COMP_W, q.y + COMP_H / 2), "data-app": user, "data-component": c.name });
      path.append(el("title", {}, [`${user}'s sidecar loads ${c.name} (${c.type})`]));
      edges.append(path);
    }
  }
  svg.append(edges);
  for (const c of compList) {
    const q = compPos.get(c.name);
    const g = el("g", { class: "component", "data-component": c.name, "data-type": c.type, transform: `translate(${q.x},${q.y})`, tabindex: 0, role: "img",
      "aria-label": `component ${c.name} (${c.type}), loaded by the sidecars of ${c.users.join(", ")}` });
    g.append(el("rect", { width: COMP_W, height: COMP_H, rx: 3 }));
    g.append(text(8, 17, `${c.name} · ${c.type.split(".")[0]}`));
    svg.append(g);
  }
  for (const node of services) {
    const p = pos.get(node.app_id);
    const inst = instancesOf(node, history);
    const info = node.catalog.info;
    const degraded = node.health === "up" && inst.count !== null && inst.ready < inst.count;
    const g = el("g", {
      class: `node service ${node.health}${degraded ? " degraded" : ""}`, "data-app": node.app_id, "data-health": node.health,
      "data-instances": inst.count, "data-ready": inst.ready, "data-restarts": inst.restarts,
      transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "img", "aria-label": serviceLabel(node, inst),
    });
    g.append(el("title", {}, [serviceLabel(node, inst)]));
    g.append(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    g.append(text(8, 18, node.app_id, { class: "title" }));
    const sidecar = info && info.sidecar ? `daprd ${info.sidecar.runtime_version}` : node.health === "up" ? "daprd ?" : "unreachable";
    g.append(text(8, 33, sidecar));
    g.append(text(8, 47, inst.text, { class: "instances" }));
    svg.append(g);
  }
  for (const topic of topics) {
    const t = topicPos.get(topic.name);
    const lag = topicLag(topic);
    const g = el("g", { class: `topic${topic.dead_letters ? " dead" : ""}${lag ? " lagging" : ""}`, "data-topic": topic.name, "data-lag": lag, "data-dead-letters": topic.dead_letters,
      transform: `translate(${t.x},${t.y})`, tabindex: 0, role: "img",
      "aria-label": `topic ${topic.name}: published by ${topic.publishers.join(", ") || "external producers"}, delivered to ${topic.subscribers.join(", ") || "nobody"}, ${lag === null ? "lag unknown" : `lag ${lag}`}, ${topic.dead_letters} dead letters` });
    g.append(el("rect", { width: TOPIC_W, height: TOPIC_H, rx: 13 }));
    const notes = [lag ? `lag ${lag}` : null, topic.dead_letters ? `${topic.dead_letters} dead` : null].filter(Boolean);
    g.append(text(10, 17, notes.length ? `${topic.name} (${notes.join(", ")})` : topic.name));
    svg.append(g);
  }
  container.replaceChildren(svg);
}

export function drawComponents(container, overview) {
  const rows = overview.services.map((s) => {
    const sc = s.catalog.info && s.catalog.info.sidecar;
    const comps = sc ? sc.components.map((c) => `${c.name} (${c.type})`).join(", ") : "–";
    const subs = sc ? sc.subscriptions.map((x) => x.topic).join(", ") : "–";
    const actors = sc && sc.actor_types.length ? sc.actor_types.join(", ") : "–";
    return h("tr", { "data-app": s.app_id }, [
      h("td", { text: s.app_id }), h("td", { text: comps }), h("td", { text: subs }), h("td", { text: actors }),
    ]);
  });
  container.replaceChildren(h("table", {}, [
    h("thead", {}, [h("tr", {}, ["service", "components", "subscriptions", "actor types"].map((c) => h("th", { text: c })))]),
    h("tbody", {}, rows),
  ]));
}
