// The platform's public APIs, called with the user's API key (kept in sessionStorage only).
const config = JSON.parse(document.querySelector('meta[name="dashboard-config"]').content);
const KEY_NAME = "batchPlatform.apiKey";

export const pollMs = Math.max(1000, config.pollMs || 1000); // live views poll at most once a second
export const basePath = config.basePath || "";
// Empty apiBase: the functions' root on the page's own origin (the page is `<root>/dashboard/`).
const apiBase = config.apiBase || basePath.replace(/\/[^/]*$/, "");

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function saveKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || (body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.details = error.details || [];
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export function url(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return apiBase + path + (text ? "?" + text : "");
}

// `withHeaders`: answer {data, headers} (Batch Mode's history pages with an X-Next-Cursor header).
export async function api(path, { method = "GET", params, body, signal, key, withHeaders = false } = {}) {
  const headers = { Authorization: "Bearer " + (key || apiKey()) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(path, params), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = { error: { message: text.slice(0, 200) } };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, payload);
    if (response.status === 401 && !key) onUnauthorized(error);
    throw error;
  }
  return withHeaders ? { data: payload, headers: response.headers } : payload;
}

// Server-Sent Events with the Authorization header (EventSource cannot send one): read the stream with
// fetch and parse the event lines; reconnect after `retry` ms with Last-Event-ID, until `signal` aborts.
export async function streamEvents(path, { onEvent, onState, signal }) {
  let lastId = null;
  let retryMs = 3000;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + apiKey(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(url(path), { headers, signal, cache: "no-store" });
      if (!response.ok) throw new ApiError(response.status, null);
      onState(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          const event = { type: "message", data: [] };
          for (const line of block.split(/\r?\n/)) {
            if (!line || line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const data = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") event.type = data;
            else if (field === "data") event.data.push(data);
            else if (field === "id") lastId = data;
            else if (field === "retry" && /^\d+$/.test(data)) retryMs = Number(data);
          }
          if (event.data.length) onEvent(event.type, JSON.parse(event.data.join("\n")));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return onState(false, error);
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}
