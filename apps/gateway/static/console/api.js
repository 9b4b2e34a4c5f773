// Calls to the gateway's /v1 API with the user's key; problems (problem+json) as errors.
const KEY = "consort.console.key";

export function currentKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key.trim());
  else sessionStorage.removeItem(KEY);
}

// `consort run` links to /console/#key=<development key>: the fragment never leaves the
// browser. Keep it for this tab's session and take it out of the address bar.
export function adoptKeyFromFragment() {
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (!match) return;
  setKey(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + "#topology");
}

export class Problem extends Error {
  constructor(status, body) {
    const detail = body && (body.detail || body.title) ? `${body.title}: ${body.detail || ""}` : `HTTP ${status}`;
    const fields = body && Array.isArray(body.errors)
      ? body.errors.map((e) => `${e.field}: ${e.message}${e.limit !== null && e.limit !== undefined ? ` (limit ${e.limit})` : ""}`).join("\n")
      : "";
    super(fields ? `${detail}\n${fields}` : detail);
    this.status = status;
    this.body = body;
  }
}

// One call; returns {body, traceId, response}. `body` is JSON, a Blob (images) or null.
export async function call(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  const key = currentKey();
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new Problem(0, { title: "Gateway unreachable", detail: String(error) });
  }
  const type = response.headers.get("content-type") || "";
  let parsed = null;
  if (type.includes("json")) parsed = await response.json();
  else if (type.startsWith("image/")) parsed = await response.blob();
  else parsed = await response.text();
  if (!response.ok) throw new Problem(response.status, typeof parsed === "object" ? parsed : { title: `HTTP ${response.status}`, detail: parsed });
  return { body: parsed, traceId: response.headers.get("x-trace-id"), response };
}
